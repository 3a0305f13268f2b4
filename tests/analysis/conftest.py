"""Runs the analysis tests share: a 2-step digits run (shapes, JSON, errors) and a short trained
one (the properties that need a model that learned something), each trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgan.config import load_config
from fastgan.engine.loop import train

TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
        "train.grid_size": "20", "train.log_every": "1", "train.sample_every": "1", "train.seed": "0",
        "train.device": "cpu"}
# Trained: 400 steps at batch 64 with 16-wide nets, ~20 s on 2 idle cores; enough for legible digits
# (the conditional samples carry their class) and a D whose features separate the classes.
TRAINED = {**TINY, "model.g_width": "16", "model.d_width": "16", "model.z_dim": "32", "train.batch_size": "64",
           "train.steps": "400", "train.log_every": "50", "train.sample_every": "200", "train.ckpt_every": "400"}


def _run(root: Path, overrides: dict[str, str], preset: str = "digits-cdcgan") -> Path:
    cfg = load_config(preset, {**overrides, "train.out": str(root)})
    return train(cfg, quiet=True).checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A conditional digits checkpoint after 2 steps: right shapes, nothing learned."""
    return _run(tmp_path_factory.mktemp("tiny") / "run", {**TINY, "train.steps": "2"})


@pytest.fixture(scope="session")
def tiny_uncond_ckpt(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("tiny-uncond") / "run",
                {**TINY, "train.steps": "2", "model.conditioning": "none"})


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("trained") / "run", TRAINED)


@pytest.fixture
def cli_error(capsys):
    """Run the CLI expecting a user error: exit 2 and exactly one line on stderr, no traceback."""
    from fastgan.cli import main

    def check(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err, err
        assert err.startswith("fastgan: error:"), err
        return err

    return check
