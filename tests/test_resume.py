"""N steps + resume + M steps is bit-identical to N + M steps uninterrupted (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastgan.config import load_config
from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
from fastgan.engine.loop import train

TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
        "train.log_every": "3", "train.sample_every": "5", "train.ckpt_every": "4", "train.grid_size": "10"}

VARIANTS = {
    "cdcgan-stabilisers": {"optim.ema_decay": "0.9", "optim.ema_start": "2", "loss.instance_noise": "0.1", "loss.instance_noise_steps": "8",
                           "model.d_dropout": "0.2", "loss.label_smoothing": "0.1"},
    "acgan-wgan-gp": {"model.conditioning": "acgan", "model.d_norm": "none", "loss.kind": "wgan-gp",
                      "optim.n_critic": "2"},
}


def _flat(ckpt: dict) -> dict[str, torch.Tensor]:
    out = {}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)

    walk("", {k: ckpt[k] for k in ("models", "optim", "rng")})
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_is_bit_identical(variant, tmp_path: Path):
    ov = {**TINY, **VARIANTS[variant]}
    straight = train(load_config(None, {**ov, "train.steps": "10", "train.out": str(tmp_path / "a")}), quiet=True)
    first = train(load_config(None, {**ov, "train.steps": "6", "train.out": str(tmp_path / "b")}), quiet=True)
    assert first.step == 6
    resumed = train(load_config(None, {**ov, "train.steps": "10", "train.out": str(tmp_path / "b")}),
                    resume="auto", quiet=True)
    assert resumed.step == 10
    a, b = _flat(load_checkpoint(straight.checkpoint)), _flat(load_checkpoint(resumed.checkpoint))
    assert a.keys() == b.keys() and len(a) > 20
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched
    # The log of the resumed run continues where the first stopped, without duplicates.
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == sorted(set(steps)) and steps[-1] == 10


def test_resume_from_explicit_path_and_checkpoint_rotation(tmp_path: Path):
    ov = {**TINY, "train.keep_checkpoints": "2", "train.ckpt_every": "2", "train.out": str(tmp_path / "r")}
    train(load_config(None, {**ov, "train.steps": "8"}), quiet=True)
    kept = list_checkpoints(tmp_path / "r")
    assert [p.name for p in kept] == ["step-0000006.pt", "step-0000008.pt"]
    res = train(load_config(None, {**ov, "train.steps": "9"}), resume=str(kept[0]), quiet=True)
    assert res.step == 9
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp"))  # atomic writes leave no temp files
