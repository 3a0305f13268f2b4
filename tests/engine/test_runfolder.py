"""Run-folder safety: the lock, whole log lines, disk full, stale temp files (issue 11)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastgan.cli import main
from fastgan.engine import runfolder
from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
from fastgan.engine.runfolder import RunFolderBusy, RunLock

TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16",
        "--set", "train.log_every=1", "--set", "train.sample_every=1000", "--set", "train.ckpt_every=2",
        "--set", "train.grid_size=10", "--batch-size", "16", "--quiet"]


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastgan: error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != runfolder.LOCK_NAME}


# -- the lock -------------------------------------------------------------------------------------

def test_lock_refuses_a_second_holder_naming_its_pid(tmp_path):
    with RunLock(tmp_path / "run") as first:
        assert first.previous is None
        assert runfolder.is_busy(tmp_path / "run")
        with pytest.raises(RunFolderBusy, match=f"in use by another trainer \\(PID {os.getpid()} on "):
            RunLock(tmp_path / "run").acquire()  # flock is per open file: a second open conflicts, same process too
    assert not runfolder.is_busy(tmp_path / "run")
    with RunLock(tmp_path / "run") as again:
        assert again.previous is None  # a clean release leaves no holder behind


def test_lock_of_a_killed_trainer_is_taken_over(tmp_path):
    """flock dies with its process: SIGKILL leaves the file, not the lock; the next trainer names the dead one."""
    code = ("import sys, time; from fastgan.engine.runfolder import RunLock; "
            f"RunLock({str(tmp_path / 'run')!r}).acquire(); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"PID {holder.pid} on .*kill {holder.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path / "run") as lock:
        assert lock.previous["pid"] == holder.pid


def test_default_run_folder_skips_one_a_live_trainer_holds(tmp_path):
    from fastgan.engine.loop import _default_out

    assert _default_out("digits-cdcgan") == Path("runs/digits-cdcgan")  # tests run in their own folder
    with RunLock(Path("runs/digits-cdcgan")):  # a trainer that has not written anything yet
        assert _default_out("digits-cdcgan") == Path("runs/digits-cdcgan-2")


@pytest.mark.slow
def test_second_trainer_on_a_busy_folder_refuses_and_nothing_mixes(tmp_path):
    """Two real `fastgan train --out same`: the second exits 2 naming the first's PID; the first's run is
    untouched (one log, strictly increasing steps) and it stops on SIGTERM with its checkpoint."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "fastgan", "train", "--out", str(run), "--steps", "100000", *TINY]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 1):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]  # one line
        assert f"is in use by another trainer (PID {first.pid} on " in second.stderr
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, err
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))
    last = list_checkpoints(run)[-1]
    assert load_checkpoint(last)["step"] == steps[-1] and str(last) in err


# -- leftovers ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_stale_temp_files_are_removed_on_the_next_start(capsys, tmp_path):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--out", run, "--steps", 2, *TINY)[0] == 0
    stale = [run / "checkpoints" / ".step-0000004.pt.k2j4h1.tmp", run / ".best.pt.x8a.tmp",
             run / ".metrics.jsonl.q1.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 300_000)  # what SIGKILL mid-write leaves
    mine = run / "checkpoints" / ".notes.tmp"  # not a name fastgan writes: left alone
    mine.write_text("keep")
    rc, err = cli(capsys, "train", "--out", run, "--steps", 4, "--resume", "auto", *TINY[:-1])
    assert rc == 0, err
    assert not any(p.exists() for p in stale) and mine.read_text() == "keep"
    assert "removed 3 temp file(s) (0.9 MB) left by an interrupted write" in err
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002.pt", "step-0000004.pt"]


# -- logs: whole lines --------------------------------------------------------------------------

def test_append_line_cut_short_by_a_full_disk_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    runfolder.append_line(log, json.dumps({"step": 1}))
    before = log.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the kernel writes what fits and reports the rest short
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(runfolder.DiskFull, match="disk full writing .*metrics.jsonl"):
        runfolder.append_line(log, json.dumps({"step": 2, "d_loss": 0.5}))
    monkeypatch.undo()
    assert log.read_bytes() == before
    runfolder.append_line(log, json.dumps({"step": 2}))
    assert runfolder.read_jsonl(log) == ([{"step": 1}, {"step": 2}], 0)


def test_resume_drops_a_torn_last_log_line(capsys, tmp_path):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--out", run, "--steps", 2, *TINY)[0] == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "d_loss": 0.69')  # a line a full disk or a power cut cut short
    rows, torn = runfolder.read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and torn == 1  # readers skip it
    rc, err = cli(capsys, "train", "--out", run, "--steps", 4, "--resume", "auto", *TINY)
    assert rc == 0, err
    assert "dropped 1 unreadable line(s)" in err
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]  # every line parses
    assert steps == [1, 2, 3, 4]


# -- disk full ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_checkpoint_on_a_full_disk_simulated(capsys, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert cli(capsys, "train", "--out", run, "--steps", 2, *TINY)[0] == 0
    good = run / "checkpoints" / "step-0000002.pt"
    size = good.stat().st_size
    real_write = os.write

    def full_for_big_files(fd, data):  # log lines still fit; a checkpoint does not
        if len(data) > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_big_files)
    rc, err = cli(capsys, "train", "--out", run, "--steps", 4, "--resume", "auto", *TINY)
    monkeypatch.undo()
    line = one_error_line(err)
    assert rc == 2
    assert f"disk full writing {run / 'checkpoints' / 'step-0000004.pt'} (" in line
    assert f"{runfolder.megabytes(size)} needed" in line  # the payload's size: same model, same size
    assert f"the last checkpoint {good} is intact" in line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000002.pt"]  # no temp file left
    assert load_checkpoint(good)["step"] == 2


def _mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {proc.stderr.strip()}")


def test_checkpoint_on_a_real_full_tmpfs(capsys, tmp_path):
    """A 1 MiB tmpfs holds one tiny checkpoint (~0.6 MB) and not the temp file of the next."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        run = disk / "run"
        rc, err = cli(capsys, "train", "--out", run, "--steps", 4, *TINY)
        line = one_error_line(err)
        assert rc == 2
        first = run / "checkpoints" / "step-0000002.pt"
        assert f"disk full writing {run / 'checkpoints' / 'step-0000004.pt'} (" in line
        assert f"{runfolder.megabytes(first.stat().st_size)} needed" in line
        assert f"the last checkpoint {first} is intact" in line
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000002.pt"]
        assert load_checkpoint(first)["step"] == 2
        assert all(json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines())
        w = torch.load(first, weights_only=True)["models"]["G"]
        assert all(torch.isfinite(t).all() for t in w.values() if t.is_floating_point())
    finally:
        subprocess.run(["umount", str(disk)], check=False)
