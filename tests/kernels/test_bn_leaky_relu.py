"""fastgan/kernels/bn_leaky_relu.py: the Triton path against the torch reference.

Runs in Triton's interpreter on CPU (tests/kernels/conftest.py), the compiled kernels on a GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from fastgan.config import load_config
from fastgan.engine.state import build_state
from fastgan.engine.step import StepSpec, d_step, g_step
from fastgan.errors import ConfigError
from fastgan.kernels import runtime
from fastgan.kernels.bn_leaky_relu import DTYPES, bn_leaky_relu, bn_leaky_relu_ref
from fastgan.models import build_generator
from fastgan.models.layers import BatchNormAct

pytestmark = pytest.mark.filterwarnings("error::fastgan.kernels.runtime.KernelFallbackWarning")

SHAPES = [
    (4, 8, 8, 8),  # a DCGAN layer in miniature
    (3, 5, 7, 6),  # odd N, C, H, W: partial tiles everywhere
    (5, 70, 1, 1),  # 1x1 spatial: the columns are the channels in both layouts
    (2, 3, 33, 35),  # C*H*W = 3465 > 1024 columns: NCHW channels straddle column programs
    (130, 2, 3, 3),  # many rows: the reduction splits them over programs, the last slice short
]
DTYPE_TOL = [  # (dtype, atol, rtol): fp32 arithmetic inside; bf16/fp16 differ by output rounding
    (torch.float32, 1e-5, 1e-5),
    (torch.bfloat16, 3e-2, 2e-2),
    (torch.float16, 4e-3, 2e-3),
]
MODES = [(True, 0.2), (True, 0.0), (False, 0.2)]  # (training, negative_slope): 0 is BN + ReLU


def _run(impl, x, w, b, rm, rv, training, slope, dy):
    """Output, running stats and every gradient of one call."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    rm, rv = rm.clone(), rv.clone()
    y = bn_leaky_relu(x, w, b, rm, rv, training, 0.1, 1e-5, slope, impl=impl)
    y.backward(dy)
    return {"y": y, "running_mean": rm, "running_var": rv, "dx": x.grad, "dweight": w.grad, "dbias": b.grad}


def _inputs(shape, dtype, channels_last, device, param_dtype=torch.float32):
    c = shape[1]
    x = (torch.randn(shape, device=device) * 1.5 + 0.7).to(dtype)  # a mean well off 0 tests the variance shift
    dy = torch.randn(shape, device=device).to(dtype)
    if channels_last:
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    w = (1 + 0.3 * torch.randn(c, device=device)).to(param_dtype)
    b = (0.2 * torch.randn(c, device=device)).to(param_dtype)
    rm = (0.1 * torch.randn(c, device=device)).to(param_dtype)
    rv = (1 + torch.rand(c, device=device)).to(param_dtype)
    return x, w, b, rm, rv, dy


@pytest.mark.parametrize("training,slope", MODES)
@pytest.mark.parametrize("dtype,atol,rtol", DTYPE_TOL)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(device, shape, channels_last, dtype, atol, rtol, training, slope):
    x, w, b, rm, rv, dy = _inputs(shape, dtype, channels_last, device)
    got = _run("triton", x, w, b, rm, rv, training, slope, dy)
    ref = _run("torch", x, w, b, rm, rv, training, slope, dy)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert got["y"].dtype == dtype and got["y"].is_contiguous(memory_format=fmt)  # layout kept, read in place
    assert got["dx"].is_contiguous(memory_format=fmt)
    for key in ("y", "dx"):
        torch.testing.assert_close(got[key], ref[key], atol=atol, rtol=rtol, msg=key)
    for key in ("running_mean", "running_var"):  # fp32 statistics whatever the input dtype
        torch.testing.assert_close(got[key], ref[key], atol=1e-5, rtol=1e-5, msg=key)
    if not training:
        torch.testing.assert_close(got["running_mean"], rm)  # eval leaves them alone
    n = x.numel() // shape[1]
    for key in ("dweight", "dbias"):  # sums over n elements: the tolerance grows with sqrt(n)
        scale = atol * n**0.5 if dtype != torch.float32 else atol * 10
        torch.testing.assert_close(got[key], ref[key], atol=scale, rtol=rtol, msg=key)


