"""Data sources (uint8 images + labels) and loaders (batches in [-1, 1] on the device)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fastgan.config import DataConfig
from fastgan.data.base import ImageDataset, data_home, resolve_root
from fastgan.data.cache import DECODED, cached_dataset
from fastgan.data.cifar import CIFAR_SETS, load_cifar_dataset
from fastgan.data.digits import load_digits_dataset
from fastgan.data.idx import EMNIST_SETS, IDX_SETS, load_emnist_dataset, load_idx_dataset, read_idx
from fastgan.data.loader import DeviceLoader, Draw, StreamLoader, make_loader
from fastgan.data.prepare import open_prepared
from fastgan.errors import DataError

__all__ = ["ImageDataset", "DeviceLoader", "StreamLoader", "Draw", "SOURCES", "load_dataset", "make_loader",
           "read_idx", "data_home", "resolve_root"]


def _prepared(cfg: DataConfig) -> ImageDataset:
    if not cfg.root:
        raise DataError("dataset 'prepared' reads a `fastgan data prepare` folder: add --set data.root=DIR")
    return open_prepared(Path(cfg.root).expanduser())


# name -> loader(cfg). Decoded sources (folders, CelebA, LSUN, ImageNet npz) go through a cache on disk.
SOURCES: dict[str, Callable[[DataConfig], ImageDataset]] = {
    "digits": lambda c: load_digits_dataset(c.split),
    **{name: (lambda c, n=name: load_idx_dataset(n, c.root, c.split)) for name in IDX_SETS},
    **{name: (lambda c, n=name: load_emnist_dataset(n, c.root, c.split)) for name in EMNIST_SETS},
    **{name: (lambda c, n=name: load_cifar_dataset(n, c.root, c.split)) for name in CIFAR_SETS},
    **{name: (lambda c, n=name: cached_dataset(c, n)) for name in DECODED},
    "prepared": _prepared,
}


def load_dataset(cfg: DataConfig) -> ImageDataset:
    if cfg.dataset not in SOURCES:
        raise DataError(
            f"dataset '{cfg.dataset}' is not available in this build: choose one of {', '.join(sorted(SOURCES))}"
        )
    return SOURCES[cfg.dataset](cfg)
