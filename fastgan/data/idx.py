"""MNIST and Fashion-MNIST from the original IDX files (gzip or raw)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from fastgan.data.base import ImageDataset, resolve_root
from fastgan.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

IDX_SETS = {
    # name: (folder under the data home, class names)
    "mnist": ("mnist", [str(i) for i in range(10)]),
    "fashion-mnist": ("fashion_mnist", FASHION_CLASSES),
}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip-compressed or raw); raise DataError if it is not IDX."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is not a readable IDX file ({e}): download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path} is not an IDX file (bad magic number): download the original file again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (no complete IDX header): download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(
            f"{path} is truncated or padded: header says {shape} ({need} bytes), file has {len(raw) - header}: "
            "download it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{stem}.gz not found in {root}: put the original IDX files there or point --set data.root=DIR at them"
    )


def load_idx_dataset(name: str, root: str = "", split: str = "train") -> ImageDataset:
    folder, classes = IDX_SETS[name]
    base = resolve_root(root, folder)
    if not base.is_dir():
        raise DataError(
            f"data folder {base} for '{name}' does not exist: put the original IDX gzip files there, "
            "or set FASTGAN_DATA / --set data.root=DIR"
        )
    if split not in _FILES:
        raise DataError(f"unknown split '{split}' for {name}: use train or test")
    img_file, lab_file = (_find(base, s) for s in _FILES[split])
    x, y = read_idx(img_file), read_idx(lab_file)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{img_file} holds {x.dtype} data of shape {x.shape}, not uint8 images (N, H, W)")
    if y.ndim != 1:
        raise DataError(f"{lab_file} holds data of shape {y.shape}, not a label vector")
    if len(x) != len(y):
        raise DataError(
            f"{img_file.name} has {len(x)} images but {lab_file.name} has {len(y)} labels: the files do not belong "
            "together"
        )
    images = torch.from_numpy(x.copy())[:, None]
    labels = torch.from_numpy(y.astype(np.int64))
    return ImageDataset(images, labels, len(classes), classes, name)
