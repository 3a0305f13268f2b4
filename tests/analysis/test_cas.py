"""Classification accuracy score: samples of a trained conditional G teach a classifier the real
classes; an untrained G's do not."""

from __future__ import annotations

import json

import pytest
import torch

from fastgan.analysis import cas
from fastgan.analysis.common import Model, load_model
from fastgan.cli import main
from fastgan.models import build_generator


@pytest.mark.slow
def test_trained_generator_beats_a_random_one(trained_ckpt):
    model = load_model(trained_ckpt, torch.device("cpu"))
    with torch.random.fork_rng():
        torch.manual_seed(1)
        G = build_generator(model.cfg.model).eval().requires_grad_(False)
    rand = Model(G, model.z_dim, model.num_classes, model.source, model.cfg, model.ckpt)
    acc = {name: float(cas.analyse(m, [0], [1000], seeds=1, steps=150, quiet=True)["acc"][0, 0, 0])
           for name, m in (("trained", model), ("random", rand))}
    print(acc)
    assert acc["trained"] > 0.6 and acc["trained"] > acc["random"] + 0.4, acc


def test_sizes():
    assert cas.parse_sizes("0,10%,100%", 1437, "--real", 1437) == [0, 144, 1437]
    assert cas.parse_sizes("600,0,600", 60000, "--gen", None) == [0, 600]


@pytest.mark.slow  # trains a classifier per grid cell: ~12 s on 2 cores (test_sizes stays quick)
def test_cli_grid_json(tiny_ckpt, tmp_path):
    assert main(["analyze", "cas", str(tiny_ckpt), "--out", str(tmp_path), "--real", "0,100", "--gen", "0,50",
                 "--seeds", "2", "--steps", "3", "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "cas.json").read_text())
    cells = {(t["real"], t["generated"]) for t in res["table"]}
    assert cells == {(0, 50), (100, 0), (100, 50)} and all(len(t["runs"]) == 2 for t in res["table"])
    assert res["real_only"]["real"] == 100 and len(res["per_class"]["100+0"]) == 10


def test_unconditional_model_is_a_user_error(tiny_uncond_ckpt, cli_error):
    assert "unconditional" in cli_error(["analyze", "cas", str(tiny_uncond_ckpt), "--device", "cpu"])


def test_more_real_images_than_the_split_is_a_user_error(tiny_ckpt, cli_error):
    assert "training split has 1437" in cli_error(["analyze", "cas", str(tiny_ckpt), "--real", "5000", "--device", "cpu"])
