"""Decoded sources (folders, CelebA, LSUN, downsampled ImageNet) train from a prepared cache that is built on first
use and rebuilt when the source changes; `fastgan data prepare` writes the same folders for any source."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fastgan.config import DataConfig
from fastgan.data.base import ImageDataset
from fastgan.data.folder import celeba_source, folder_source
from fastgan.data.imagenet import IMAGENET_SETS, NpzBatches, imagenet_batches
from fastgan.data.items import ItemSource
from fastgan.data.lsun import LSUN_SETS, lsun_source
from fastgan.data.prepare import check_resolution, open_prepared, prepare_arrays, prepare_items, read_manifest
from fastgan.errors import DataError
from fastgan.paths import cache_home

DECODED = ("folder", "celeba", "lsun", *LSUN_SETS, *IMAGENET_SETS)


def decoded_source(cfg: DataConfig, name: str) -> ItemSource | NpzBatches:
    if name == "folder":
        return folder_source(cfg)
    if name == "celeba":
        return celeba_source(cfg)
    if name in IMAGENET_SETS:
        return imagenet_batches(cfg, name)
    return lsun_source(cfg, name)


def _fingerprint(src: ItemSource | NpzBatches) -> str:
    return src.items.fingerprint() if isinstance(src, ItemSource) else src.fingerprint()


def _build(src: ItemSource | NpzBatches, resolution: int, out: Path, workers: int, quiet: bool,
           fingerprint: str) -> dict[str, Any]:
    if isinstance(src, ItemSource):
        return prepare_items(src, resolution, out, workers, quiet, fingerprint)
    return prepare_arrays(src.name, src.batches(), 3, resolution, out, [str(i) for i in range(1000)], True,
                          {"files": [f.name for f in src.files]}, fingerprint, quiet)


def cache_folder(cfg: DataConfig, name: str, resolution: int) -> Path:
    """One folder per (source, root, decode settings, resolution), so changing a setting never clobbers a cache."""
    key = {"source": name, "root": str(Path(cfg.root).expanduser().resolve()) if cfg.root else "", "split": cfg.split,
           "crop": cfg.crop, "class_folders": cfg.class_folders, "attribute": cfg.attribute,
           "categories": cfg.categories, "resolution": resolution}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_home(cfg.cache_dir) / f"{name}-{resolution}px-{digest}"


def cached_dataset(cfg: DataConfig, name: str) -> ImageDataset:
    r = cfg.cache_resolution
    if r < 1:
        raise DataError(f"dataset '{name}' is decoded into a cache and needs data.cache_resolution (px): set it, or "
                        "build the config with load_config, which takes it from model.resolution")
    check_resolution(r, "data.cache_resolution")
    src = decoded_source(cfg, name)
    fingerprint = _fingerprint(src)
    out = cache_folder(cfg, name, r)
    m = read_manifest(out)
    if m is None or m.get("fingerprint") != fingerprint or m.get("resolution") != r:
        why = "building" if m is None else "rebuilding (the source changed)"
        print(f"{why} the {r} px cache of '{name}' in {out}", file=sys.stderr)
        _build(src, r, out, cfg.prepare_workers, False, fingerprint)
    origin = src if isinstance(src, ItemSource) else None
    try:
        return open_prepared(out, origin)
    except DataError as e:  # edited or damaged since it was built: a cache is ours to build again
        print(f"rebuilding the {r} px cache of '{name}' in {out} ({e})", file=sys.stderr)
        _build(src, r, out, cfg.prepare_workers, False, fingerprint)
        return open_prepared(out, origin)
