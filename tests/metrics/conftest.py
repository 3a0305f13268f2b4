"""Fixtures of the metrics tests: a private cache folder, the Inception weights, tiny artifacts."""

from __future__ import annotations

import pytest

from fastgan.config import DataConfig, load_config
from fastgan.engine.loop import train
from fastgan.metrics.classifier import ClassifierConfig, save_classifier, train_classifier

from ..conftest import TINY as MODEL

TINY = {**MODEL, "train.log_every": "2", "train.sample_every": "100", "train.ckpt_every": "100", "train.grid_size": "10"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Reference stats and classifiers go to a per-test folder, never to ~/.cache."""
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def npz_path(data_dir):
    from fastgan.metrics.inception import NPZ_NAME

    return data_dir / "inception" / NPZ_NAME


@pytest.fixture(scope="session")
def digits_classifier_file(tmp_path_factory):
    """A domain classifier for the bundled digits (a few seconds on CPU)."""
    model, report = train_classifier(DataConfig(dataset="digits"), ClassifierConfig(epochs=3, batch_size=64), quiet=True)
    path = tmp_path_factory.mktemp("clf") / "digits.pt"
    save_classifier(model, path)
    return path, report


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 4-step conditional DCGAN on digits (32 px)."""
    out = tmp_path_factory.mktemp("run")
    return train(load_config(None, {**TINY, "train.steps": "4", "train.out": str(out)}), quiet=True).checkpoint