def test_channels_last_mixed_with_contiguous_grad(device):
    """dy in another layout than x (autograd may hand either) is read correctly."""
    x, w, b, rm, rv, dy = _inputs((3, 4, 5, 5), torch.float32, True, device)
    dy = dy.contiguous()
    got = _run("triton", x, w, b, rm, rv, True, 0.2, dy)
    ref = _run("torch", x, w, b, rm, rv, True, 0.2, dy)
    for key in ("y", "dx", "dweight", "dbias"):
        torch.testing.assert_close(got[key], ref[key], atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_gradcheck_float64(device, channels_last, training):
    x, w, b, rm, rv, _ = _inputs((3, 2, 3, 2), torch.float64, channels_last, device, torch.float64)
    x, w, b = (t.detach().requires_grad_(True) for t in (x, w, b))
    # training: no running stats, so gradcheck's repeated calls all see the same function
    stats = (None, None) if training else (rm, rv)
    assert torch.autograd.gradcheck(
        lambda x, w, b: bn_leaky_relu(x, w, b, *stats, training, 0.1, 1e-5, 0.2, impl="triton"), (x, w, b),
        fast_mode=True,
    )


def test_first_order_only(device):
    """The docstring's claim: a first-order gradient, and a clear error for a second."""
    x, w, b, *_ = _inputs((4, 3, 5, 5), torch.float32, False, device)
    x, w = x.requires_grad_(True), w.requires_grad_(True)
    y = bn_leaky_relu(x, w, b, None, None, True, negative_slope=0.2, impl="triton")
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="bn_leaky_relu_backward.*no autograd formula"):
        torch.autograd.grad(gx.sum(), w)


def _module_pair(c, slope, device):
    mods = [BatchNormAct(c, slope, impl).to(device) for impl in ("triton", "torch")]
    with torch.no_grad():
        mods[0].weight.normal_(1, 0.2)
        mods[0].bias.normal_(0, 0.2)
    mods[1].load_state_dict(mods[0].state_dict())
    return mods


def test_module_matches_batchnorm2d(device):
    """BatchNormAct(impl=triton) keeps BatchNorm2d's state: running stats, num_batches_tracked, eval."""
    fused, ref = _module_pair(6, 0.2, device)
    for _ in range(3):
        x = torch.randn(4, 6, 5, 5, device=device) * 2 + 1
        torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=1e-5)
    fused.eval(), ref.eval()
    x = torch.randn(4, 6, 5, 5, device=device)
    torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=1e-5)
    for (k, a), (_, r) in zip(fused.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, r, atol=1e-6, rtol=1e-5, msg=k)
    assert int(fused.num_batches_tracked) == 3


def test_module_refuses_cumulative_momentum(device):
    bn = BatchNormAct(3, 0.2, "triton").to(device)
    bn.momentum = None
    with pytest.raises(ConfigError, match="momentum=None"):
        bn(torch.randn(2, 3, 4, 4, device=device))


