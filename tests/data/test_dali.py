"""The DALI loader's CPU-only pipeline against the Pillow cache, for the same Draw.

Tolerance (0..255 grey levels): mean |difference| <= 0.5 and max <= 8. Decoders agree (libjpeg-turbo, libwebp,
libpng) but DALI's antialiased linear resize rounds differently from Pillow's; on these fixtures the measured
figures were a mean of about 0.2 and a max of 1 to 4 levels.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fastgan.cli import main
from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.data.dali import dali_available
from fastgan.data.loader import DeviceLoader, Draw, make_loader

REASON = dali_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

MEAN_LEVELS, MAX_LEVELS = 0.5, 8.0


def _levels(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.cpu() - b.cpu()).abs() * 127.5
    return d.mean().item(), d.max().item()


def _compare(ds, res: int, hflip: bool, pad: int):
    dali = make_loader(ds, replace(DataConfig(), loader="dali", hflip=hflip, crop_pad=pad), res, torch.device("cpu"))
    dev = DeviceLoader(ds, res, torch.device("cpu"), hflip, pad)
    torch.manual_seed(0)
    n = len(ds)
    d = Draw(torch.arange(n), (torch.rand(n) < 0.5) if hflip else None,
             torch.randint(2 * pad + 1, (2, n)) if pad else None)
    x, y = dali.batch_at(d)
    ref, ref_y = dev.batch_at(d)
    assert x.shape == ref.shape and x.dtype == torch.float32
    assert (y is None and ref_y is None) or torch.equal(y, ref_y)
    return _levels(x, ref)


@pytest.mark.parametrize("res,crop,hflip,pad", [(16, 1.0, False, 0), (32, 0.7, True, 0), (24, 0.8, True, 3)])
def test_dali_matches_the_pillow_cache_on_a_mixed_folder(fx, tmp_path, res, crop, hflip, pad):
    root = fx.folder(tmp_path / "pics", {"a": 6}, size=(50, 37))
    fx.folder(root, {"b": 3}, size=(30, 64), fmt="PNG", seed=3)
    fx.folder(root, {"c": 3}, size=(30, 64), fmt="WEBP", seed=5)
    ds = load_dataset(replace(DataConfig(), dataset="folder", root=str(root), cache_resolution=res, crop=crop,
                              class_folders=True, prepare_workers=1))
    mean, worst = _compare(ds, res, hflip, pad)
    assert mean <= MEAN_LEVELS and worst <= MAX_LEVELS, (mean, worst)


def test_dali_reads_lsun_bytes_and_skips_what_the_cache_skipped(fx, tmp_path):
    import lmdb

    root = fx.lsun(tmp_path / "lsun", n=5)
    env = lmdb.open(str(root / "church_outdoor_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(f"{2:040x}".encode(), b"RIFF-not-webp")  # the third image is damaged
    env.close()
    ds = load_dataset(replace(DataConfig(), dataset="lsun-church", root=str(root), cache_resolution=16,
                              prepare_workers=1))
    assert len(ds) == 4  # the cache skipped one; DALI's rows must line up with the cache's
    mean, worst = _compare(ds, 16, True, 0)
    assert mean <= MEAN_LEVELS and worst <= MAX_LEVELS, (mean, worst)


def test_dali_batches_train_a_few_steps(fx, tmp_path, capsys):
    root = fx.folder(tmp_path / "pics", {"": 6})
    rc = main(["train", "--steps", "2", "--out", str(tmp_path / "run"), "--set", "data.dataset=folder",
               "--set", f"data.root={root}", "--set", "data.loader=dali", "--set", "model.conditioning=none",
               "--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "train.batch_size=4",
               "--set", "train.grid_size=4", "--quiet"])
    assert rc == 0, capsys.readouterr().err


def test_dali_refuses_already_decoded_sources():
    from fastgan.data import ImageDataset
    from fastgan.errors import DataError

    ds = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), None, name="arrays")
    with pytest.raises(DataError, match="use --set data.loader=device or stream"):
        make_loader(ds, replace(DataConfig(), loader="dali"), 32, torch.device("cpu"))
