"""LSUN scenes from the official LMDB export (key -> encoded image bytes); several categories become labels."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fastgan.config import DataConfig
from fastgan.data.base import check_data_folder
from fastgan.data.items import ItemSource
from fastgan.errors import DataError
from fastgan.paths import resolve_root

CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room", "kitchen",
              "living_room", "restaurant", "tower")
# dataset name -> category; lsun-church is the DCGAN papers' name for church_outdoor
LSUN_SETS = {f"lsun-{c.replace('_', '-')}": c for c in CATEGORIES} | {"lsun-church": "church_outdoor"}
HOW_TO_GET = ("LSUN has no checksummed direct download: fetch {cat}_{split}_lmdb.zip with the official script "
              "(https://github.com/fyu/lsun, `python download.py -c {cat}`) and unzip it into {root}")


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise DataError("the LSUN source needs the lmdb package: pip install 'fastgan[lmdb]' (or pip install "
                        "lmdb)") from None
    return lmdb


_ENVS: dict[Path, object] = {}  # one handle per database per process (LMDB forbids opening one twice)
_ENV_PID = [os.getpid()]


def _env(db: Path):
    if _ENV_PID[0] != os.getpid():  # a forked child: the parent's handles are not ours to use
        _ENVS.clear()
        _ENV_PID[0] = os.getpid()
    if db not in _ENVS:
        lmdb = _lmdb()
        try:
            _ENVS[db] = lmdb.open(str(db), readonly=True, lock=False, readahead=False, meminit=False)
        except lmdb.Error as e:
            raise DataError(f"{db} is not a readable LMDB database ({e}): unzip the LSUN export again") from None
    return _ENVS[db]


class LmdbItems:
    """Values of one or more LMDB databases, addressed by (database, key)."""

    def __init__(self, dbs: list[Path], keys: list[bytes], db_of: np.ndarray) -> None:
        self.dbs, self.keys, self.db_of = dbs, keys, db_of

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, i: int) -> bytes:
        db = self.dbs[int(self.db_of[i])]
        with _env(db).begin(write=False) as txn:
            raw = txn.get(self.keys[i])
        if raw is None:
            raise KeyError(f"{self.keys[i]!r} vanished from {db}")
        return raw

    def describe(self, i: int) -> str:
        return f"{self.dbs[int(self.db_of[i])].name}:{self.keys[i].decode(errors='replace')}"

    def close(self) -> None:
        """Close this process's handles; done before forking workers, which open their own."""
        for env in _ENVS.values():
            env.close()
        _ENVS.clear()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for d in self.dbs:
            st = (d / "data.mdb").stat()
            h.update(f"{d.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        h.update(str(len(self.keys)).encode())
        return h.hexdigest()


def _keys(db: Path) -> list[bytes]:
    with _env(db).begin(write=False) as txn:
        return list(txn.cursor().iternext(keys=True, values=False))


def _database(root: Path, cat: str, split: str) -> Path:
    if (root / "data.mdb").is_file():  # root is the database itself
        return root
    db = root / f"{cat}_{split}_lmdb"
    if not (db / "data.mdb").is_file():
        raise DataError(f"{db}/data.mdb not found: " + HOW_TO_GET.format(cat=cat, split=split, root=root))
    return db


def lsun_source(cfg: DataConfig, name: str) -> ItemSource:
    if name == "lsun":
        cats = [c.strip().replace("-", "_") for c in cfg.categories.split(",") if c.strip()]
        if not cats:
            raise DataError("dataset 'lsun' combines categories: add --set data.categories=church_outdoor,bedroom "
                            "(or use lsun-church, lsun-bedroom, ...)")
    else:
        cats = [LSUN_SETS[name]]
    bad = [c for c in cats if c not in CATEGORIES]
    if bad:
        raise DataError(f"unknown LSUN category '{bad[0]}': choose from {', '.join(CATEGORIES)}")
    if cfg.split not in ("train", "test", "val"):
        raise DataError(f"unknown split '{cfg.split}' for {name}: use train or test (LSUN's val export)")
    split = "train" if cfg.split == "train" else "val"
    root = resolve_root(cfg.root, "lsun")
    check_data_folder(root, name, HOW_TO_GET.format(cat=cats[0], split=split, root=root))
    dbs = [_database(root, c, split) for c in cats]
    if len(dbs) > 1 and len(set(dbs)) == 1:
        raise DataError(f"data.root {root} is a single LMDB database but {len(cats)} categories were asked for: "
                        "point data.root at the folder holding the <category>_<split>_lmdb folders")
    keys, db_of = [], []
    for i, db in enumerate(dbs):
        k = _keys(db)
        if not k:
            raise DataError(f"{db} holds no images: unzip the LSUN export again")
        keys += k
        db_of += [i] * len(k)
    db_of = np.asarray(db_of, dtype=np.int64)
    labels = db_of.copy() if len(cats) > 1 else None
    return ItemSource(name, LmdbItems(dbs, keys, db_of), labels, cats if len(cats) > 1 else [], cfg.crop,
                      {"categories": cats, "split": split})
