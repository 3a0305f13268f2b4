"""A run folder's safety: one trainer at a time, whole files and whole log lines, no temp leftovers,
and a clean stop on SIGTERM/SIGINT.

- ``RunLock``: ``fcntl.flock`` on ``RUN/.lock`` for the run's life. The kernel drops the lock when its
  process dies however it dies, so a lock left by a killed trainer is free for the next one (which then
  reads the dead holder's PID from the file and says so); a live holder makes a second trainer refuse.
- ``write_atomic``: temp file, fsync, rename, fsync of the folder; a full disk is one ``DiskFull`` error
  saying how much space the file needed, and the temp file is gone.
- ``append_line``: one ``os.write`` per log line on an O_APPEND descriptor; a write cut short by a full
  disk is truncated back, so the log never ends in half a line. ``read_jsonl`` skips one anyway (a power
  cut can still leave it).
- ``StopSignals``: the first SIGTERM/SIGINT asks the loop to save at the next step boundary and exit
  128+signal; a second one stops at once (the newest checkpoint is still intact).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastgan.errors import FastganError

LOCK_NAME = ".lock"
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: the file size limit (ulimit -f) is a full disk for one file
# What a run folder holds: these must be folders, those regular files (when present). Checked under the lock,
# before step 1, so a file in the way costs one line, not the run's first checkpoint.
RUN_FOLDERS = ("checkpoints", "samples")
RUN_FILES = ("config.json", "metrics.jsonl", "best.pt", "loss_curve.png")
# Temp files of write_atomic: ".<name>.<random>.tmp" beside the file they become.
_TEMP_RE = re.compile(r"^\.(step-\d+\.pt|best\.pt|config\.json|metrics\.jsonl)\..+\.tmp$")


class RunFolderBusy(FastganError):
    """Another live trainer holds the run folder."""


class RunFolderUnusable(FastganError):
    """The run folder cannot be created or written (a file in the way, read-only filesystem, ...)."""


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _size_limit() -> str:
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else megabytes(soft)


class DiskFull(FastganError):
    """A write ran out of space (``errno`` ENOSPC, EDQUOT) or hit the file size limit (EFBIG: ``ulimit -f``, or
    the filesystem's largest file); ``path`` was not changed (its old version, if any, is intact)."""

    def __init__(self, path: Path, needed: int, err: int = errno.ENOSPC) -> None:
        self.path, self.needed, self.errno = Path(path), needed, err
        try:
            self.free = shutil.disk_usage(self.path.parent).free
        except OSError:
            self.free = 0
        if err == errno.EFBIG:
            super().__init__(f"{self.path} is larger than the file size limit allows ({megabytes(needed)} to write; "
                             f"`ulimit -f` is {_size_limit()}): raise it (`ulimit -f unlimited`) or write to a "
                             "filesystem that holds larger files")
        else:
            super().__init__(f"disk full writing {self.path} ({megabytes(needed)} needed, {megabytes(self.free)} "
                             "free): free space on that disk or pick another --out")


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def write_atomic(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename it over ``path``, fsync the folder.
    Readers see the old file or the new one, never a part; on any failure the temp file is removed."""
    path = Path(path)
    if os.path.isdir(path):  # os.replace would name its temp file, not the folder in the way
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    view = memoryview(data).cast("B")
    try:
        try:
            _write_all(fd, view)
            os.fsync(fd)
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; our files are as readable as any other
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _FULL:
            raise DiskFull(path, len(view), e.errno) from None
        if isinstance(e, OSError) and e.filename == tmp:  # the user knows the file, not our temp name
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


def append_line(path: Path, line: str) -> None:
    """Append one line with a single ``os.write``; on a failed or short write, cut the file back."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            n = os.write(fd, data)
            # a regular file writes short only at a full disk or the file size limit: writing the rest raises the
            # reason (ENOSPC, EFBIG); should it write short again, the disk is full
            if n != len(data) and os.write(fd, data[n:]) != len(data) - n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            try:
                os.ftruncate(fd, size)  # never leave half a line behind
            except OSError:
                pass
            if e.errno in _FULL:
                raise DiskFull(Path(path), len(data), e.errno) from None
            raise
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of a JSON-lines file and how many lines were unreadable (e.g. cut by a full disk or a crash)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for ln in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes ([[[[...)
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def remove_stale_temps(run_dir: Path) -> tuple[int, int]:
    """Delete temp files an interrupted write left (SIGKILL mid-checkpoint); (count, bytes). Only under the lock:
    a live trainer's temp file is never stale."""
    count = size = 0
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if _TEMP_RE.match(p.name) and p.is_file() and not p.is_symlink():
                size += p.stat().st_size
                p.unlink(missing_ok=True)
                count += 1
    return count, size


def move_aside(path: Path) -> Path:
    """Rename an unreadable file to ``<name>.corrupt`` (kept for inspection, out of every listing)."""
    target = path.with_name(path.name + ".corrupt")
    i = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt.{i}")
        i += 1
    os.replace(path, target)
    return target


def _holder(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder ({} when empty or unreadable)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError, RecursionError):
        return {}
    return info if isinstance(info, dict) else {}


def describe_holder(info: dict[str, Any]) -> str:
    return f"PID {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"


class RunLock:
    """Exclusive ownership of a run folder for one process's run. ``previous``: the holder info left in the
    lock file by a trainer that died without releasing it (SIGKILL, power cut), else None."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.previous: dict[str, Any] | None = None

    def acquire(self):
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            what = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
            raise RunFolderUnusable(f"cannot use {self.run_dir} as a run folder ({what}): pick another --out") from None
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(fd)
        except OSError as e:  # a filesystem without locks (some FUSE and network mounts): train, but say so
            print(f"fastgan: warning: cannot lock {self.path} ({e.strerror}): nothing stops a second trainer on "
                  "this folder", file=sys.stderr)
        self.previous = _holder(fd) or None  # released cleanly = emptied; anything left is a dead trainer's
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise RunFolderUnusable(f"cannot write {self.path} ({e.strerror}): free space there or pick another --out"
                                    ) from None
        self.fd = fd
        try:
            check_layout(self.run_dir)
        except BaseException:
            self.release()
            raise
        return self

    def _open(self) -> int:
        """The lock file, never through a symlink or into a file with other names: it is truncated and rewritten,
        which must not empty a file the link or hard link leads to."""
        fix = f"remove it (rm {self.path}) or pick another --out"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunFolderUnusable(f"{self.path} is a symlink, not fastgan's lock file (locking would overwrite "
                                        f"its target): {fix}") from None
            if e.errno == errno.EISDIR:
                raise RunFolderUnusable(f"{self.path} is a folder, not fastgan's lock file: {fix}") from None
            raise RunFolderUnusable(f"cannot use {self.run_dir} as a run folder ({e.strerror} opening "
                                    f"{self.path}): pick another --out") from None
        st = os.fstat(fd)
        problem = ("is not a regular file (a FIFO, device or socket)" if not stat.S_ISREG(st.st_mode)
                   else "has other names (a hard link: locking would overwrite them)" if st.st_nlink > 1 else None)
        if problem:
            os.close(fd)
            raise RunFolderUnusable(f"{self.path} {problem}, not fastgan's lock file: {fix}")
        os.set_blocking(fd, True)
        return fd

    def _refuse(self, fd: int) -> None:
        info: dict[str, Any] = {}
        for _ in range(20):  # the holder writes its details right after locking: give it a moment
            info = _holder(fd)
            if info:
                break
            time.sleep(0.05)
        os.close(fd)
        raise RunFolderBusy(
            f"run folder {self.run_dir} is in use by another trainer ({describe_holder(info)}): "
            f"wait for it to finish, stop it (kill {info.get('pid', '?')}), or pick another --out"
        )

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # a clean release leaves no holder behind
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)  # for every copy of the descriptor, forked workers' included
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_layout(run_dir: Path) -> None:
    """Refuse a run folder whose entries are of the wrong kind (a file named checkpoints, a folder named
    config.json, a FIFO named metrics.jsonl), before any work: each would fail a write mid-run."""
    for name in RUN_FOLDERS:
        p = run_dir / name
        if os.path.lexists(p) and not p.is_dir():
            raise RunFolderUnusable(f"{p} is not a folder (fastgan keeps its {name} there): move it away or pick "
                                    "another --out")
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir():
            raise RunFolderUnusable(f"{p} is a folder where fastgan writes its {name} file: move it away or pick "
                                    "another --out")
        if p.exists() and not p.is_file():  # a FIFO would block the write forever
            raise RunFolderUnusable(f"{p} is not a regular file (a FIFO, device or socket) where fastgan writes its "
                                    f"{name}: move it away or pick another --out")


def is_busy(run_dir: Path) -> bool:
    """True when a live trainer holds ``run_dir``."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class TrainingStopped(Exception):
    """The run stopped on a signal after saving ``checkpoint``; a CLI exits with ``exit_code`` (128 + signal)."""

    def __init__(self, signum: int, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signum, self.checkpoint = signum, checkpoint
        self.exit_code = 128 + signum


class StopSignals:
    """While active (main thread only), SIGTERM and SIGINT set ``signum`` instead of killing the process: the
    loop saves at its next step boundary. A second signal stops at once, as the default action would."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"\nfastgan: second {name}: stopping now without saving (the newest checkpoint is "
                        "intact; --resume auto continues from it)\n".encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        # os.write, not print: a handler may run in the middle of another print to stderr
        os.write(2, f"\nfastgan: {name}: saving a checkpoint after this step (send it again to stop at once)\n"
                 .encode())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
