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
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastgan.errors import FastganError

LOCK_NAME = ".lock"
_FULL = (errno.ENOSPC, errno.EDQUOT)
# Temp files of write_atomic: ".<name>.<random>.tmp" beside the file they become.
_TEMP_RE = re.compile(r"^\.(step-\d+\.pt|best\.pt|config\.json|metrics\.jsonl)\..+\.tmp$")


class RunFolderBusy(FastganError):
    """Another live trainer holds the run folder."""


class RunFolderUnusable(FastganError):
    """The run folder cannot be created or written (a file in the way, read-only filesystem, ...)."""


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class DiskFull(FastganError):
    """A write ran out of space; ``path`` was not changed (its old version, if any, is intact)."""

    def __init__(self, path: Path, needed: int) -> None:
        self.path, self.needed = Path(path), needed
        try:
            self.free = shutil.disk_usage(self.path.parent).free
        except OSError:
            self.free = 0
        super().__init__(f"disk full writing {self.path} ({megabytes(needed)} needed, {megabytes(self.free)} free): "
                         "free space on that disk or pick another --out")


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def write_atomic(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, rename it over ``path``, fsync the folder.
    Readers see the old file or the new one, never a part; on any failure the temp file is removed."""
    path = Path(path)
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
            raise DiskFull(path, len(view)) from None
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
            if os.write(fd, data) != len(data):  # a regular file writes short only when the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            try:
                os.ftruncate(fd, size)  # never leave half a line behind
            except OSError:
                pass
            if e.errno in _FULL:
                raise DiskFull(Path(path), len(data)) from None
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
        except ValueError:
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
    except (OSError, ValueError):
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            what = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
            raise RunFolderUnusable(f"cannot use {self.run_dir} as a run folder ({what}): pick another --out") from None
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
        return self

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


def is_busy(run_dir: Path) -> bool:
    """True when a live trainer holds ``run_dir``."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
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
