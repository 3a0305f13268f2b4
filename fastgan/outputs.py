"""Can this output be written? Checked before the work starts, so a bad ``--out`` costs one line, not a run.

Catches a folder where a file belongs (and the reverse), a path below a regular file, and a location that is
not writable (permissions or a read-only filesystem: ``os.access`` asks the kernel, which knows both).
Imports nothing heavy: the CLI calls these before torch is loaded.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fastgan.errors import ConfigError


def _existing_ancestor(path: Path) -> Path:
    """The nearest part of ``path`` that exists (``path`` itself included)."""
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _writable_folder(folder: Path, path: Path, what: str) -> None:
    if not folder.is_dir():
        raise ConfigError(f"{what} {path} is below {folder}, which is a file, not a folder: choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: {folder} is read-only (permissions or a read-only "
                          "filesystem); choose a writable location")


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """A file fastgan will create or replace."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder: give a file name, e.g. {path / 'out'}{path.suffix or ''}")
    if path.exists() and not path.is_file():  # a FIFO would block the write forever
        raise ConfigError(f"{what} {path} is not a regular file (a FIFO, device or socket): choose a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path} is read-only: choose another path")
    _writable_folder(_existing_ancestor(path.parent), path, what)
    return path


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """A folder fastgan will create (with its parents) or write into."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder: choose a folder path")
    _writable_folder(_existing_ancestor(path), path, what)
    return path


_USER_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EISDIR: "it is a folder",
                errno.ENOTDIR: "a part of the path is a file, not a folder", errno.ENOENT: "no such file or folder",
                errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only filesystem", errno.ENAMETOOLONG: "file name too long"}


def user_system_error(e: BaseException) -> str | None:
    """One line for a system error the user can fix (permissions, a full disk, a missing or misplaced path, naming
    the file; memory); None for anything else (a bug, reported as one)."""
    text = str(e).splitlines()[0] if str(e) else ""
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
            "out of memory" in text.lower() or "can't allocate memory" in text)):  # torch's CPU and CUDA wording
        return (f"out of memory ({type(e).__name__}: {text[:100]}): ask for less at once (fewer images with -n or "
                "--samples, a smaller --batch-size or model) or free memory")
    if not isinstance(e, OSError) or e.errno not in _USER_ERRNOS:
        return None
    name = e.filename if e.filename is not None else "a file"
    fix = ("free some space (or point --out elsewhere) and run again" if e.errno in (errno.ENOSPC, errno.EDQUOT)
           else "check the path and its permissions")
    return f"cannot use {name}: {_USER_ERRNOS[e.errno]}: {fix}"
