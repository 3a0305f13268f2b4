"""Every preset that names a dataset trains a few steps on fixture files of that dataset's real format."""

from __future__ import annotations

import json

import pytest

from fastgan.cli import main
from fastgan.config import PRESETS

TINY = ["--steps", "2", "--batch-size", "4", "--set", "model.g_width=4", "--set", "model.d_width=4",
        "--set", "model.z_dim=8", "--set", "train.grid_size=4", "--set", "train.log_every=1",
        "--set", "train.sample_every=2", "--set", "train.ckpt_every=2", "--quiet"]


def fixture_root(fx, name: str, tmp_path):
    """The data folder for dataset ``name`` (None: bundled)."""
    build = {
        "digits": lambda: None,
        "mnist": lambda: fx.mnist(tmp_path / "mnist", n=16),
        "fashion-mnist": lambda: fx.mnist(tmp_path / "fashion", n=16),
        "emnist-letters": lambda: fx.emnist_zip(tmp_path / "emnist", n=26)[0],
        "cifar10": lambda: fx.cifar(tmp_path / "cifar10", per_batch=2)[0],
        "celeba": lambda: fx.celeba(tmp_path / "celeba", n=4),
        "lsun-church": lambda: fx.lsun(tmp_path / "lsun", "church_outdoor", n=4),
    }
    if name not in build:
        pytest.fail(f"preset dataset '{name}' has no fixture here: add one to fixture_root")
    return build[name]()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_trains_on_fixture_data(preset, fx, tmp_path, capsys):
    dataset = PRESETS[preset][1].get("data.dataset", "digits")
    root = fixture_root(fx, dataset, tmp_path)
    argv = ["train", preset, "--out", str(tmp_path / "run"), *TINY]
    if root is not None:
        argv += ["--set", f"data.root={root}", "--set", "data.prepare_workers=1"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["step"] == 2
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"]["dataset"] == dataset and cfg["preset"] == preset
