"""Encoded images (files or LMDB values) in a fixed order, and the one Pillow decode every cache uses."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
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


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey (PNG, TIFF, PGM) opens as one of these


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16-bit grey keeps its top byte (Pillow's own convert clips it to 255, so nearly
    every pixel came out white); alpha is dropped, keeping the stored colour, as pytorch-fid and torchvision do;
    palettes, 1-bit, grey+alpha and CMYK go through Pillow's converters."""
    if im.mode in _SIXTEEN_BIT:
        a = np.asarray(im).astype(np.int64)  # "I" is 32-bit signed: clip to the 16-bit range first
        return Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # the direct P -> RGB path warns about transparency on every such file
    return im.convert("RGB")


def decode_image(raw: bytes, resolution: int, crop: float) -> np.ndarray:
    """Encoded bytes -> uint8 (3, R, R): RGB (see ``to_rgb``), centre square crop, antialiased bilinear resize.

    Raises whatever Pillow raises on a damaged file (OSError, SyntaxError, ValueError...); callers count those.
    """
    with Image.open(io.BytesIO(raw)) as im:
        im.load()  # the full decode, so truncated files fail here
        im = to_rgb(im)
    left, top, side = centre_square(im.width, im.height, crop)
    im = im.crop((left, top, left + side, top + side))
    if side != resolution:
        im = im.resize((resolution, resolution), Image.Resampling.BILINEAR)  # antialiased when shrinking
    return np.array(im, dtype=np.uint8).transpose(2, 0, 1)


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file; a FIFO or device is never opened (opening a FIFO blocks forever)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"not a regular file ({_kind(os.stat(path).st_mode)})")
    return path.read_bytes()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


class FileItems:
    """Image files under one root, addressed by relative path; ``extra`` files (labels) join the fingerprint.
    ``skipped``: (relative path, reason) of what the listing left out (links that lead nowhere, special files)."""

    def __init__(self, root: Path, paths: list[str], extra: tuple[Path, ...] = (),
                 skipped: list[tuple[str, str]] | None = None) -> None:
        self.root, self.paths, self.extra, self.skipped = root, paths, extra, skipped or []

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> bytes:
        return read_regular(self.root / self.paths[i])

    def describe(self, i: int) -> str:
        return self.paths[i]

    def fingerprint(self) -> str:
        """Changes when a file is added, removed, replaced or touched (or a broken one is mended)."""
        h = hashlib.sha256(os.fsencode(self.root.resolve()))
        for rel in self.paths:
            try:
                st = (self.root / rel).stat()
                sig = f"{st.st_size}\t{st.st_mtime_ns}"
            except OSError as e:  # vanished or became a dangling link: decoding counts it, the cache notices it
                sig = f"error {e.errno}"
            h.update(os.fsencode(rel) + f"\t{sig}\n".encode())  # fsencode: names need not be UTF-8
        for rel, why in self.skipped:
            h.update(os.fsencode(rel) + f"\tskipped {why}\n".encode())
        for p in self.extra:
            st = p.stat()
            h.update(os.fsencode(p.name) + f"\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def list_images(root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[list[str], list[tuple[str, str]]]:
    """(relative paths of every image under ``root``, sorted; (relative path, reason) of image entries skipped).

    Recursive, hidden entries skipped. Links are followed at most once per real path: a folder link into the tree
    or to one of its ancestors (``..``) is never followed, so the set cannot multiply; a file link to a file already
    listed is skipped. Special files (FIFOs, devices, sockets) are never opened. Names need not be UTF-8 (Python
    keeps their bytes as surrogate escapes)."""
    real_root = os.path.realpath(root)
    seen_dirs: set[tuple[int, int]] = set()  # (device, inode): also catches loops made with bind mounts
    found: list[tuple[str, str, bool]] = []  # (relative path, real path, is a link)
    skipped: list[tuple[str, str]] = []

    def inside(a: str, b: str) -> bool:  # real path a is b or below it
        return a == b or a.startswith(b.rstrip(os.sep) + os.sep)

    def walk(folder: str, rel: str, real: str) -> None:
        st = os.stat(folder)
        seen_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append((rel or ".", f"folder not readable: {e.strerror}"))
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            r = os.path.join(rel, e.name) if rel else e.name
            is_image = e.name.lower().endswith(extensions)
            is_link = e.is_symlink()  # from the directory entry's type: no system call
            try:
                st = os.stat(e.path)  # follows links
            except OSError as err:
                if err.errno == errno.ELOOP:
                    skipped.append((r, "symlink loop"))
                elif err.errno == errno.ENOENT and is_link:
                    skipped.append((r, "dangling symlink"))
                elif is_image:
                    skipped.append((r, f"not readable: {err.strerror}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                target = os.path.realpath(e.path) if is_link else os.path.join(real, e.name)
                if is_link and (inside(target, real_root) or inside(real_root, target)):
                    skipped.append((r, "link to a folder inside the dataset or above it (not followed)"))
                elif (st.st_dev, st.st_ino) in seen_dirs:
                    skipped.append((r, "link to a folder already listed (not followed)"))
                else:
                    walk(e.path, r, target)
            elif is_image:
                if stat.S_ISREG(st.st_mode):
                    found.append((r, os.path.realpath(e.path) if is_link else os.path.join(real, e.name), is_link))
                else:
                    skipped.append((r, f"not a regular file ({_kind(st.st_mode)})"))

    walk(str(root), "", real_root)
    listed = {real for _, real, link in found if not link}
    paths = []
    for r, real, link in sorted(found):
        if link and real in listed:
            skipped.append((r, "link to a file already listed"))
            continue
        listed.add(real)
        paths.append(r)
    return paths, sorted(skipped)


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
