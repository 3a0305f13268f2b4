"""Nearest neighbours: a training image is its own neighbour at distance 0, and a generator that
copies its training set scores a memorisation ratio near 0."""

from __future__ import annotations

import json

import torch

from fastgan.analysis import neighbours
from fastgan.analysis.common import Model, load_model, real_splits, to_unit
from fastgan.cli import main


def test_training_images_are_their_own_nearest_neighbours(tiny_ckpt):
    model = load_model(tiny_ckpt, torch.device("cpu"))
    train = real_splits(model.cfg).train.images
    q = neighbours.pixels(train[::50])
    d, i = neighbours.nearest(q, neighbours.pixels(train), 3)
    assert torch.equal(d[:, 0], torch.zeros(len(q)))  # exactly 0, not float cancellation noise
    assert torch.equal(train[i[:, 0]], train[::50])
    assert (d[:, 1] > 0).all() or (d[:, 1] >= 0).all()
    assert (d[:, 1:] >= d[:, :-1]).all()  # sorted


class _Copier:
    """A 'generator' that returns training images: the memorisation the ratio must flag."""

    def __init__(self, train: torch.Tensor) -> None:
        self.train, self.i = train, 0

    def __call__(self, z, y=None):
        idx = (torch.arange(len(z)) * 7 + self.i) % len(self.train)
        self.i += len(z)
        return to_unit(self.train[idx])


def test_memorisation_ratio_flags_a_copier(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt, torch.device("cpu"))
    copier = Model(_Copier(real_splits(model.cfg).train.images), model.z_dim, model.num_classes, model.source,
                   model.cfg, model.ckpt)
    res = neighbours.run(copier, tmp_path, n=64, k=2, features="classifier")
    assert res["memorisation_ratio"] == 0 and res["pixel"]["near_copies"] == 64
    # the untrained generator's grey blobs are nowhere near a copy
    res = neighbours.run(model, tmp_path, n=64, k=2, features="classifier")
    assert res["memorisation_ratio"] > 1


def test_cli_json_and_k_larger_than_the_dataset(tiny_ckpt, tmp_path, cli_error):
    assert main(["analyze", "neighbours", str(tiny_ckpt), "--out", str(tmp_path), "-n", "16", "--k", "3",
                 "--features", "classifier", "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "neighbours.json").read_text())
    assert res["protocol"]["train_images"] == 1797 - 360  # digits: the test rows are not in the searched train set
    assert "domain classifier" in res["protocol"]["feature_space"]
    err = cli_error(["analyze", "neighbours", str(tiny_ckpt), "--out", str(tmp_path), "--k", "5000", "--device", "cpu"])
    assert "larger than the training set" in err
