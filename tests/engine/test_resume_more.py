"""Resume when things went wrong: unreadable newest checkpoints, pruning, a finished run, the instance-noise
schedule, the divergence advice followed literally, and what a run says when it starts (issues 11, 17)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

import fastgan.losses
from fastgan.cli import main
from fastgan.config import load_config
from fastgan.engine import loop
from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
from fastgan.engine.loop import Trainer, train
from fastgan.errors import TrainingDiverged

TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
        "train.log_every": "2", "train.sample_every": "1000", "train.ckpt_every": "2", "train.grid_size": "10"}
TINY_ARGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")] + ["--quiet"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run(out: Path, steps: int, resume: str | None = None, **extra: str):
    return train(load_config(None, {**TINY, **extra, "train.steps": str(steps), "train.out": str(out)}),
                 resume=resume, quiet=True)


def state_of(path: Path) -> dict:
    """G, D, the EMA, both optimizers and every RNG state of a checkpoint: what bit-exact resume compares."""
    ckpt = load_checkpoint(path)
    assert ckpt["models"]["G_ema"] is not None
    return {k: ckpt[k] for k in ("models", "optim", "rng")}


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


# -- unreadable checkpoints --------------------------------------------------------------------

@pytest.mark.slow
def test_unreadable_newest_checkpoints_are_moved_aside_and_the_run_continues(capsys, tmp_path):
    out = tmp_path / "r"
    run(out, 6)  # step-2, -4, -6 (keep 3)
    ck = out / "checkpoints"
    truncate(ck / "step-0000004.pt")
    truncate(ck / "step-0000006.pt")
    cut = (ck / "step-0000006.pt").read_bytes()
    res = run(out, 10, resume="auto")
    err = capsys.readouterr().err
    assert "checkpoint " + str(ck / "step-0000006.pt") + " is unreadable: moved aside to" in err
    assert f"resuming from {ck / 'step-0000002.pt'}" in err
    assert res.step == 10 and res.checkpoint == ck / "step-0000010.pt" and res.checkpoint.is_file()
    assert [p.name for p in list_checkpoints(out)] == ["step-0000006.pt", "step-0000008.pt", "step-0000010.pt"]
    assert all(load_checkpoint(p)["step"] == int(p.stem[5:]) for p in list_checkpoints(out))
    assert (ck / "step-0000006.pt.corrupt").read_bytes() == cut  # kept for inspection, nothing deleted


def test_pruning_never_keeps_an_unreadable_checkpoint_instead_of_a_readable_one(capsys, tmp_path):
    """A damaged higher-numbered file (here beside a run resumed from an explicit path) must not count as
    one of the kept checkpoints: before, each fresh checkpoint was deleted in its favour."""
    out = tmp_path / "r"
    run(out, 4, **{"train.keep_checkpoints": "2"})
    (out / "checkpoints" / "step-0000100.pt").write_bytes(b"PK\x03\x04 cut here")
    res = run(out, 8, resume=str(out / "checkpoints" / "step-0000004.pt"), **{"train.keep_checkpoints": "2"})
    assert res.checkpoint.is_file() and load_checkpoint(res.checkpoint)["step"] == 8
    assert [p.name for p in list_checkpoints(out)] == ["step-0000006.pt", "step-0000008.pt"]
    assert (out / "checkpoints" / "step-0000100.pt.corrupt").read_bytes() == b"PK\x03\x04 cut here"
    assert "unreadable checkpoint moved aside to" in capsys.readouterr().err


def test_resume_auto_with_only_unreadable_checkpoints_refuses_instead_of_starting_over(capsys, tmp_path):
    out = tmp_path / "r"
    run(out, 4)
    for p in list_checkpoints(out):
        truncate(p)
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    metrics = (out / "metrics.jsonl").read_bytes()
    for argv in (["--resume", "auto"], ["digits-cdcgan", "--resume", "auto"]):  # from the checkpoint / a preset
        rc, _, err = cli(capsys, "train", "--out", out, "--steps", 6, *argv, *TINY_ARGS)
        assert rc == 2
        assert err.strip().splitlines() == [(
            f"fastgan: error: --resume auto found no readable checkpoint in {out / 'checkpoints'} "
            "(step-0000004.pt, step-0000002.pt: truncated or corrupt): move them out of that folder to start the "
            "run again, or pass --resume PATH to a good copy")]
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before
    assert (out / "metrics.jsonl").read_bytes() == metrics


# -- a finished run ----------------------------------------------------------------------------

def test_resuming_a_finished_run_with_fewer_steps_says_so_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "r"
    run(out, 4)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    rc, stdout, err = cli(capsys, "train", "--out", out, "--resume", "auto", "--steps", 2, *TINY_ARGS)
    assert rc == 0
    assert err.strip().splitlines() == [(
        f"fastgan: run {out} is already at step 4 and train.steps is 2: nothing trained, nothing written; "
        "pass --steps above 4 to continue it")]
    assert json.loads(stdout)["step"] == 4
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files  # config.json included
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 4


# -- instance noise --------------------------------------------------------------------------

@pytest.mark.slow
def test_instance_noise_schedule_is_the_runs_own_and_resume_with_more_steps_is_bit_identical(tmp_path, weight_diff):
    """instance_noise_steps=0 means the run's train.steps when it was created (6 here); a resume that raises
    --steps to 10 keeps annealing over 6 steps, exactly like an uninterrupted 10-step run told 6."""
    noise = {"loss.instance_noise": "0.3", "optim.ema_decay": "0.9", "optim.ema_start": "1"}
    straight = run(tmp_path / "a", 10, **noise, **{"loss.instance_noise_steps": "6"})
    run(tmp_path / "b", 6, **noise)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["loss"]["instance_noise_steps"] == 6
    resumed = run(tmp_path / "b", 10, resume="auto", **noise)
    assert resumed.step == 10
    assert load_checkpoint(resumed.checkpoint)["config"]["loss"]["instance_noise_steps"] == 6
    assert json.loads((tmp_path / "b" / "config.json").read_text())["loss"]["instance_noise_steps"] == 6
    assert weight_diff.mismatched(state_of(straight.checkpoint), state_of(resumed.checkpoint)) == []


def test_noise_actually_anneals_over_the_stored_span(tmp_path):
    cfg = load_config(None, {**TINY, "loss.instance_noise": "0.4", "train.steps": "8"})
    t = Trainer(cfg, tmp_path / "r")
    assert t.cfg.loss.instance_noise_steps == 8
    t.state.step = 2
    assert t.noise_std() == pytest.approx(0.3)


# -- divergence ------------------------------------------------------------------------------

def _poison_d_loss(monkeypatch, after_calls: int) -> None:
    d_loss, g_loss = fastgan.losses.LOSSES["ns"]
    calls = {"n": 0}

    def poisoned(real, fake, smoothing=0.0):
        calls["n"] += 1
        loss = d_loss(real, fake, smoothing)
        return loss * float("nan") if calls["n"] > after_calls else loss

    monkeypatch.setitem(fastgan.losses.LOSSES, "ns", (poisoned, g_loss))


@pytest.mark.slow
def test_divergence_advice_works_when_followed_literally(capsys, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    _poison_d_loss(monkeypatch, 5)  # diverges in step 6
    rc, _, err = cli(capsys, "train", "--steps", 10, "--out", out, *TINY_ARGS)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step-0000004.pt'}" in err
    command = re.search(r"continue from it with lower learning rates: (fastgan train .*?) \(or add", err).group(1)
    argv = shlex.split(command)
    assert argv[:2] == ["fastgan", "train"] and "--resume" in argv
    monkeypatch.undo()  # the cause is gone; now do exactly what the message said
    rc, stdout, err = cli(capsys, *argv[1:])
    assert rc == 0, err
    assert "fastgan: changed on resume: optim.g_lr: 0.0002 -> 0.0001; optim.d_lr: 0.0002 -> 0.0001\n" in err
    result = json.loads(stdout)
    assert result["step"] == 10
    ckpt = load_checkpoint(result["checkpoint"])
    assert [g["lr"] for g in ckpt["optim"]["G"]["param_groups"]] == [1e-4]  # the new rates are in effect
    assert [g["lr"] for g in ckpt["optim"]["D"]["param_groups"]] == [1e-4]
    assert ckpt["config"]["optim"]["g_lr"] == 1e-4 and ckpt["config"]["model"]["g_width"] == 8


def test_a_checkpoint_with_inf_batchnorm_statistics_is_never_written_or_called_good(tmp_path, monkeypatch):
    """Losses stay finite (train-mode BatchNorm uses batch statistics) while a running variance is inf."""
    step = Trainer.train_one

    def train_one(self):
        out = step(self)
        if self.state.step == 3:
            bn = next(m for m in self.state.D.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return out

    monkeypatch.setattr(Trainer, "train_one", train_one)
    with pytest.raises(TrainingDiverged, match=r"D .*running_var became NaN/inf by step 4; .*last good checkpoint "
                       r"is .*step-0000002\.pt"):
        run(tmp_path / "r", 6)
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000002.pt"]


# -- what a run says when it starts (issue 17) ---------------------------------------------------

@pytest.mark.slow
def test_run_header_says_what_runs_and_quiet_silences_it(capsys, tmp_path):
    out = tmp_path / "r"
    loud = [a for a in TINY_ARGS if a != "--quiet"]
    rc, _, err = cli(capsys, "train", "--out", out, "--steps", 2, *loud)
    assert rc == 0
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("fastgan: ")]
    assert lines[:5] == [
        f"fastgan: run folder {out} (new run, training to step 2)",
        lines[1], "fastgan: data: digits, 1,797 images, 10 classes", lines[3], "fastgan: step: eager fp32"]
    assert re.fullmatch(r"fastgan: device: CPU .+ \(\d+ cores\)", lines[1])
    g = sum(p.numel() for p in loop.Trainer(load_config(None, {**TINY}), tmp_path / "x").state.G.parameters())
    assert re.fullmatch(rf"fastgan: model: G {g:,} parameters, D [\d,]+ parameters", lines[3])
    rc, _, err = cli(capsys, "train", "--out", out, "--steps", 4, "--resume", "auto", *loud)
    assert rc == 0
    assert f"fastgan: run folder {out} (resumed from {out / 'checkpoints' / 'step-0000002.pt'} at step 2, " \
           "training to step 4)" in err
    assert "fastgan: changed on resume: train.steps: 2 -> 4\n" in err
    rc, _, err = cli(capsys, "train", "--out", out, "--steps", 6, "--resume", "auto", *TINY_ARGS)
    assert rc == 0 and err == ""


def test_resume_auto_that_finds_nothing_says_a_new_run_starts_even_when_quiet(capsys, tmp_path):
    rc, _, err = cli(capsys, "train", "--out", tmp_path / "typo", "--steps", 2, "--resume", "auto", *TINY_ARGS)
    assert rc == 0
    assert err.strip().splitlines() == [f"fastgan: NOTE: no checkpoint in {tmp_path / 'typo'}: starting a NEW run"]


def test_loss_curve_is_redrawn_with_every_sample_grid(tmp_path, monkeypatch):
    drawn = []
    real = loop.plot_losses

    def plot(metrics, out):
        real(metrics, out)
        drawn.append((max(json.loads(ln)["step"] for ln in metrics.read_text().splitlines()), out.is_file()))

    monkeypatch.setattr(loop, "plot_losses", plot)
    run(tmp_path / "r", 4, **{"train.sample_every": "2"})
    grids = sorted(p.name for p in (tmp_path / "r" / "samples").glob("step-*.png"))
    assert grids == ["step-0000002.png", "step-0000004.png"]
    assert drawn[:2] == [(2, True), (4, True)]  # one loss curve per grid, drawn right then
