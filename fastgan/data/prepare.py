"""Prepared datasets: decode, crop and resize once into a memory-mappable uint8 .npy, labels and a manifest.

Layout of a prepared folder: ``images.npy`` (N, C, R, R) uint8, ``labels.npy`` (N,) int64 when labelled, and
``manifest.json`` (source, resolution, count, skipped images and why, the source's fingerprint, the images' sha256,
size and sampled hash). The manifest is written last and removed first, so a half-written folder never looks
complete. Every load checks the size and the sampled hash (a few fixed chunks: cheap at any size), so an
``images.npy`` edited after preparing is refused; ``fastgan data verify DIR`` checks the full sha256.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fastgan.data.augment import resize_uint8  # the loaders' resizer, so both paths give the same pixels
from fastgan.data.base import ImageDataset
from fastgan.data.items import ItemSource, decode_image
from fastgan.errors import DataError

FORMAT = "fastgan-prepared/1"
CHUNK = 64  # images per worker task: large enough to amortise the pipe, small enough for a smooth progress bar
SHOWN_SKIPS = 20  # skipped images named in the manifest (all are counted)
OWN_FILES = {f"{n}{part}" for n in ("images.npy", "labels.npy", "manifest.json") for part in ("", ".part")}
SAMPLE_CHUNKS, SAMPLE_BYTES = 16, 1 << 16  # the load-time check reads at most 1 MiB, whatever the size
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024  # px; 1024 is model.resolution's cap: a larger cache trains nothing, and
# each decoded image is resized in memory (100,000 px square is 30 GB a picture)


def check_resolution(r: int, what: str = "--resolution") -> int:
    if not MIN_RESOLUTION <= r <= MAX_RESOLUTION:
        size = "too small" if r < MIN_RESOLUTION else "too large"
        raise DataError(f"{what} {r} is {size}: use {MIN_RESOLUTION} to {MAX_RESOLUTION} px (the largest model "
                        "trains at 1024), e.g. 64")
    return r


class _NpyWriter:
    """An append-only .npy: the header is rewritten with the final count at the end (numpy pads it for that)."""

    def __init__(self, path: Path, tail: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.tail, self.dtype = path, tail, np.dtype(dtype)
        self.f = open(path, "wb")  # noqa: SIM115 -- held open across add() calls, closed by close()
        self.n = 0
        self.sha = hashlib.sha256()
        self.header = self._header(0)

    def _header(self, n: int) -> int:
        self.f.seek(0)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        np.lib.format.write_array_header_1_0(self.f, {"descr": descr, "fortran_order": False, "shape": (n, *self.tail)})
        return self.f.tell()

    def append(self, a: np.ndarray) -> None:
        b = np.ascontiguousarray(a, dtype=self.dtype).tobytes()
        self.f.write(b)
        self.sha.update(b)
        self.n += len(a)

    def close(self) -> None:
        if self._header(self.n) != self.header:  # numpy leaves room for 21 digits; this never triggers
            raise DataError(f"could not finish {self.path}: the .npy header changed size")
        self.f.close()


def sampled_sha256(path: Path, size: int, chunks: int = SAMPLE_CHUNKS, nbytes: int = SAMPLE_BYTES) -> str:
    """sha256 of ``chunks`` blocks of ``nbytes`` at fixed, evenly spaced offsets (first and last included); the
    whole file when it is that small. Catches a replaced, re-saved, truncated or rewritten file in O(1) reads."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= chunks * nbytes:
            h.update(f.read())
        else:
            for i in range(chunks):
                f.seek((size - nbytes) * i // (chunks - 1))
                h.update(f.read(nbytes))
    return h.hexdigest()


def _skip_header(f) -> None:
    """Leave ``f`` at the first array byte of an .npy file."""
    if np.lib.format.read_magic(f) == (1, 0):
        np.lib.format.read_array_header_1_0(f)
    else:
        np.lib.format.read_array_header_2_0(f)


def _data_sha256(path: Path) -> str:
    """sha256 of an .npy file's array bytes (after the header), as the manifest records it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        _skip_header(f)
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# -- decoding in worker processes ------------------------------------------------------------------

_JOB: tuple[ItemSource, int] | None = None  # set in each worker (inherited on fork, pickled once on spawn)


def _init_worker(src: ItemSource, resolution: int) -> None:
    global _JOB
    _JOB = (src, resolution)
    torch.set_num_threads(1)


def _decode_range(bounds: tuple[int, int]) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    src, r = _JOB
    out, kept, bad = [], [], []
    for i in range(*bounds):
        try:
            out.append(decode_image(src.items.read(i), r, src.crop))
            kept.append(i)
        except Exception as e:  # noqa: BLE001 -- a damaged image is counted and skipped, whatever Pillow raises
            bad.append((i, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    return (np.stack(out) if out else np.empty((0, 3, r, r), np.uint8)), kept, bad


def _pool_map(fn, tasks: list, workers: int, init: tuple) -> Iterator:
    if workers <= 1:
        _init_worker(*init)
        yield from map(fn, tasks)
        return
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=init) as pool:
        yield from pool.imap(fn, tasks)


def _workers(n: int) -> int:
    if n:
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# -- writing and reading a prepared folder ---------------------------------------------------------

def _write(out: Path, chunks: Iterable[tuple[np.ndarray, np.ndarray | None]], shape: tuple[int, int, int],
           labelled: bool, meta: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Stream ``chunks`` into ``out``; ``meta()`` is asked once they are consumed (it may count skips)."""
    if out.is_dir():  # a prepared folder is replaced; any other folder is someone's files, never overwritten
        names = {p.name for p in out.iterdir()}
        ours = OWN_FILES if names & {"manifest.json", "images.npy"} else set()  # a lone labels.npy is not ours
        other = sorted(names - ours)
        if other:
            raise DataError(f"--out {out} already holds files that are not a prepared dataset (first: {other[0]}): "
                            "choose a new or empty folder (prepare writes images.npy, labels.npy and manifest.json)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # from here on the folder is incomplete
    imgs = _NpyWriter(out / "images.npy.part", shape, np.uint8)
    labs = _NpyWriter(out / "labels.npy.part", (), np.int64) if labelled else None
    parts = [w for w in (imgs, labs) if w is not None]
    try:
        for x, y in chunks:
            imgs.append(x)
            if labs is not None:
                labs.append(y)
    except BaseException:  # interrupted or failed: leave no half-written file behind
        for w in parts:
            w.f.close()
            w.path.unlink()
        raise
    for w in parts:
        w.close()
    info = meta()
    if imgs.n == 0:
        for w in parts:
            w.path.unlink()
        first = (info.get("skipped_items") or ["-"])[0]
        raise DataError(f"none of the {info.get('skipped', 0)} images of '{info['source']}' could be decoded "
                        f"(first: {first}): the files are damaged or not images")
    os.replace(imgs.path, out / "images.npy")
    if labs is not None:
        os.replace(labs.path, out / "labels.npy")
    else:
        (out / "labels.npy").unlink(missing_ok=True)
    size = (out / "images.npy").stat().st_size
    manifest = {"format": FORMAT, **info, "resolution": shape[-1], "channels": shape[0], "count": imgs.n,
                "labels": labelled, "sha256": imgs.sha.hexdigest(), "images_bytes": size,
                "images_sample": {"chunks": SAMPLE_CHUNKS, "bytes": SAMPLE_BYTES,
                                  "sha256": sampled_sha256(out / "images.npy", size)}}
    if labs is not None:
        manifest["labels_sha256"] = labs.sha.hexdigest()
    tmp = out / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / "manifest.json")
    return manifest


def prepare_items(src: ItemSource, resolution: int, out: Path, workers: int = 0, quiet: bool = False,
                  fingerprint: str | None = None) -> dict[str, Any]:
    """Decode every item of ``src`` into ``out`` with worker processes; damaged images are skipped and counted."""
    check_resolution(resolution)
    n = len(src.items)
    fingerprint = fingerprint or src.items.fingerprint()
    tasks = [(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]
    workers = min(_workers(workers), len(tasks))
    if workers > 1 and hasattr(src.items, "close"):
        src.items.close()  # open database handles must not cross a fork
    skipped: list[tuple[int, str]] = []

    def chunks():
        with tqdm(total=n, desc=f"prepare {src.name}", unit="img", disable=quiet, file=sys.stderr,
                  mininterval=0.5) as bar:
            for x, kept, bad in _pool_map(_decode_range, tasks, workers, (src, resolution)):
                skipped.extend(bad)
                bar.update(len(kept) + len(bad))
                yield x, (None if src.labels is None else src.labels[kept])

    listed = list(getattr(src.items, "skipped", []))  # what the folder listing left out, with its reason

    def meta():
        why = [(src.items.describe(i), msg) for i, msg in sorted(skipped)] + listed
        reasons: dict[str, int] = {}
        for _, msg in why:
            kind = msg.split(":")[0].split(" (")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        return {"source": src.name, "params": {"crop": src.crop, **src.params}, "fingerprint": fingerprint,
                "num_classes": len(src.class_names), "class_names": src.class_names, "skipped": len(why),
                "skipped_reasons": reasons, "skipped_items": [f"{r} ({msg})" for r, msg in why[:SHOWN_SKIPS]],
                "skipped_index": sorted(i for i, _ in skipped)}

    manifest = _write(out, chunks(), (3, resolution, resolution), src.labels is not None, meta)
    if manifest["skipped"] and not quiet:
        print(f"warning: skipped {manifest['skipped']} unreadable image(s) of {n + len(listed)} (first: "
              f"{manifest['skipped_items'][0]}); {manifest['count']} kept in {out}", file=sys.stderr)
    return manifest


def prepare_arrays(name: str, batches: Iterable[tuple[np.ndarray, np.ndarray | None]], channels: int,
                   resolution: int, out: Path, class_names: list[str], labelled: bool, params: dict[str, Any],
                   fingerprint: str, quiet: bool = False, total: int | None = None) -> dict[str, Any]:
    """Resize already-decoded uint8 batches (IDX, CIFAR, ImageNet npz) into ``out``."""
    check_resolution(resolution)

    def chunks():
        with tqdm(total=total, desc=f"prepare {name}", unit="img", disable=quiet, file=sys.stderr,
                  mininterval=0.5) as bar:
            for x, y in batches:
                for i in range(0, len(x), 4096):
                    part = resize_uint8(torch.from_numpy(np.ascontiguousarray(x[i:i + 4096])), resolution).numpy()
                    bar.update(len(part))
                    yield part, (None if y is None else y[i:i + 4096])

    meta = {"source": name, "params": params, "fingerprint": fingerprint, "num_classes": len(class_names),
            "class_names": class_names, "skipped": 0, "skipped_items": [], "skipped_index": []}
    return _write(out, chunks(), (channels, resolution, resolution), labelled, lambda: meta)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


_MANIFEST = {"count": int, "channels": int, "resolution": int, "labels": bool, "num_classes": int, "class_names": list,
             "source": str, "skipped_index": list}  # what open_prepared reads, and its type


def open_prepared(folder: Path, origin: ItemSource | None = None) -> ImageDataset:
    """A prepared folder as an ImageDataset whose images are memory-mapped (pages load on first touch)."""
    m = read_manifest(folder)
    if m is None:
        raise DataError(f"{folder} is not a prepared dataset (no complete manifest.json): run `fastgan data prepare "
                        f"SOURCE --resolution R --out {folder}`")
    bad = next((k for k, kind in _MANIFEST.items()
                if not isinstance(m.get(k), kind) or (kind is int and isinstance(m.get(k), bool))), None)
    if bad:
        raise DataError(f"{folder}/manifest.json is damaged (its '{bad}' is {m.get(bad)!r:.30}): run `fastgan data "
                        f"prepare` again into {folder}")
    shape = (m["count"], m["channels"], m["resolution"], m["resolution"])
    check_images(folder, m)
    try:
        x = np.load(folder / "images.npy", mmap_mode="c")  # copy-on-write: writable for torch, never written back
        y = np.load(folder / "labels.npy") if m["labels"] else None
        if y is not None and m.get("labels_sha256") and _data_sha256(folder / "labels.npy") != m["labels_sha256"]:
            raise ValueError("labels.npy changed since it was prepared")  # small: hashed in full on every load
    except (OSError, ValueError) as e:
        raise DataError(f"{folder} is damaged ({e}): run `fastgan data prepare` again") from None
    if x.shape != shape or x.dtype != np.uint8 or (y is not None and y.shape != (m["count"],)):
        raise DataError(f"{folder}/images.npy holds {x.dtype} {x.shape}, the manifest says uint8 {shape}: the folder "
                        "is damaged, run `fastgan data prepare` again")
    if y is not None and len(y) and m["num_classes"] and not (y.dtype.kind in "iu" and 0 <= y.min()
                                                               and y.max() < m["num_classes"]):
        raise DataError(f"{folder}/labels.npy holds labels outside 0..{m['num_classes'] - 1} (or not integers): the "
                        "folder is damaged, run `fastgan data prepare` again")
    if origin is not None and m["skipped_index"]:
        origin = origin.subset(np.setdiff1d(np.arange(len(origin.items)), m["skipped_index"]))
    return ImageDataset(torch.from_numpy(x), None if y is None else torch.from_numpy(y.astype(np.int64)),
                        m["num_classes"], list(m["class_names"]), m["source"], origin)


def _changed(folder: Path, what: str) -> DataError:
    return DataError(f"{folder}/images.npy {what} since `fastgan data prepare` wrote it: the folder was edited or "
                     f"damaged, run `fastgan data prepare` again into {folder}")


def check_images(folder: Path, m: dict[str, Any]) -> None:
    """The cheap check of every load: the file's size, and its sampled hash when the manifest has one (manifests
    of older fastgan versions lack it: their size is checked against the header and count instead)."""
    path = folder / "images.npy"
    try:
        for f in (path, folder / "labels.npy") if m.get("labels") else (path,):
            if not stat.S_ISREG(os.stat(f).st_mode):  # a FIFO would block the first read forever
                raise _changed(folder, f"({f.name}) is not a regular file")
        size = path.stat().st_size
        if "images_bytes" not in m:
            with open(path, "rb") as f:
                _skip_header(f)
                expected = f.tell() + int(m["count"]) * int(m["channels"]) * int(m["resolution"]) ** 2
            if size != expected:
                raise _changed(folder, f"is {size} bytes, its header and manifest say {expected},")
            return
        if size != m["images_bytes"]:
            raise _changed(folder, f"is {size} bytes, not the {m['images_bytes']} recorded,")
        sample = m.get("images_sample") or {}
        if sample and sampled_sha256(path, size, sample["chunks"], sample["bytes"]) != sample["sha256"]:
            raise _changed(folder, "has changed (its sampled hash differs from manifest.json)")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{folder} is damaged ({type(e).__name__}: {e}): run `fastgan data prepare` again") from None


def verify_prepared(folder: Path) -> list[str]:
    """The full check of ``fastgan data verify``: the problems found (an empty list when the folder is intact)."""
    m = read_manifest(folder)
    if m is None:
        raise DataError(f"{folder} is not a prepared dataset (no complete manifest.json): run `fastgan data prepare "
                        f"SOURCE --resolution R --out {folder}`")
    problems = []
    try:
        check_images(folder, m)
    except DataError as e:
        problems.append(str(e))
    checks = [("images.npy", m.get("sha256"))]
    if m.get("labels"):
        checks.append(("labels.npy", m.get("labels_sha256")))
    for name, want in checks:
        try:
            got = _data_sha256(folder / name)
        except (OSError, ValueError) as e:
            problems.append(f"{folder}/{name} cannot be read ({e})")
            continue
        if want is not None and got != want:
            problems.append(f"{folder}/{name} has sha256 {got[:16]}..., manifest.json records {want[:16]}...")
    return problems
