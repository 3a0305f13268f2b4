"""Embeddings and projection."""

from __future__ import annotations

import json

import pytest
import torch

from fastgan.analysis import project
from fastgan.analysis.common import latents, load_model, run_g, to_uint8
from fastgan.cli import main


def test_embeddings_json(tiny_ckpt, tmp_path):
    assert main(["analyze", "embeddings", str(tiny_ckpt), "--out", str(tmp_path), "-n", "100", "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "embeddings.json").read_text())
    assert set(res["d_output_mean"]) == {"train", "test", "generated"}
    assert all(0 < v < 1 for v in res["d_output_mean"].values())
    assert 0.1 <= res["confidence"]["real_mean"] <= 1
    assert (tmp_path / "embeddings.png").stat().st_size > 5000


@pytest.mark.slow
def test_projection_finds_a_latent_of_g(trained_ckpt):
    """G's own sample is reachable: projecting it must get far closer than the start."""
    model = load_model(trained_ckpt, torch.device("cpu"))
    y = torch.tensor([3, 8])
    target = to_uint8(run_g(model, latents(2, model.z_dim, 99), y))
    start = to_uint8(run_g(model, latents(2, model.z_dim, 0), y))
    with torch.enable_grad():
        r = project.project(model, target, steps=150, restarts=2, quiet=True)
    start_mse = ((start.float() - target.float()) / 255).pow(2).flatten(1).mean(1)
    assert (r["mse"] < start_mse / 4).all(), (r["mse"], start_mse)
    assert r["label"].argmax(1).tolist() == [3, 8]


def test_project_cli(tiny_ckpt, tmp_path, cli_error):
    assert main(["analyze", "project", str(tiny_ckpt), "--out", str(tmp_path), "--index", "0,5", "--steps", "3",
                 "--restarts", "2", "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "project.json").read_text())
    assert [t["target"] for t in res["targets"]] == ["test[0]", "test[5]"]
    assert "outside the test split" in cli_error(["analyze", "project", str(tiny_ckpt), "--index", "999",
                                                  "--device", "cpu"])
