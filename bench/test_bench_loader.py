"""Loader throughput: images/s of ``batch(B)`` for device, stream (0 and 2 workers) and DALI, at 32 and 64 px.

    pytest bench/test_bench_loader.py --benchmark-enable --benchmark-json bench/results/loader-cpu.json

The stream loader reads a prepared memory-mapped .npy (its real use); DALI decodes a folder of JPEGs each batch
(CPU-only pipeline without a GPU). Augmentation is on (hflip + 4 px crop padding) for every loader.
"""

from __future__ import annotations

import io
import os
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.data.dali import dali_available
from fastgan.data.loader import make_loader

BATCH = 128
IMAGES = 1024  # distinct JPEGs / rows; batches sample with replacement
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """1024 small JPEGs (96x80, smooth content), like a user's image folder."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        im = Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).resize((96, 80), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        (root / f"{i:05d}.jpg").write_bytes(buf.getvalue())
    return root


def _dataset(folder: Path, res: int, cache: Path):
    cfg = replace(DataConfig(), dataset="folder", root=str(folder), cache_resolution=res, cache_dir=str(cache),
                  prepare_workers=2)
    return load_dataset(cfg)


CASES = [("device", 0), ("stream", 0), ("stream", 2), ("dali", 0)]


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("kind,workers", CASES, ids=[f"{k}-w{w}" if k == "stream" else k for k, w in CASES])
def test_loader_throughput(benchmark, photo_folder, tmp_path_factory, kind, workers, res):
    if kind == "dali" and dali_available():
        pytest.skip(dali_available())
    ds = _dataset(photo_folder, res, tmp_path_factory.getbasetemp() / "cache")
    cfg = replace(DataConfig(), loader=kind, loader_workers=workers, hflip=True, crop_pad=4)
    loader = make_loader(ds, cfg, res, DEVICE)

    def step():
        x, _ = loader.batch(BATCH)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return x

    for _ in range(3):  # warm-up: workers started, pipelines built, caches hot
        step()
    benchmark.pedantic(step, rounds=30 if kind != "dali" else 10, iterations=1)
    median = benchmark.stats.stats.median  # robust to the odd stall of a shared machine
    benchmark.extra_info.update(
        images_per_s=round(BATCH / median, 1), batch=BATCH, resolution=res, loader=kind, workers=workers,
        device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"cpu ({platform.processor() or 'x86_64'})",
        torch=torch.__version__, cpu_threads=torch.get_num_threads(),
        load_average_1min=round(os.getloadavg()[0], 2))  # other work on the machine skews CPU figures
