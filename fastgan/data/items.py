"""Encoded images (files or LMDB values) in a fixed order, and the one Pillow decode every cache uses."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastgan.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def centre_square(width: int, height: int, crop: float) -> tuple[int, int, int]:
    """(left, top, side) of the centred square whose side is ``crop`` of the shorter side (DALI uses the same)."""
    side = max(1, int(min(width, height) * crop + 0.5))
    return (width - side) // 2, (height - side) // 2, side


def decode_image(raw: bytes, resolution: int, crop: float) -> np.ndarray:
    """Encoded bytes -> uint8 (3, R, R): RGB, centre square crop, antialiased bilinear resize.

    Raises whatever Pillow raises on a damaged file (OSError, SyntaxError, ValueError...); callers count those.
    """
    with Image.open(io.BytesIO(raw)) as im:
        im = im.convert("RGB")  # also forces the full decode, so truncated files fail here
    left, top, side = centre_square(im.width, im.height, crop)
    im = im.crop((left, top, left + side, top + side))
    if side != resolution:
        im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)  # antialiased when shrinking
    return np.array(im, dtype=np.uint8).transpose(2, 0, 1)


class FileItems:
    """Image files under one root, addressed by relative path; ``extra`` files (labels) join the fingerprint."""

    def __init__(self, root: Path, paths: list[str], extra: tuple[Path, ...] = ()) -> None:
        self.root, self.paths, self.extra = root, paths, extra

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> bytes:
        return (self.root / self.paths[i]).read_bytes()

    def describe(self, i: int) -> str:
        return self.paths[i]

    def fingerprint(self) -> str:
        """Changes when a file is added, removed, replaced or touched."""
        h = hashlib.sha256(str(self.root.resolve()).encode())
        for rel in self.paths:
            st = (self.root / rel).stat()
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        for p in self.extra:
            st = p.stat()
            h.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def list_images(root: Path) -> list[str]:
    """Relative paths of every image under ``root`` (recursive, sorted, hidden folders skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        out += [str(rel / f) for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(out)


@dataclass
class ItemSource:
    """What a decoded dataset is made of: items to decode plus labels, and how to crop them."""

    name: str
    items: Any  # FileItems | LmdbItems: __len__, read(i) -> bytes, describe(i), fingerprint()
    labels: np.ndarray | None  # int64 (N,) or None
    class_names: list[str] = field(default_factory=list)
    crop: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)  # everything that changes the decoded result

    def __post_init__(self) -> None:
        if len(self.items) == 0:
            raise DataError(f"'{self.name}' has no images: check data.root")
        if self.labels is not None and len(self.labels) != len(self.items):
            raise DataError(f"'{self.name}' has {len(self.items)} images but {len(self.labels)} labels")

    def subset(self, keep: np.ndarray) -> ItemSource:
        """The same source restricted to rows ``keep`` (the images a cache kept), for loaders that re-decode."""
        keep = np.asarray(keep, dtype=np.int64)
        labels = None if self.labels is None else self.labels[keep]
        return replace(self, items=_SubsetItems(self.items, keep), labels=labels)


class _SubsetItems:
    def __init__(self, items: Any, keep: np.ndarray) -> None:
        self.base, self.keep = items, keep

    def __len__(self) -> int:
        return len(self.keep)

    def read(self, i: int) -> bytes:
        return self.base.read(int(self.keep[i]))

    def describe(self, i: int) -> str:
        return self.base.describe(int(self.keep[i]))
