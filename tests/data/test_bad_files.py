"""Hostile image folders and edited caches, with real files: every entry that is not a readable image is skipped
and counted with its reason, links are followed once per real path, special files are never opened, and every
bit depth / palette / alpha / CMYK file decodes to the pixels it holds."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastgan.cli import main
from fastgan.data.items import decode_image, list_images
from fastgan.data.prepare import open_prepared
from fastgan.errors import DataError

from .test_bad_input import user_error


@contextmanager
def deadline(seconds: int):
    """Opening a FIFO blocks forever: fail the test instead of hanging the suite."""
    def boom(*_):
        raise TimeoutError(f"still running after {seconds} s (a FIFO was opened?)")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def png16(a: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): colour type 0 grey, 2 RGB, 4 grey+alpha."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def decoded(raw: bytes, side: int = 16) -> np.ndarray:
    """(H, W, 3) uint8 as the caches store it (no crop, no resize)."""
    return decode_image(raw, side, 1.0).transpose(1, 2, 0)


# -- bit depths, palettes, alpha, CMYK ----------------------------------------------------------------

GREY = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit level once


def test_16bit_grey_png_keeps_its_levels_instead_of_saturating():
    raw = png16(GREY.astype(np.uint16) << 8 | 0x5A, 0)  # the 8-bit level in the top byte, noise in the low one
    assert Image.open(io.BytesIO(raw)).mode.startswith("I")
    got = decoded(raw)
    assert np.array_equal(got, np.repeat(GREY[..., None], 3, -1))  # Pillow's own convert gave 255 almost everywhere


def test_16bit_rgb_and_grey_alpha_pngs_keep_their_top_byte():
    rgb = np.stack([GREY, 255 - GREY, np.full_like(GREY, 7)], -1)
    assert np.array_equal(decoded(png16(rgb.astype(np.uint16) * 257, 2)), rgb)
    la = np.stack([GREY, np.zeros_like(GREY)], -1)  # fully transparent: alpha dropped, grey kept
    assert np.array_equal(decoded(png16(la.astype(np.uint16) * 257, 4)), np.repeat(GREY[..., None], 3, -1))


@contextmanager
def _no_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Palette images with Transparency" warning would be printed per file
        yield


def test_palette_with_and_without_transparency():
    rgb = np.stack([GREY, GREY // 2, 255 - GREY], -1)
    pal = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MAXCOVERAGE)
    want = np.asarray(pal.convert("RGB"))
    assert np.array_equal(decoded(png_bytes(pal)), want)
    with _no_warnings():
        got = decoded(png_bytes(pal, transparency=0))  # palette entry 0 transparent: its colour is kept
    assert np.array_equal(got, want)


def test_alpha_is_dropped_keeping_the_stored_colour():
    rgba = np.stack([GREY, 255 - GREY, GREY, (GREY % 2) * 255], -1)  # every other pixel fully transparent
    assert np.array_equal(decoded(png_bytes(Image.fromarray(rgba, "RGBA"))), rgba[..., :3])
    la = np.stack([GREY, np.zeros_like(GREY)], -1)
    assert np.array_equal(decoded(png_bytes(Image.fromarray(la, "LA"))), np.repeat(GREY[..., None], 3, -1))


def test_one_bit_and_cmyk():
    bits = GREY >= 128
    one = Image.fromarray(bits).convert("1")
    assert np.array_equal(decoded(png_bytes(one)), np.repeat(np.where(bits, 255, 0)[..., None], 3, -1).astype(np.uint8))
    rgb = np.stack([GREY, 255 - GREY, np.full_like(GREY, 60)], -1)
    rgb = np.asarray(Image.fromarray(rgb).resize((64, 64), Image.Resampling.BILINEAR))  # smooth: JPEG keeps it
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=98)
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "CMYK"
    err = np.abs(decoded(buf.getvalue(), 64).astype(int) - rgb).mean()
    assert err < 3, err  # an inverted or channel-swapped CMYK decode is off by ~100 levels


# -- a hostile folder ---------------------------------------------------------------------------------

def hostile_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Three good images plus one of each kind of trouble; returns (root, {entry: expected reason prefix})."""
    root = tmp_path / "pics"
    (root / "sub").mkdir(parents=True)
    img = Image.fromarray(np.stack([GREY] * 3, -1))
    for name in ("a.png", "b.png", "sub/c.png"):
        (root / name).write_bytes(png_bytes(img))
    with open(os.fsencode(root) + b"/caf\xe9.png", "wb") as f:  # a Latin-1 name: not valid UTF-8
        f.write(png_bytes(img))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image: ignored, not counted")
    os.symlink("loop.png", root / "loop.png")
    os.symlink("nowhere.png", root / "dangling.png")
    os.mkfifo(root / "pipe.png")
    os.symlink("/dev/null", root / "null.png")
    os.symlink("..", root / "sub" / "up")
    os.symlink(".", root / "self")
    os.symlink(root.parent, root / "parent")  # contains the dataset: following it would list everything again
    os.symlink("a.png", root / "a-again.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "d.png").write_bytes(png_bytes(img))
    os.symlink(outside, root / "ext1")  # a folder outside the dataset is followed once...
    os.symlink(outside, root / "ext2")  # ...and not twice
    reasons = {"broken.png": "UnidentifiedImageError", "loop.png": "symlink loop", "dangling.png": "dangling symlink",
               "pipe.png": "not a regular file (FIFO)", "null.png": "not a regular file (character device)",
               "sub/up": "link to a folder inside the dataset or above it", "self": "link to a folder inside",
               "parent": "link to a folder inside the dataset or above it", "a-again.png": "link to a file already",
               "ext2": "link to a folder already listed"}
    return root, reasons


def test_listing_a_hostile_folder(tmp_path):
    root, reasons = hostile_folder(tmp_path)
    with deadline(20):
        paths, skipped = list_images(root)
    assert paths == sorted(["a.png", "b.png", "sub/c.png", os.fsdecode(b"caf\xe9.png"), "ext1/d.png", "broken.png"])
    assert {r for r, _ in skipped} == set(reasons) - {"broken.png"}, skipped  # broken.png fails at decode time
    for r, why in skipped:
        assert why.startswith(reasons[r]), (r, why)


def test_prepare_a_hostile_folder_skips_and_counts_every_bad_entry(tmp_path, capsys):
    root, reasons = hostile_folder(tmp_path)
    with deadline(60):
        rc = main(["data", "prepare", str(root), "--resolution", "16", "--out", str(tmp_path / "p"), "--workers", "1",
                   "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["count"] == 5  # a, b, sub/c, the Latin-1 name and ext1/d: the '..' and '.' links multiplied nothing
    assert m["skipped"] == len(reasons)
    listed = "\n".join(m["skipped_items"])
    for r, why in reasons.items():
        assert f"{r} ({why}" in listed, (r, listed)
    assert m["skipped_reasons"]["symlink loop"] == 1 and m["skipped_reasons"]["not a regular file"] == 2
    ds = open_prepared(tmp_path / "p")
    assert ds.images.shape == (5, 3, 16, 16)
    assert json.loads(out)["skipped"] == len(reasons)


def test_fid_folder_source_lists_the_same_way(tmp_path, capsys):
    from fastgan.metrics.sources import _folder

    root, reasons = hostile_folder(tmp_path)
    (root / "deep.png").write_bytes(png16(GREY.astype(np.uint16) * 257, 0))
    with deadline(20):
        src = _folder(root, 0)
    assert src.count == 6 and src.info["skipped"] == len(reasons)
    assert "warning: skipped" in capsys.readouterr().err
    with deadline(20):
        batches = [b for b in src.batches(64)]
    deep = [b for b in batches if b.shape[-1] == 16]
    assert all(b.dtype.is_floating_point is False for b in batches)
    # the 16-bit file is converted like the caches do it, not saturated to white
    assert any(np.array_equal(b[i, 0].numpy(), GREY) for b in deep for i in range(len(b)))


def test_training_from_a_hostile_folder(tmp_path, capsys):
    root, _ = hostile_folder(tmp_path)
    with deadline(120):
        rc = main(["train", "--steps", "1", "--out", str(tmp_path / "run"), "--set", "data.dataset=folder",
                   "--set", f"data.root={root}", "--set", "model.g_width=8", "--set", "model.d_width=8",
                   "--set", "model.z_dim=16", "--set", "model.conditioning=none", "--batch-size", "4",
                   "--set", "train.grid_size=4", "--set", "data.prepare_workers=1", "--quiet"])
    assert rc == 0, capsys.readouterr().err


# -- prepared caches edited after prepare ------------------------------------------------------------

@pytest.fixture
def prepared(tmp_path, capsys):
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(40):  # 40 * 3 * 64 * 64 = 480 KiB: larger than the sampled chunks
        rgb = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        (root / f"{i:02d}.png").write_bytes(png_bytes(Image.fromarray(rgb)))
    assert main(["data", "prepare", str(root), "--resolution", "64", "--out", str(tmp_path / "p"), "--workers", "1",
                 "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path / "p"


def test_an_edited_cache_is_refused_on_load(prepared, capsys):
    x = np.load(prepared / "images.npy")
    x[0] = 0  # one image blacked out, saved back with numpy: same size, same header
    np.save(prepared / "images.npy", x)
    with pytest.raises(DataError, match="sampled hash differs.*run `fastgan data prepare` again"):
        open_prepared(prepared)
    user_error(capsys, ["train", "--steps", 1, "--set", "data.dataset=prepared", "--set", f"data.root={prepared}",
                        "--set", "model.resolution=64", "--quiet"], "images.npy has changed", "fastgan data prepare")
    user_error(capsys, ["data", "verify", prepared], "sha256", "fastgan data prepare")


def test_a_cache_replaced_by_a_fifo_is_refused_without_opening_it(prepared):
    m = json.loads((prepared / "manifest.json").read_text())
    del m["images_bytes"], m["images_sample"]  # an old manifest: the size check reads the header
    (prepared / "manifest.json").write_text(json.dumps(m))
    (prepared / "images.npy").unlink()
    os.mkfifo(prepared / "images.npy")
    with deadline(20), pytest.raises(DataError, match="not a regular file"):
        open_prepared(prepared)


def test_a_cache_with_bytes_appended_or_cut_is_refused(prepared):
    path = prepared / "images.npy"
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0" * 64)
    with pytest.raises(DataError, match="bytes, not the"):
        open_prepared(prepared)
    path.write_bytes(raw[:-64])
    with pytest.raises(DataError, match="bytes, not the"):
        open_prepared(prepared)


def test_an_edit_between_the_sampled_chunks_is_found_by_verify(prepared, capsys):
    path = prepared / "images.npy"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 + 12345] ^= 0xFF  # one byte, most likely between the 16 sampled 64 KiB chunks
    path.write_bytes(bytes(raw))
    user_error(capsys, ["data", "verify", prepared], "images.npy has sha256", "run `fastgan data prepare` again")


def test_verify_an_intact_cache(prepared, capsys):
    assert main(["data", "verify", str(prepared)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {prepared}")


def test_old_manifest_without_the_sampled_hash_is_accepted_by_size(prepared):
    m = json.loads((prepared / "manifest.json").read_text())
    del m["images_bytes"], m["images_sample"]
    (prepared / "manifest.json").write_text(json.dumps(m))
    assert open_prepared(prepared).images.shape == (40, 3, 64, 64)
    path = prepared / "images.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="its header and manifest say"):
        open_prepared(prepared)


def test_edited_labels_or_a_damaged_manifest_are_refused(tmp_path, capsys):
    root = tmp_path / "pics"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(png_bytes(Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8))))
    assert main(["data", "prepare", str(root), "--class-folders", "--resolution", "16", "--out", str(tmp_path / "p"),
                 "--workers", "1", "--quiet"]) == 0
    capsys.readouterr()
    p = tmp_path / "p"
    assert open_prepared(p).labels.tolist() == [0, 0, 0, 1, 1, 1]
    good_labels, good_manifest = (p / "labels.npy").read_bytes(), (p / "manifest.json").read_text()
    np.save(p / "labels.npy", np.array([0, 0, 0, 1, 1, 7]))  # a label no class has
    with pytest.raises(DataError, match="labels.npy changed since it was prepared"):
        open_prepared(p)
    user_error(capsys, ["data", "verify", p], "labels.npy has sha256")
    (p / "labels.npy").write_bytes(good_labels)
    m = json.loads(good_manifest)
    del m["labels_sha256"]  # an older manifest: no hash, but the range is still checked
    (p / "manifest.json").write_text(json.dumps(m))
    np.save(p / "labels.npy", np.array([0, 0, 0, 1, 1, 7]))
    with pytest.raises(DataError, match="labels outside 0..1"):
        open_prepared(p)
    (p / "labels.npy").write_bytes(good_labels)
    for key, value in (("count", "6"), ("class_names", None), ("source", 3)):
        m = json.loads(good_manifest)
        m[key] = value
        (p / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(DataError, match=f"manifest.json is damaged \\(its '{key}'"):
            open_prepared(p)
    (p / "manifest.json").write_text(good_manifest)
    assert len(open_prepared(p)) == 6


def test_prepare_never_writes_into_a_folder_of_other_files(tmp_path, capsys):
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(2):
        (root / f"{i}.png").write_bytes(png_bytes(Image.fromarray(np.full((16, 16, 3), 9 * i, np.uint8))))
    (root / "labels.npy").write_bytes(b"the user's own file")
    for out in (root, tmp_path / "mine"):  # the source folder itself, and a folder of someone's files
        out.mkdir(exist_ok=True)
        (out / "labels.npy").write_bytes(b"the user's own file")
        user_error(capsys, ["data", "prepare", root, "--resolution", 16, "--out", out, "--quiet"],
                   "already holds files that are not a prepared dataset", "choose a new or empty folder")
        assert (out / "labels.npy").read_bytes() == b"the user's own file"
        assert not (out / "manifest.json").exists() and not (out / "images.npy").exists()
    p = tmp_path / "p"
    for _ in range(2):  # preparing again into a prepared folder replaces it
        assert main(["data", "prepare", str(root), "--resolution", "16", "--out", str(p), "--quiet"]) == 0
    assert sorted(x.name for x in p.iterdir()) == ["images.npy", "manifest.json"]


def test_an_edited_automatic_cache_is_rebuilt(tmp_path, capsys):
    """Caches under $FASTGAN_CACHE are fastgan's own: an edited one is built again, not trusted and not fatal."""
    from dataclasses import replace

    from fastgan.config import DataConfig
    from fastgan.data.cache import cache_folder, cached_dataset

    root = tmp_path / "pics"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(png_bytes(Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8))))
    cfg = replace(DataConfig(), dataset="folder", root=str(root), cache_resolution=16, prepare_workers=1)
    first = cached_dataset(cfg, "folder").images.clone()
    cache = cache_folder(cfg, "folder", 16)
    x = np.load(cache / "images.npy")
    x[1] = 255
    np.save(cache / "images.npy", x)
    capsys.readouterr()
    again = cached_dataset(cfg, "folder").images
    assert "rebuilding the 16 px cache" in capsys.readouterr().err
    assert np.array_equal(again.numpy(), first.numpy())  # the edit is gone: the images are the files' again
