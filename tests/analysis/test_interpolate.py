"""Interpolation: slerp's endpoints are the latents' own images and its path stays on the shell."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from fastgan.analysis.common import g_soft, load_model, run_g, to_uint8
from fastgan.analysis.interpolate import interpolate, lerp, slerp
from fastgan.cli import main


def test_slerp_endpoints_and_norms():
    d = 128
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, d, generator=g), torch.randn(32, d, generator=g)
    t = torch.linspace(0, 1, 9)
    s = slerp(a, b, t)
    torch.testing.assert_close(s[:, 0], a)
    torch.testing.assert_close(s[:, -1], b)
    norms = s.norm(dim=2) / d**0.5
    # Gaussian latents in 128-d have norms sqrt(d) +- ~6%; slerp keeps every point in that band
    assert (norms - 1).abs().max() < 0.2, norms
    # the negative control: a linear midpoint sags to ~sqrt(d/2), which is why slerp is the default
    mid = lerp(a, b, t)[:, 4].norm(dim=1) / d**0.5
    assert (mid.mean() - 0.5**0.5).abs() < 0.05
    # slerp moves at constant angular speed: equal angles between consecutive points
    u = s / s.norm(dim=2, keepdim=True)
    ang = torch.arccos((u[:, 1:] * u[:, :-1]).sum(2).clamp(-1, 1))
    torch.testing.assert_close(ang, ang[:, :1].expand_as(ang), atol=1e-4, rtol=1e-3)


def test_slerp_endpoint_images_are_g_of_the_latents(tiny_ckpt):
    model = load_model(tiny_ckpt, torch.device("cpu"))
    r = interpolate(model, k=3, steps=5, seed=1)
    z, y = r["z"], torch.tensor(r["labels_per_row"])
    rows = r["slerp"].view(3, 5, *r["slerp"].shape[1:])
    assert torch.equal(rows[:, 0], to_uint8(run_g(model, z, y)))
    assert torch.equal(rows[:, -1], to_uint8(run_g(model, z.roll(-1, 0), y)))


def test_label_mixture_with_one_hot_is_g(tiny_ckpt):
    model = load_model(tiny_ckpt, torch.device("cpu"))
    z = torch.randn(10, model.z_dim)
    y = torch.arange(10)
    with torch.no_grad():
        torch.testing.assert_close(g_soft(model.G, z, torch.eye(10)[y]), model.G(z, y))


def test_cli_writes_png_gif_json(tiny_ckpt, tmp_path):
    assert main(["analyze", "interpolate", str(tiny_ckpt), "--out", str(tmp_path), "--k", "3", "--steps", "4",
                 "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "interpolate.json").read_text())
    assert res["protocol"]["latents"] == 3 and res["protocol"]["label_walk"] == [[0, 1], [1, 2], [2, 3]]
    assert res["mid_norm_linear"] < res["mid_norm_slerp"]
    gif = Image.open(tmp_path / "interpolate.gif")
    assert gif.n_frames == 2 * 4 - 2  # forth and back
    assert Image.open(tmp_path / "interpolate.png").size[0] > 100


def test_label_walk_on_unconditional_model_is_a_user_error(tiny_uncond_ckpt, cli_error):
    err = cli_error(["analyze", "interpolate", str(tiny_uncond_ckpt), "--labels", "1,7", "--device", "cpu"])
    assert "unconditional" in err


def test_onnx_generator_gives_the_checkpoints_walk(tiny_ckpt, tmp_path):
    """An exported G runs the G-only analyses, and its walk matches the checkpoint's (label walk aside)."""
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "g.onnx"
    assert main(["export", str(tiny_ckpt), "--onnx", str(onnx)]) == 0
    a = interpolate(load_model(onnx, torch.device("cpu")), k=2, steps=3, seed=5)
    b = interpolate(load_model(tiny_ckpt, torch.device("cpu")), k=2, steps=3, seed=5)
    assert (a["slerp"].int() - b["slerp"].int()).abs().max() <= 1  # uint8 rounding of ~1e-6 differences
    assert "label_walk_skipped" in a and "labels" in b
