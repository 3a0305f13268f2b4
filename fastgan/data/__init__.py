"""Data sources (uint8 images + labels) and loaders (batches in [-1, 1] on the device)."""

from __future__ import annotations

from typing import Callable

from fastgan.config import DataConfig
from fastgan.data.base import ImageDataset, data_home, resolve_root
from fastgan.data.digits import load_digits_dataset
from fastgan.data.idx import IDX_SETS, load_idx_dataset, read_idx
from fastgan.data.loader import DeviceLoader, make_loader
from fastgan.errors import DataError

__all__ = ["ImageDataset", "DeviceLoader", "SOURCES", "load_dataset", "make_loader", "read_idx", "data_home",
           "resolve_root"]

# name -> loader(cfg). The data issue registers more sources here.
SOURCES: dict[str, Callable[[DataConfig], ImageDataset]] = {
    "digits": lambda c: load_digits_dataset(c.split),
    **{name: (lambda c, n=name: load_idx_dataset(n, c.root, c.split)) for name in IDX_SETS},
}


def load_dataset(cfg: DataConfig) -> ImageDataset:
    if cfg.dataset not in SOURCES:
        raise DataError(
            f"dataset '{cfg.dataset}' is not available in this build: choose one of {', '.join(sorted(SOURCES))}"
        )
    return SOURCES[cfg.dataset](cfg)
