"""`fastgan data prepare`: memory-mappable output, manifest, worker processes, skipped images, atomicity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan.cli import main
from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.data.prepare import open_prepared
from fastgan.errors import DataError


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_folder_with_one_corrupt_jpeg_skips_and_counts_it(fx, tmp_path, capsys):
    root = fx.folder(tmp_path / "pics", {"": 5})
    (root / "img002.jpg").write_bytes((root / "img002.jpg").read_bytes()[:200])  # truncated mid-scan
    (root / "zz.png").write_bytes(b"\x89PNG not really")
    rc, out, err = run(capsys, "data", "prepare", root, "--resolution", 16, "--out", tmp_path / "p", "--workers", 1)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["count"] == 4 and summary["skipped"] == 2 and summary["channels"] == 3
    assert "skipped 2 unreadable image(s) of 6" in err and "img002.jpg" in err
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["skipped_index"] == [2, 5] and m["source"] == "folder" and m["resolution"] == 16
    assert m["skipped_items"][0].startswith("img002.jpg (")
    x = np.load(tmp_path / "p" / "images.npy", mmap_mode="r")
    assert isinstance(x, np.memmap) and x.shape == (4, 3, 16, 16)
    assert hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() == m["sha256"]


def test_worker_processes_give_the_same_bytes_as_one_process(fx, tmp_path, capsys):
    root = fx.lsun(tmp_path / "lsun", "church_outdoor", n=70)  # > one 64-image task, so both workers decode
    fx.lsun(root, "tower", n=3, seed=9)
    sums = []
    for w in (1, 2):
        rc, out, err = run(capsys, "data", "prepare", "lsun", "--root", root, "--categories", "church_outdoor,tower",
                           "--resolution", 12, "--out", tmp_path / f"w{w}", "--workers", w, "--quiet")
        assert rc == 0, err
        sums.append(json.loads(out)["sha256"])
        assert np.load(tmp_path / f"w{w}" / "labels.npy").tolist() == [0] * 70 + [1] * 3
    assert sums[0] == sums[1]


def test_array_sources_prepare_and_train_from_the_folder(fx, tmp_path, capsys):
    root, _, _ = fx.cifar(tmp_path / "cifar10")
    rc, out, err = run(capsys, "data", "prepare", "cifar10", "--root", root, "--resolution", 16, "--out",
                       tmp_path / "p", "--quiet")
    assert rc == 0 and json.loads(out)["count"] == 30
    ds = open_prepared(tmp_path / "p")
    assert ds.images.shape == (30, 3, 16, 16) and ds.num_classes == 10 and ds.class_names[3] == "c3"
    rc, out, err = run(capsys, "train", "--steps", 1, "--out", tmp_path / "run", "--set", "data.dataset=prepared",
                       "--set", f"data.root={tmp_path / 'p'}", "--set", "model.resolution=32",
                       "--set", "model.g_width=4", "--set", "model.d_width=4", "--batch-size", 4,
                       "--set", "train.grid_size=4", "--quiet")
    assert rc == 0, err


def test_an_interrupted_prepare_never_looks_complete(fx, tmp_path, monkeypatch):
    root = fx.folder(tmp_path / "pics", {"": 3})
    cfg = replace(DataConfig(), dataset="folder", root=str(root), cache_resolution=8, prepare_workers=1)
    from fastgan.data.registry import prepare_source

    prepare_source(cfg, 8, tmp_path / "p", quiet=True)
    assert len(open_prepared(tmp_path / "p")) == 3
    import fastgan.data.prepare as prep

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "decode_image", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_source(cfg, 8, tmp_path / "p", quiet=True)
    with pytest.raises(DataError, match="is not a prepared dataset"):
        open_prepared(tmp_path / "p")
    assert not list((tmp_path / "p").glob("*.part"))


def test_the_training_cache_is_rebuilt_after_an_interrupted_build(fx, tmp_path, monkeypatch, capsys):
    root = fx.folder(tmp_path / "pics", {"": 3})
    cfg = replace(DataConfig(), dataset="folder", root=str(root), cache_resolution=8, prepare_workers=1)
    import fastgan.data.prepare as prep

    real = prep.decode_image
    monkeypatch.setattr(prep, "decode_image", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        load_dataset(cfg)
    monkeypatch.setattr(prep, "decode_image", real)
    assert len(load_dataset(cfg)) == 3
    assert "building" in capsys.readouterr().err


def test_prepared_images_match_the_source(fx, tmp_path):
    root, upright, labels = fx.emnist_zip(tmp_path / "emnist")
    cfg = replace(DataConfig(), dataset="emnist-letters", root=str(root))
    from fastgan.data.registry import prepare_source

    prepare_source(cfg, 28, tmp_path / "p", quiet=True)
    ds = open_prepared(tmp_path / "p")
    assert torch.equal(ds.images[:, 0], torch.from_numpy(upright))
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64) - 1)) and ds.class_names[25] == "z"


def test_prepare_writes_nothing_outside_out(fx, tmp_path, capsys):
    root = fx.folder(tmp_path / "pics", {"": 2})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc, _, err = run(capsys, "data", "prepare", root, "--resolution", 8, "--out", tmp_path / "o", "--quiet")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert rc == 0, err
    assert sorted(set(after) - set(before)) == [Path("o"), Path("o/images.npy"), Path("o/manifest.json")]


def test_data_list_names_every_source(capsys):
    from fastgan.data import SOURCES

    rc, out, _ = run(capsys, "data", "list")
    lines = out.splitlines()
    assert rc == 0 and any(ln.startswith("NAME ") for ln in lines), out + _
    start = next(i for i, ln in enumerate(lines) if ln.startswith("NAME "))  # the table, up to the blank line
    table = lines[start + 1 : next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))]
    rows = {line.split()[0]: line for line in table}
    assert set(rows) == set(SOURCES)
    assert rows["cifar10"].endswith("download") and "decoded once and cached" in rows["celeba"]
