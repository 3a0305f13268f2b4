"""DiffAugment: the ops against a manual reference (the authors' indexing formulation, written out here),
differentiability w.r.t. G's output, the same policy on D's real and fake inputs, torch.compile, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastgan.engine.step as step_mod
from fastgan.cli import main
from fastgan.config import load_config
from fastgan.data import load_dataset
from fastgan.data.diffaugment import cutout, diff_augment, translation
from fastgan.engine.build import assemble
from fastgan.engine.fast import FastOptions
from fastgan.engine.step import StepSpec, d_losses, g_losses

CPU = torch.device("cpu")
TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
        "train.grid_size": "20"}


# -- manual references: the paper code's formulation (meshgrid + padded indexing; a scattered mask) --------------
def translation_ref(x, ratio=0.125):
    b, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, size=[b, 1, 1])
    ty = torch.randint(-sy, sy + 1, size=[b, 1, 1])
    gb, gx, gy = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)


def cutout_ref(x, ratio=0.5):
    b, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - sx % 2), size=[b, 1, 1])
    oy = torch.randint(0, w + (1 - sy % 2), size=[b, 1, 1])
    gb, gx, gy = torch.meshgrid(torch.arange(b), torch.arange(sx), torch.arange(sy), indexing="ij")
    gx = torch.clamp(gx + ox - sx // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - sy // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


def color_ref(x):
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype)
    x = x + (r - 0.5)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) * 2) + m
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype) + 0.5) + m


def seeded(fn, x, seed=3):
    torch.manual_seed(seed)
    return fn(x)


@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (8, 3, 32, 32), (5, 3, 9, 13)])  # odd, non-square sides too
def test_each_op_matches_the_manual_reference(shape):
    x = torch.randn(shape)
    for mine, ref in ((translation, translation_ref), (cutout, cutout_ref),
                      (lambda t: diff_augment(t, "color"), color_ref)):
        torch.testing.assert_close(seeded(mine, x), seeded(ref, x), rtol=0, atol=0)
    # and it augments: a translated / cut-out batch is not the input
    assert not torch.equal(seeded(translation, x), x) and not torch.equal(seeded(cutout, x), x)


def test_translation_moves_pixels_and_fills_with_zero():
    x = torch.arange(1.0, 1 + 28 * 28).view(1, 1, 28, 28).repeat(64, 1, 1, 1)
    y = seeded(translation, x)
    assert (y == 0).any()  # border fill for the shifted images
    inside = y[y != 0]
    assert torch.isin(inside, x[0].flatten()).all()  # every non-fill pixel comes from the image


def test_empty_policy_is_the_identity_and_draws_nothing():
    x = torch.randn(4, 1, 28, 28)
    before = torch.get_rng_state()
    assert diff_augment(x, "") is x
    assert torch.equal(torch.get_rng_state(), before)  # default runs keep their exact random stream


def test_gradcheck_through_the_full_policy():
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: seeded(lambda u: diff_augment(u, "translation,cutout,color"), t), (x,))


def test_gradient_reaches_g_through_the_augmented_d_input():
    cfg = load_config(None, {**TINY, "data.diffaugment": "translation,cutout,color"})
    run = assemble(cfg, load_dataset(cfg.data), CPU, options=FastOptions())
    G, D = run.state.G, run.state.D
    loss, _ = g_losses(G, D, run.spec, CPU)
    loss.backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    # translation: the gradient w.r.t. an image is the reference's (pixels moved, padding gets none)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    w = torch.randn(4, 1, 28, 28)
    (g_mine,) = torch.autograd.grad((seeded(translation, x) * w).sum(), x)
    (g_ref,) = torch.autograd.grad((seeded(translation_ref, x) * w).sum(), x)
    torch.testing.assert_close(g_mine, g_ref, rtol=0, atol=0)


def test_real_and_fake_get_the_same_policy(monkeypatch):
    seen = []

    def spy(x, policy, shard=None):
        seen.append((x.shape, policy))
        return diff_augment(x, policy, shard)

    monkeypatch.setattr(step_mod, "diff_augment", spy)
    cfg = load_config(None, {**TINY, "data.diffaugment": "translation,cutout"})
    run = assemble(cfg, load_dataset(cfg.data), CPU, options=FastOptions())
    real, labels = run.loader.batch(16)
    d_losses(run.state.G, run.state.D, run.spec, real, labels)
    g_losses(run.state.G, run.state.D, run.spec, CPU)
    assert [p for _, p in seen] == ["translation,cutout"] * 3  # D's real input, D's fake input, G's fake
    assert all(s == real.shape for s, _ in seen)
    assert StepSpec.from_config(load_config(None, TINY)).diffaugment == ""  # off by default


def test_training_steps_run_with_the_policy():
    cfg = load_config(None, {**TINY, "data.diffaugment": "translation,cutout,color"})
    run = assemble(cfg, load_dataset(cfg.data), CPU)
    before = [p.detach().clone() for p in run.state.D.parameters()]
    out = run.stepper(None, 0.99)
    assert all(torch.isfinite(v) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, run.state.D.parameters()))


@pytest.mark.slow  # inductor builds C++ on the CPU: ~20 s on 2 cores
def test_runs_compiled_and_matches_eager(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)  # eager's RNG inside the compiled graph
    fn = torch.compile(lambda t: diff_augment(t, "translation,cutout,color"), fullgraph=True, dynamic=False)
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(seeded(fn, x), seeded(lambda t: diff_augment(t, "translation,cutout,color"), x))


def test_bad_policy_is_one_line_exit_2(capsys):
    rc = main(["train", "--set", "data.diffaugment=translation,flip", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "data.diffaugment: 'flip'" in err[0] and "translation, cutout, color" in err[0]
