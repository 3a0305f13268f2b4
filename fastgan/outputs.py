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


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def _broken_link(path: Path) -> str | None:
    """What is wrong with ``path`` when it is a symlink that leads nowhere, else None."""
    if not os.path.islink(path) or os.path.exists(path):
        return None
    if _loops(path):
        return "a symlink loop (it leads back to itself)"
    return f"a broken symlink (its target {os.readlink(path)} does not exist)"


def not_a_folder(path: Path) -> str:
    """What ``path`` (which exists, or is a symlink) is instead of a folder, for an error message."""
    return _broken_link(path) or ("a file, not a folder" if os.path.isfile(path)
                                  else "not a folder (a FIFO, device or socket)")


def _writable_folder(folder: Path, path: Path, what: str) -> None:
    if not folder.is_dir():
        raise ConfigError(f"{what} {path} is below {folder}, which is {not_a_folder(folder)}: choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: {folder} is read-only (permissions or a read-only "
                          "filesystem); choose a writable location")


def _no_nul(path: str | Path, what: str) -> Path:
    if "\0" in str(path):
        raise ConfigError(f"{what} {str(path)!r} contains a NUL character (\\0), which no file name may hold: "
                          "choose another path")
    return Path(path)


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """A file fastgan will create or replace."""
    path = _no_nul(path, what)
    if os.path.islink(path) and _loops(path):  # a broken symlink is fine: the write creates its target
        raise ConfigError(f"{what} {path} is {_broken_link(path)}: remove it or choose another path")
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
    path = _no_nul(path, what)
    if os.path.lexists(path) and not path.is_dir():
        fix = "remove it or choose a folder path" if os.path.islink(path) else "choose a folder path"
        raise ConfigError(f"{what} {path} is {not_a_folder(path)}: {fix}")
    _writable_folder(_existing_ancestor(path), path, what)
    return path


_USER_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EISDIR: "it is a folder",
                errno.ENOTDIR: "a part of the path is a file, not a folder", errno.ENOENT: "no such file or folder",
                errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only filesystem", errno.ENAMETOOLONG: "file name too long",
                errno.EEXIST: "it exists already", errno.ENOTEMPTY: "the folder is not empty",
                errno.EFBIG: "file too large for the file size limit (`ulimit -f`) or the filesystem",
                errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
                errno.EMFILE: "too many open files", errno.ENFILE: "too many open files in the system",
                errno.EBUSY: "the file or device is busy (a mount point, or in use)",
                errno.ETXTBSY: "the file is a running program", errno.ENXIO: "no such device or address (a FIFO with "
                "no reader, or a socket?)", errno.EMLINK: "too many links"}
_FIXES = {errno.ENOSPC: "free some space (or point --out elsewhere) and run again",
          errno.EDQUOT: "free some space (or point --out elsewhere) and run again",
          errno.EFBIG: "raise the limit (`ulimit -f unlimited`) or write to another filesystem, then run again",
          errno.EMFILE: "raise the open-file limit (`ulimit -n 4096`) and run again",
          errno.ENFILE: "close other programs and run again",
          errno.ELOOP: "fix or remove the symlink", errno.EEXIST: "move it away or choose another path"}


def _raised_in_parser(e: BaseException) -> bool:
    """True when ``e`` came out of the json or tomllib parser (so the text it read, not fastgan, is at fault)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return any(f"{os.sep}{pkg}{os.sep}" in name for pkg in ("json", "tomllib", "tomli"))


def user_system_error(e: BaseException) -> str | None:
    """One line for a system error the user can fix (permissions, a full disk, a missing or misplaced path, naming
    the file; memory; a NUL character in a path); None for anything else (a bug, reported as one)."""
    text = str(e).splitlines()[0] if str(e) else ""
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and (
            "out of memory" in text.lower() or "can't allocate memory" in text)):  # torch's CPU and CUDA wording
        return (f"out of memory ({type(e).__name__}: {text[:100]}): ask for less at once (fewer images with -n or "
                "--samples, a smaller --batch-size or model) or free memory")
    if isinstance(e, ValueError) and ("embedded null byte" in text or "embedded null character" in text):
        # what every os call says of a path with a \0 in it (from --out, --set, a config file, ...)
        return ("a path contains a NUL character (\\0), which no file name may hold: check the paths on the command "
                "line and in the config file")
    if isinstance(e, RecursionError) and _raised_in_parser(e):
        return ("a JSON or TOML file is nested too deeply to read (thousands of [ or {): it is damaged or not "
                "fastgan's; check the config file and the run folder's JSON files")
    if not isinstance(e, OSError) or e.errno not in _USER_ERRNOS:
        return None
    name = e.filename if e.filename is not None else "a file"
    what = _USER_ERRNOS[e.errno]
    if e.errno == errno.EEXIST and e.filename is not None and os.path.lexists(e.filename) \
            and not os.path.isdir(e.filename):  # mkdir of a folder where a file is
        what = f"a folder belongs there but it is {not_a_folder(Path(e.filename))}"
    return f"cannot use {name}: {what}: {_FIXES.get(e.errno, 'check the path and its permissions')}"
