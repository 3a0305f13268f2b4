"""N steps + resume + M steps is bit-identical to N + M steps uninterrupted (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgan.config import load_config
from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
from fastgan.engine.loop import train

SCHEDULE = {"train.log_every": "3", "train.sample_every": "5", "train.ckpt_every": "4", "train.grid_size": "10"}

VARIANTS = {
    "cdcgan-stabilisers": {"optim.ema_decay": "0.9", "optim.ema_start": "2", "loss.instance_noise": "0.1", "loss.instance_noise_steps": "8",
                           "model.d_dropout": "0.2", "loss.label_smoothing": "0.1"},
    "acgan-wgan-gp": {"model.conditioning": "acgan", "model.d_norm": "none", "loss.kind": "wgan-gp",
                      "optim.n_critic": "2"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_is_bit_identical(variant, tmp_path: Path, tiny, weight_diff):
    ov = {**tiny, **SCHEDULE, **VARIANTS[variant]}
    straight = train(load_config(None, {**ov, "train.steps": "10", "train.out": str(tmp_path / "a")}), quiet=True)
    first = train(load_config(None, {**ov, "train.steps": "6", "train.out": str(tmp_path / "b")}), quiet=True)
    assert first.step == 6
    resumed = train(load_config(None, {**ov, "train.steps": "10", "train.out": str(tmp_path / "b")}),
                    resume="auto", quiet=True)
    assert resumed.step == 10
    a, b = (load_checkpoint(r.checkpoint) for r in (straight, resumed))
    a, b = ({k: ckpt[k] for k in ("models", "optim", "rng")} for ckpt in (a, b))
    assert len(weight_diff.flat(a)) > 20
    mismatched = weight_diff.mismatched(a, b)
    assert not mismatched, mismatched
    # The log of the resumed run continues where the first stopped, without duplicates.
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps)) and steps[-1] == 10


def test_resume_from_explicit_path_and_checkpoint_rotation(tmp_path: Path, tiny):
    ov = {**tiny, **SCHEDULE, "train.keep_checkpoints": "2", "train.ckpt_every": "2", "train.out": str(tmp_path / "r")}
    train(load_config(None, {**ov, "train.steps": "8"}), quiet=True)
    kept = list_checkpoints(tmp_path / "r")
    assert [p.name for p in kept] == ["step-0000006.pt", "step-0000008.pt"]
    res = train(load_config(None, {**ov, "train.steps": "9"}), resume=str(kept[0]), quiet=True)
    assert res.step == 9
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp"))  # atomic writes leave no temp files