def test_fallback_is_loud_and_once(fresh_warnings, monkeypatch):
    """Without the interpreter, CPU tensors take the reference with one warning; auto picks torch silently."""
    monkeypatch.delenv("TRITON_INTERPRET")
    x, w, b, rm, rv, _ = _inputs((2, 3, 4, 4), torch.float32, False, "cpu")
    with pytest.warns(runtime.KernelFallbackWarning, match="TRITON_INTERPRET=1 is not set"):
        y = bn_leaky_relu(x, w, b, rm.clone(), rv.clone(), True, negative_slope=0.2, impl="triton")
    torch.testing.assert_close(y, bn_leaky_relu_ref(x, w, b, rm.clone(), rv.clone(), True, negative_slope=0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bn_leaky_relu(x, w, b, None, None, True, impl="triton")  # the same reason again: silent
        assert not runtime.use_triton("bn_leaky_relu", "auto", x, DTYPES)  # auto on CPU: torch, no warning
    monkeypatch.setattr(runtime, "triton", None)
    with pytest.warns(runtime.KernelFallbackWarning, match="Triton is not installed"):
        bn_leaky_relu(x, w, b, None, None, True, impl="triton")
    with pytest.raises(ValueError, match="impl must be one of"):
        bn_leaky_relu(x, w, b, impl="cuda")


def test_dispatch_rule_per_device():
    """auto: Triton on CUDA only (an unmeasured choice, see the benchmark); triton: wherever it can run."""
    assert not runtime._decide("op", "auto", "cpu", torch.float32, 10, DTYPES)
    assert not runtime._decide("op", "torch", "cuda", torch.float32, 10, DTYPES)
    assert runtime.why_not("cuda", torch.int64, 10, DTYPES).startswith("dtype torch.int64 is not supported")
    assert "int32" in runtime.why_not("cuda", torch.float32, 2**31, DTYPES)


def _tiny_cfg(**over):
    sets = {"model.resolution": 32, "model.channels": 1, "model.num_classes": 10, "model.conditioning": "none",
            "model.g_width": 4, "model.d_width": 4, "model.z_dim": 8, "train.batch_size": 6, "train.seed": 3}
    sets.update(over)
    return load_config("digits-cdcgan", sets)


def test_compiled_model_has_no_graph_break_at_the_op(device):
    """torch.compile sees one custom op per BatchNormAct; aot_eager runs the fake and autograd functions."""
    cfg = _tiny_cfg(**{"model.kernels": "triton"})
    torch.manual_seed(0)
    G = build_generator(cfg.model).to(device)
    G_ref = build_generator(cfg.model).to(device)
    G_ref.load_state_dict(G.state_dict())
    z = torch.randn(3, cfg.model.z_dim, device=device)
    explained = torch._dynamo.explain(G)(z)
    assert explained.graph_break_count == 0, explained.break_reasons
    code = "\n".join(g.code for g in explained.graphs)
    assert code.count("torch.ops.fastgan.bn_leaky_relu(") == 3  # the three BatchNormAct layers of G at 32 px
    G_ref.load_state_dict(G.state_dict())  # explain ran G once: same running stats again
    torch._dynamo.reset()
    compiled = torch.compile(G, backend="aot_eager", fullgraph=True)
    out = compiled(z)
    out.square().mean().backward()
    ref = G_ref(z)
    ref.square().mean().backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for (k, p), p_ref in zip(G.named_parameters(), G_ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4, msg=k)
    for (k, buf), b_ref in zip(G.named_buffers(), G_ref.buffers()):
        torch.testing.assert_close(buf, b_ref, atol=1e-6, rtol=1e-5, msg=k)


def _train(cfg, device, steps=5):
    state = build_state(cfg, device)
    spec = StepSpec.from_config(cfg)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        real = (torch.rand(spec.batch_size, 1, 32, 32, generator=gen) * 2 - 1).to(device)
        out = d_step(state, spec, real, None)
        out.update(g_step(state, spec, device))
        losses.append(torch.stack([out["d_loss"], out["g_loss"]]))
    return torch.stack(losses), state


def test_dcgan_training_matches_torch(device):
    """Five DCGAN steps with model.kernels=triton track model.kernels=torch (G and D both use BatchNormAct)."""
    got, s_got = _train(_tiny_cfg(**{"model.kernels": "triton"}), device)
    ref, s_ref = _train(_tiny_cfg(**{"model.kernels": "torch"}), device)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for a, r in ((s_got.G, s_ref.G), (s_got.D, s_ref.D)):
        for (k, t), t_ref in zip(a.state_dict().items(), r.state_dict().values()):
            torch.testing.assert_close(t, t_ref, atol=1e-4, rtol=1e-4, msg=k)


def test_train_cli_kernels_flag(capsys):
    from fastgan.cli import main

    assert main(["train", "--kernels", "triton", "--dry-run"]) == 0
    assert '"kernels": "triton"' in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_capture():
    """The op launches on the current stream with no host sync: a captured forward+backward replays it."""
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BatchNormAct(8, 0.2, "triton")).cuda()
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BatchNormAct(8, 0.2, "torch")).cuda()
    ref.load_state_dict(layer.state_dict())
    static_x = torch.randn(16, 3, 16, 16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles the kernels) off the capture
        for _ in range(2):
            layer(static_x).square().mean().backward()
    torch.cuda.current_stream().wait_stream(side)
    layer.load_state_dict(ref.state_dict())
    for p in layer.parameters():
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(static_x)
        static_y.square().mean().backward()
    for _ in range(3):
        x = torch.randn_like(static_x)
        static_x.copy_(x)
        for p in layer.parameters():
            p.grad.zero_()
        graph.replay()
        ref.zero_grad(set_to_none=True)
        y = ref(x)
        y.square().mean().backward()
        torch.testing.assert_close(static_y, y, atol=1e-5, rtol=1e-5)
        for p, p_ref in zip(layer.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer[1].running_mean, ref[1].running_mean)
