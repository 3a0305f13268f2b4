"""MNIST, Fashion-MNIST and EMNIST from the original IDX files (gzip or raw; EMNIST also straight from its zip)."""

from __future__ import annotations

import gzip
import string
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from fastgan.catalog import root_hint
from fastgan.data.base import ImageDataset, check_data_folder
from fastgan.errors import DataError
from fastgan.paths import resolve_root

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
_DIGITS = list(string.digits)
_MERGED = _DIGITS + list(string.ascii_uppercase) + list("abdefghnqrt")  # EMNIST merges look-alike lower cases

IDX_SETS = {
    # name: (folder under the data home, class names)
    "mnist": ("mnist", _DIGITS),
    "fashion-mnist": ("fashion_mnist", FASHION_CLASSES),
}
EMNIST_SETS = {
    # name: (file infix, class names, label offset: letters are numbered from 1)
    "emnist-letters": ("letters", list(string.ascii_lowercase), 1),
    "emnist-digits": ("digits", _DIGITS, 0),
    "emnist-mnist": ("mnist", _DIGITS, 0),
    "emnist-balanced": ("balanced", _MERGED, 0),
    "emnist-bymerge": ("bymerge", _MERGED, 0),
    "emnist-byclass": ("byclass", _DIGITS + list(string.ascii_uppercase) + list(string.ascii_lowercase), 0),
}
EMNIST_ZIPS = ("gzip.zip", "emnist.zip")  # the official archive (torchvision saves it as emnist.zip)
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def parse_idx(raw: bytes, where: str) -> np.ndarray:
    """Parse the bytes of one IDX file (gzip-compressed or raw); raise DataError if they are not IDX."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{where} is not a readable IDX file ({e}): download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{where} is not an IDX file (bad magic number): download the original file again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{where} is truncated (no complete IDX header): download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != need:
        raise DataError(
            f"{where} is truncated or padded: header says {shape} ({need} bytes), file has {len(raw) - header}: "
            "download it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip-compressed or raw); raise DataError if it is not IDX."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path} is not a readable IDX file ({e}): download it again") from None
    return parse_idx(raw, str(path))


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{stem}.gz not found in {root}: put the original IDX files there, or {root_hint(root.name)}"
    )


def _check_root(base: Path, name: str, what: str) -> None:
    check_data_folder(base, name, f"put {what} there, run `fastgan data download {name} --root {base}`, or "
                      f"{root_hint(base.name)}")


def _pair(name: str, x: np.ndarray, y: np.ndarray, img_where: str, lab_where: str) -> None:
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{img_where} holds {x.dtype} data of shape {x.shape}, not uint8 images (N, H, W)")
    if y.ndim != 1:
        raise DataError(f"{lab_where} holds data of shape {y.shape}, not a label vector")
    if len(x) != len(y):
        raise DataError(
            f"{img_where} has {len(x)} images but {lab_where} has {len(y)} labels: the files do not belong together "
            f"(download '{name}' again)"
        )


def load_idx_dataset(name: str, root: str = "", split: str = "train") -> ImageDataset:
    folder, classes = IDX_SETS[name]
    base = resolve_root(root, folder)
    _check_root(base, name, "the original IDX gzip files")
    if split not in _FILES:
        raise DataError(f"unknown split '{split}' for {name}: use train or test")
    img_file, lab_file = (_find(base, s) for s in _FILES[split])
    x, y = read_idx(img_file), read_idx(lab_file)
    _pair(name, x, y, img_file.name, lab_file.name)
    images = torch.from_numpy(x.copy())[:, None]
    labels = torch.from_numpy(y.astype(np.int64))
    return ImageDataset(images, labels, len(classes), classes, name)


def _emnist_bytes(base: Path, member: str) -> tuple[bytes, str]:
    """One EMNIST file from the folder (gz or raw, also under gzip/) or from the official zip."""
    for cand in (base / member, base / "gzip" / member, base / member[:-3], base / "gzip" / member[:-3]):
        if cand.is_file():
            return cand.read_bytes(), str(cand)
    for zname in EMNIST_ZIPS:
        if (base / zname).is_file():
            try:
                with zipfile.ZipFile(base / zname) as z:
                    return z.read(f"gzip/{member}"), f"{base / zname}:gzip/{member}"
            except KeyError:
                raise DataError(f"{base / zname} has no gzip/{member}: it is not the EMNIST gzip archive") from None
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise DataError(f"{base / zname} is not a readable zip ({e}): download it again") from None
    raise DataError(
        f"neither {member} nor the EMNIST archive gzip.zip is in {base}: run `fastgan data download emnist "
        f"--root {base}` or put the official gzip.zip there"
    )


def load_emnist_dataset(name: str, root: str = "", split: str = "train") -> ImageDataset:
    infix, classes, offset = EMNIST_SETS[name]
    base = resolve_root(root, "emnist")
    _check_root(base, name, "the official EMNIST gzip.zip")
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}' for {name}: use train or test")
    part = "train" if split == "train" else "test"
    xb, xw = _emnist_bytes(base, f"emnist-{infix}-{part}-images-idx3-ubyte.gz")
    yb, yw = _emnist_bytes(base, f"emnist-{infix}-{part}-labels-idx1-ubyte.gz")
    x, y = parse_idx(xb, xw), parse_idx(yb, yw)
    _pair(name, x, y, xw, yw)
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))[:, None]  # EMNIST stores images transposed
    labels = torch.from_numpy(y.astype(np.int64) - offset)
    return ImageDataset(images, labels, len(classes), classes, name)
