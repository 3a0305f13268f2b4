"""Where fastgan looks for data and keeps caches: one rule for every module.

- data: ``data.root`` when set, else ``$FASTGAN_DATA/<folder>``, else ``./data/<folder>``;
- caches (decoded datasets, Inception weights, reference statistics, classifiers): ``data.cache_dir`` /
  an explicit folder when given, else ``$FASTGAN_CACHE``, else ``$XDG_CACHE_HOME/fastgan``, else
  ``~/.cache/fastgan``.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Where datasets live when ``data.root`` is empty: $FASTGAN_DATA, else ./data."""
    return Path(os.environ.get("FASTGAN_DATA") or "data")


def resolve_root(root: str, folder: str) -> Path:
    """A dataset's folder: ``root`` when given, else ``data_home()/folder``."""
    return Path(root).expanduser() if root else data_home() / folder


def cache_home(cache_dir: str | os.PathLike = "") -> Path:
    """The cache folder: ``cache_dir`` when given, else $FASTGAN_CACHE, else $XDG_CACHE_HOME/fastgan, else
    ~/.cache/fastgan."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("FASTGAN_CACHE"):
        return Path(os.environ["FASTGAN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastgan"
