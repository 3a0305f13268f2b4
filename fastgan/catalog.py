"""What each data source is, without importing its reader (no torch, numpy or Pillow): the folder it is read
from, its channels and classes where they are fixed, and how to get it. ``fastgan data list`` and
``fastgan train --dry-run`` read it; tests/test_first_hour.py checks it against the readers in fastgan.data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastgan.paths import data_home

BUNDLED, DOWNLOAD, MANUAL, YOURS = "bundled", "download", "manual", "your files"


@dataclass(frozen=True)
class Entry:
    folder: str  # folder under the data home ("" = no folder: bundled, or data.root names it)
    channels: int  # 0 = depends on the files
    classes: int  # 0 = unlabelled or depends on the settings/files
    get: str  # BUNDLED | DOWNLOAD (`fastgan data download`) | MANUAL (no checksummed link) | YOURS (data.root)
    decoded: bool = False  # decoded once into a cache under $FASTGAN_CACHE


_EMNIST = {"letters": 26, "digits": 10, "mnist": 10, "balanced": 47, "bymerge": 47, "byclass": 62}
_LSUN = ("bedroom", "bridge", "church-outdoor", "classroom", "conference-room", "dining-room", "kitchen",
         "living-room", "restaurant", "tower")

SOURCES: dict[str, Entry] = {
    "digits": Entry("", 1, 10, BUNDLED),
    "mnist": Entry("mnist", 1, 10, DOWNLOAD),
    "fashion-mnist": Entry("fashion_mnist", 1, 10, DOWNLOAD),
    **{f"emnist-{k}": Entry("emnist", 1, n, DOWNLOAD) for k, n in _EMNIST.items()},
    "cifar10": Entry("cifar10", 3, 10, DOWNLOAD),
    "cifar100": Entry("cifar100", 3, 100, DOWNLOAD),
    "celeba": Entry("celeba", 3, 0, MANUAL, decoded=True),  # data.attribute=Smiling gives 2 classes
    "lsun": Entry("lsun", 3, 0, MANUAL, decoded=True),  # data.categories: one class per category
    "lsun-church": Entry("lsun", 3, 0, MANUAL, decoded=True),
    **{f"lsun-{c}": Entry("lsun", 3, 0, MANUAL, decoded=True) for c in _LSUN},
    "imagenet32": Entry("imagenet32", 3, 1000, MANUAL, decoded=True),
    "imagenet64": Entry("imagenet64", 3, 1000, MANUAL, decoded=True),
    "folder": Entry("", 3, 0, YOURS, decoded=True),  # data.class_folders=true: one class per sub-folder
    "prepared": Entry("", 0, 0, YOURS),  # a `fastgan data prepare` folder: its manifest says
}


def fixed_shape(name: str, cfg_data) -> tuple[int, int] | None:
    """(channels, classes) of a source when they follow from its name and settings alone, else None."""
    e = SOURCES.get(name)
    if e is None or not e.channels:
        return None
    if name == "celeba":
        return 3, 2 if cfg_data.attribute else 0
    if e.decoded and not name.startswith("imagenet"):
        return None  # folder sub-folders and lsun categories: the files say
    return e.channels, e.classes


def where(name: str, root: str = "") -> Path | None:
    """The folder a source is read from (None: bundled, or only ``data.root`` names it)."""
    e = SOURCES[name]
    if root:
        return Path(root).expanduser()
    return data_home() / e.folder if e.folder else None


def present(name: str, root: str = "") -> bool:
    """Whether the source's folder exists and holds something (bundled sources always are)."""
    if SOURCES[name].get == BUNDLED:
        return True
    p = where(name, root)
    return p is not None and p.is_dir() and any(os.scandir(p))


def root_hint(folder: str) -> str:
    """How to point any command at a dataset's files: $FASTGAN_DATA works everywhere (`fastgan fid` has no --set)."""
    return (f"point $FASTGAN_DATA at the folder that holds {folder}/ (or give `fastgan train` --set data.root=DIR, "
            "`fastgan classifier train` --root DIR)")
