"""CIFAR-10 and CIFAR-100 from the official python pickle archive (the .tar.gz or its extracted folder)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from fastgan.catalog import root_hint
from fastgan.data.base import ImageDataset, check_data_folder
from fastgan.errors import DataError
from fastgan.paths import resolve_root

CIFAR_SETS = {
    # name: (folder under the data home, archive, folder inside it, train members, test members, label key,
    #        meta member, class-name key)
    "cifar10": ("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar100", "cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], b"fine_labels",
                 "meta", b"fine_label_names"),
}

# The batches are pickles: load only plain containers and numpy arrays, never arbitrary code.
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 -- any unpickling failure means a damaged or foreign file
        raise DataError(f"{where} is not a CIFAR python batch ({type(e).__name__}: {e}): download it again") from None
    if not isinstance(d, dict):
        raise DataError(f"{where} is not a CIFAR python batch (a {type(d).__name__}, not a dict): download it again")
    return d


def _members(base: Path, name: str, archive: str, inner: str, names: list[str]) -> dict[str, bytes]:
    """The named members, from the extracted folder when present, else from the archive."""
    for folder in (base / inner, base):
        if all((folder / n).is_file() for n in names):
            return {n: (folder / n).read_bytes() for n in names}
    tar_path = base / archive
    if not tar_path.is_file():
        raise DataError(
            f"neither {archive} nor its folder {inner}/ is in {base}: run `fastgan data download {name} --root {base}` "
            "or put the official archive there"
        )
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for m in tar:
                n = m.name.rsplit("/", 1)[-1]
                if n in names and m.isfile():
                    out[n] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tar_path} is truncated or corrupt ({e}): download it again") from None
    missing = [n for n in names if n not in out]
    if missing:
        raise DataError(f"{tar_path} lacks {', '.join(missing)}: it is truncated or not the official archive")
    return out


def load_cifar_dataset(name: str, root: str = "", split: str = "train") -> ImageDataset:
    folder, archive, inner, train, test, label_key, meta, names_key = CIFAR_SETS[name]
    base = resolve_root(root, folder)
    check_data_folder(base, name, f"run `fastgan data download {name} --root {base}`, or {root_hint(base.name)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}' for {name}: use train or test")
    wanted = train if split == "train" else test
    raw = _members(base, name, archive, inner, [*wanted, meta])
    xs, ys = [], []
    for n in wanted:
        d = _unpickle(raw[n], f"{archive}:{n}")
        if b"data" not in d or label_key not in d:
            raise DataError(f"{archive}:{n} has no {label_key.decode()} / data entries: it is not a {name} batch")
        x = np.asarray(d[b"data"], dtype=np.uint8)
        y = np.asarray(d[label_key], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
            raise DataError(f"{archive}:{n} holds {x.shape} images and {len(y)} labels, not (N, 3072) and N")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _unpickle(raw[meta], meta)[names_key]]
    return ImageDataset(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), len(classes),
                        classes, name)
