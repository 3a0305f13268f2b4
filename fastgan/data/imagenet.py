"""Downsampled ImageNet 32x32 / 64x64 (Chrabaszcz et al. 2017): npz batches with 'data' (N, 3*R*R), 'labels' 1..1000."""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fastgan.config import DataConfig
from fastgan.data.base import check_data_folder
from fastgan.errors import DataError
from fastgan.paths import resolve_root

IMAGENET_SETS = {"imagenet32": 32, "imagenet64": 64}
HOW_TO_GET = ("Downsampled ImageNet needs an image-net.org account: download Imagenet{r}_train_npz.zip / "
              "Imagenet{r}_val_npz.zip from https://image-net.org/download-images.php and unzip them into {root}")


class NpzBatches:
    """The batch files of one split, in batch order; each yields (uint8 (n, 3, R, R), int64 labels 0..999)."""

    def __init__(self, name: str, files: list[Path]) -> None:
        self.name, self.files, self.native = name, files, IMAGENET_SETS[name]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            st = f.stat()
            h.update(f"{f.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        r = self.native
        for f in self.files:
            try:
                with np.load(f, allow_pickle=False) as z:
                    x, y = np.asarray(z["data"]), np.asarray(z["labels"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"{f} is not a downsampled-ImageNet batch ({type(e).__name__}: {e}): "
                                "download it again") from None
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * r * r:
                raise DataError(f"{f} holds {x.dtype} data of shape {x.shape}, not uint8 (N, {3 * r * r}): is it "
                                f"{self.name}?")
            if y.shape != (len(x),):
                raise DataError(f"{f} has {len(x)} images but {y.size} labels: the file is damaged")
            if len(y) and (y.min() < 1 or y.max() > 1000):
                raise DataError(f"{f} has labels in [{y.min()}, {y.max()}], not 1..1000: the file is damaged")
            yield x.reshape(-1, 3, r, r), y.astype(np.int64) - 1


def imagenet_batches(cfg: DataConfig, name: str) -> NpzBatches:
    root = resolve_root(cfg.root, name)
    r = IMAGENET_SETS[name]
    check_data_folder(root, name, HOW_TO_GET.format(r=r, root=root))
    if cfg.split == "train":
        files = sorted(root.rglob("train_data_batch_*.npz"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    elif cfg.split == "test":
        files = sorted(root.rglob("val_data*.npz"))
    else:
        raise DataError(f"unknown split '{cfg.split}' for {name}: use train or test (the val batch)")
    if not files:
        raise DataError(f"no {'train_data_batch_*' if cfg.split == 'train' else 'val_data'}.npz under {root}: "
                        + HOW_TO_GET.format(r=r, root=root))
    return NpzBatches(name, files)
