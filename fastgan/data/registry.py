"""The registry of data sources: name -> loader(DataConfig) -> ImageDataset, and ``fastgan data prepare``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fastgan.config import DataConfig
from fastgan.data.base import ImageDataset
from fastgan.data.cache import DECODED, _build, _fingerprint, cached_dataset, decoded_source
from fastgan.data.cifar import CIFAR_SETS, load_cifar_dataset
from fastgan.data.digits import load_digits_dataset
from fastgan.data.idx import EMNIST_SETS, IDX_SETS, load_emnist_dataset, load_idx_dataset
from fastgan.data.prepare import open_prepared, prepare_arrays
from fastgan.errors import DataError


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


def prepare_source(cfg: DataConfig, resolution: int, out: Path, quiet: bool = False) -> dict[str, Any]:
    """`fastgan data prepare`: any source into ``out`` (decoded ones with worker processes)."""
    name = cfg.dataset
    if name in DECODED:
        src = decoded_source(cfg, name)
        return _build(src, resolution, out, cfg.prepare_workers, quiet, _fingerprint(src))
    # array sources load whole, then resize
    ds = load_dataset(cfg)
    x = ds.images.numpy()
    y = None if ds.labels is None else ds.labels.numpy()
    h = hashlib.sha256(np.ascontiguousarray(x).data)
    if y is not None:
        h.update(np.ascontiguousarray(y).data)
    return prepare_arrays(name, [(x, y)], ds.channels, resolution, out, list(ds.class_names), y is not None,
                          {"split": cfg.split}, h.hexdigest(), quiet, len(x))
