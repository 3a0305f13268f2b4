"""SIGTERM and SIGINT to a real `python -m fastgan train`: a checkpoint at the next step boundary, where it
is said in one line, exit 143 / 130, and `--resume auto` continues bit-identically (issue 11)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastgan.config import load_config
from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
from fastgan.engine.loop import train
from fastgan.engine.runfolder import StopSignals

TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
        "train.log_every": "1", "train.sample_every": "1000", "train.ckpt_every": "1000", "train.grid_size": "10",
        "optim.ema_decay": "0.9", "loss.instance_noise": "0.1", "loss.instance_noise_steps": "50",
        # the subprocess and the in-process runs must use one thread count: CPU convolutions may round
        # differently with another (an earlier test can leave this process at any count)
        "train.threads": "1"}


def _stop_a_real_trainer(run: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start `fastgan train` for many steps, signal it once it is training, return (exit code, stderr)."""
    argv = [sys.executable, "-m", "fastgan", "train", "--out", str(run), "--steps", "100000", "--quiet"]
    argv += [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=run.parent)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)  # bounded: one step, one checkpoint
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.slow
def test_sigterm_saves_says_where_exits_143_and_resume_is_bit_identical(tmp_path, weight_diff):
    run = tmp_path / "run"
    rc, err = _stop_a_real_trainer(run, signal.SIGTERM)
    assert rc == 143, err
    [saved] = list_checkpoints(run)
    k = load_checkpoint(saved)["step"]
    assert k >= 2
    assert err.strip().splitlines()[-1] == (
        f"fastgan: stopped by SIGTERM at step {k}: saved {saved}; continue with: fastgan train --out {run} --resume auto")
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()][-1] == k
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))
    resumed = train(load_config(None, {**TINY, "train.steps": str(k + 3), "train.out": str(run)}), resume="auto",
                    quiet=True)
    straight = train(load_config(None, {**TINY, "train.steps": str(k + 3), "train.out": str(tmp_path / "straight")}),
                     quiet=True)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    keys = ("models", "optim", "rng")
    assert a["models"]["G_ema"] is not None and len(weight_diff.flat({k: a[k] for k in keys})) > 20
    assert weight_diff.mismatched({k: a[k] for k in keys}, {k: b[k] for k in keys}) == []


@pytest.mark.slow
def test_sigint_saves_and_exits_130(tmp_path):
    run = tmp_path / "run"
    rc, err = _stop_a_real_trainer(run, signal.SIGINT)
    assert rc == 130, err
    [saved] = list_checkpoints(run)
    assert f"fastgan: stopped by SIGINT at step {load_checkpoint(saved)['step']}: saved {saved}" in err


def test_a_second_signal_stops_at_once(tmp_path):
    """Bounded time: a step that never ends (a hung loader, a slow evaluation) still yields to a second signal."""
    code = ("import os, signal, time; from fastgan.engine.runfolder import StopSignals\n"
            "with StopSignals() as stop:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(0.2)\n"
            "    assert stop.signum == signal.SIGTERM\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n"
            "print('still running')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # killed by the signal: a shell reports 143
    assert "still running" not in proc.stdout
    assert "fastgan: SIGTERM: saving a checkpoint after this step" in proc.stderr
    assert "fastgan: second SIGTERM: stopping now without saving" in proc.stderr


def test_stop_signals_defer_the_first_signal_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)  # would end the test process without the handler
        assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
