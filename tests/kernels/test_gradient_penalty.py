"""fastgan/kernels/gradient_penalty.py and losses.gradient_penalty: the Triton path against the references.

Runs in Triton's interpreter on CPU (tests/kernels/conftest.py), the compiled kernels on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastgan import losses
from fastgan.config import load_config
from fastgan.engine.state import build_state
from fastgan.engine.step import StepSpec, d_step, g_step
from fastgan.kernels import runtime
from fastgan.kernels.gradient_penalty import (
    gradient_norm_penalty,
    gradient_norm_penalty_ref,
    interpolate,
    interpolate_ref,
)

pytestmark = pytest.mark.filterwarnings("error::fastgan.kernels.runtime.KernelFallbackWarning")

SHAPES = [
    (3, 1, 5, 7),  # odd sizes; a sample boundary falls inside every block
    (4, 3, 6, 6),  # RGB
    (2, 3, 24, 20),  # 1440 values per sample > 1024: two programs share each sample's norm
]
DTYPE_TOL = [(torch.float32, 1e-6, 1e-5), (torch.bfloat16, 1e-2, 1e-2), (torch.float16, 1e-3, 1e-3)]
# x_hat rounds once from fp32; torch's CPU lerp uses an fma, so outputs may differ by one ulp of |x| < 8,
# and near-zero outputs (cancellation) make the relative error meaningless: atol = that ulp.
LERP_TOL = [(torch.float32, 1e-6, 1e-5), (torch.bfloat16, 2**-5, 1e-2), (torch.float16, 2**-8, 1e-3)]


def _layout(t, channels_last):
    return t.to(memory_format=torch.channels_last) if channels_last else t


@pytest.mark.parametrize("dtype,atol,rtol", LERP_TOL)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_interpolate_matches_reference(device, shape, channels_last, dtype, atol, rtol):
    real = _layout(torch.randn(shape, device=device).to(dtype), channels_last)
    fake = torch.randn(shape, device=device).to(dtype)  # always NCHW: a layout mismatch is copied, not misread
    eps = torch.rand(shape[0], device=device)
    eps[0] = 0.5  # torch.lerp switches formula at 0.5
    got = interpolate(real, fake, eps, impl="triton")
    torch.testing.assert_close(got, interpolate_ref(real, fake, eps), atol=atol, rtol=rtol)
    assert got.dtype == dtype and got.stride() == real.stride()


@pytest.mark.parametrize("dtype,atol,rtol", DTYPE_TOL)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_penalty_matches_reference(device, shape, channels_last, dtype, atol, rtol):
    g0 = _layout((torch.randn(shape, device=device) * 1.5 / math.prod(shape[1:]) ** 0.5).to(dtype), channels_last)
    g0[1].zero_()  # a zero-norm sample: its gradient is 0, as torch's norm backward gives
    results = []
    for fn in (lambda g: gradient_norm_penalty(g, 10.0, impl="triton"), lambda g: gradient_norm_penalty_ref(g, 10.0)):
        g = g0.detach().clone().requires_grad_(True)
        loss = fn(g)
        loss.backward(torch.tensor(0.7, device=device))  # a non-unit upstream gradient
        results.append((loss, g.grad))
    (loss, grad), (loss_ref, grad_ref) = results
    assert loss.dtype == torch.float32  # the norm is taken in fp32 whatever the gradient's dtype
    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, grad_ref, atol=atol, rtol=rtol)
    assert grad.stride() == g0.stride()
    assert not grad[1].any()


def test_penalty_more_samples_than_one_reduction_step(device):
    g = torch.randn(1030, 3, device=device, requires_grad=True)  # 1030 > 1024 samples: the loop takes two steps
    gradient_norm_penalty(g, 10.0, impl="triton").backward()
    g_ref = g.detach().clone().requires_grad_(True)
    gradient_norm_penalty_ref(g_ref, 10.0).backward()
    torch.testing.assert_close(g.grad, g_ref.grad, atol=1e-7, rtol=1e-5)


def test_gradcheck_float64(device):
    """interpolate: any order (gradcheck and gradgradcheck); the penalty: first order (gradcheck)."""
    real, fake, g = (torch.randn(3, 2, 3, 2, device=device, dtype=torch.float64, requires_grad=True) for _ in "abc")
    eps = torch.rand(3, device=device, dtype=torch.float64, requires_grad=True)
    fn = lambda r, f, e: interpolate(r, f, e, impl="triton")
    assert torch.autograd.gradcheck(fn, (real, fake, eps))
    assert torch.autograd.gradgradcheck(fn, (real, fake, eps))
    assert torch.autograd.gradcheck(lambda g: gradient_norm_penalty(g, 10.0, impl="triton"), (g,))


def test_penalty_first_order_only(device):
    g = torch.randn(3, 2, 3, 3, device=device, requires_grad=True)
    loss = gradient_norm_penalty(g, 10.0, impl="triton")
    (dg,) = torch.autograd.grad(loss, g, create_graph=True)
    with pytest.raises(RuntimeError, match="grad_norm_penalty_backward.*no autograd formula"):
        torch.autograd.grad(dg.sum(), g)


def _critic(device):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 3, 2, 1), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 1),
    ).to(device)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_penalty_gradients_reach_critic_parameters(device, channels_last):
    """The fused penalty's gradient flows through create_graph=True into D exactly as the plain penalty's."""
    D = _critic(device)
    x_hat = _layout(torch.randn(5, 3, 11, 9, device=device), channels_last)
    critic = lambda x: D(x).flatten()
    grads = []
    for gp in (lambda: losses.gradient_penalty(critic, x_hat, 10.0, impl="triton"),
               lambda: losses.gradient_penalty_ref(critic, x_hat, 10.0)):
        D.zero_grad(set_to_none=True)
        loss = gp()
        loss.backward()
        # the last bias does not move dD/dx: no gradient from the penalty, in both
        grads.append((loss.detach(), [p.grad for p in D.parameters()]))
    (loss, got), (loss_ref, ref) = grads
    torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
    assert ref[0].abs().sum() > 0 and got[-1] is None and ref[-1] is None
    for p, (a, r) in enumerate(zip(got[:-1], ref[:-1])):
        torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-4, msg=f"parameter {p}")


def _wgan_cfg(kernels):
    return load_config("fashion-wgan-gp", {
        "model.channels": 1, "model.num_classes": 10, "model.g_width": 4, "model.d_width": 4, "model.z_dim": 8,
        "train.batch_size": 6, "optim.n_critic": 1, "train.seed": 5, "model.kernels": kernels})


def _train(cfg, device, steps=5):
    state = build_state(cfg, device)
    spec = StepSpec.from_config(cfg)
    gen = torch.Generator().manual_seed(2)
    rows = []
    for _ in range(steps):
        real = (torch.rand(spec.batch_size, 1, 32, 32, generator=gen) * 2 - 1).to(device)
        out = d_step(state, spec, real, None)
        out.update(g_step(state, spec, device))
        rows.append(torch.stack([out["d_loss"], out["gp"], out["g_loss"]]))
    return torch.stack(rows), state


def test_wgan_gp_training_matches_torch(device):
    """Five WGAN-GP steps with model.kernels=triton (penalty kernels, BN kernels in G) track torch."""
    got, s_got = _train(_wgan_cfg("triton"), device)
    ref, s_ref = _train(_wgan_cfg("torch"), device)
    assert got[:, 1].gt(0).all()  # the penalty is live
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for a, r in ((s_got.G, s_ref.G), (s_got.D, s_ref.D)):
        for (k, t), t_ref in zip(a.state_dict().items(), r.state_dict().values()):
            torch.testing.assert_close(t, t_ref, atol=1e-4, rtol=1e-4, msg=k)


def test_fallback_is_loud_and_once(fresh_warnings, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    g = torch.randn(4, 1, 3, 3)
    with pytest.warns(runtime.KernelFallbackWarning, match="gradient_norm_penalty.*TRITON_INTERPRET=1 is not set"):
        loss = gradient_norm_penalty(g, 10.0, impl="triton")
    torch.testing.assert_close(loss, gradient_norm_penalty_ref(g, 10.0))
    with pytest.warns(runtime.KernelFallbackWarning, match="interpolate"):
        interpolate(g, g, torch.rand(4), impl="triton")
    assert not runtime.use_triton("interpolate", "auto", g, (torch.float32,))  # auto on CPU: torch, silently
