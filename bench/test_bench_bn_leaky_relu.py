"""BatchNorm + LeakyReLU speed: the Triton op vs eager torch vs torch.compile of the torch reference.

    pytest bench/test_bench_bn_leaky_relu.py bench/test_bench_gradient_penalty.py --benchmark-enable \\
        --benchmark-json bench/results/kernels-<device>.json

Training-mode forward and forward+backward at DCGAN-64 activation shapes, batch 128 and 1024, in fp32
NCHW (the eager default) and bf16 channels-last (the fast path's layout). Without CUDA those cases skip
and one tiny CPU smoke case runs eager torch only (Triton runs on a CPU only in its interpreter, a test
tool; compiling on a CPU is too slow for a smoke case).

A timed call is INNER calls then one synchronize (a sync per call would dominate at batch 128). Each
case stores in extra_info the time per op, its effective GB/s over the minimal traffic (forward: read x,
write y; forward+backward adds read x, read dy, write dx), that as a fraction of the device's measured
copy bandwidth, and (Triton and compile cases) the eager reference's time and the speedup over it.
The Triton op itself moves 3 (forward) and 8 (forward+backward) tensor passes against the minimal 2 and
5 (``kernel_bytes``), so once x no longer fits in L2 its fraction of copy bandwidth tops out near 2/3.
Targets on a GPU (issue 6): forward+backward >= 1.5x eager and >= 70 % of copy bandwidth at the large
shapes. These numbers decide which path ``impl="auto"`` should pick per device.
"""

from __future__ import annotations

import pytest
import torch

from fastgan.benchmark.timing import bench_op
from fastgan.kernels.bn_leaky_relu import bn_leaky_relu, bn_leaky_relu_ref

# (C, H, W, negative_slope): G's first BN (4x4), D's middle BN (16x16, leaky), G's last BN (largest)
GPU_LAYERS = [(512, 4, 4, 0.0), (128, 16, 16, 0.2), (64, 32, 32, 0.0)]
FORMATS = {"fp32-nchw": (torch.float32, False), "bf16-cl": (torch.bfloat16, True)}
CASES = [("cuda", (b, c, h, w), slope, fmt) for b in (128, 1024) for c, h, w, slope in GPU_LAYERS for fmt in FORMATS]
CASES.append(("cpu", (8, 16, 8, 8), 0.2, "fp32-nchw"))  # the smoke case
IMPLS = ["triton", "torch", "compile"]


def _env(device: str) -> dict:
    import triton

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "triton": triton.__version__}


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("device,shape,slope,fmt", CASES,
                         ids=[f"{d}-b{s[0]}-{s[1]}x{s[2]}x{s[3]}-{f}" for d, s, _, f in CASES])
def test_bn_leaky_relu(benchmark, device, shape, slope, fmt, impl, mode):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (a GPU measurement still owed)")
    if device == "cpu" and impl != "torch":
        pytest.skip("CPU smoke case: eager torch only (Triton needs a GPU; compile is too slow for a smoke case)")
    dtype, channels_last = FORMATS[fmt]
    c = shape[1]
    x = torch.randn(shape, device=device).to(dtype)
    dy = torch.randn(shape, device=device).to(dtype)
    if channels_last:
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    w = torch.ones(c, device=device, requires_grad=True)
    b = torch.zeros(c, device=device, requires_grad=True)
    rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
    x.requires_grad_(mode == "fwd+bwd")

    def op_of(impl_name):
        if impl_name == "compile":
            ref = torch.compile(bn_leaky_relu_ref)
            return lambda: ref(x, w, b, rm, rv, True, 0.1, 1e-5, slope)
        return lambda: bn_leaky_relu(x, w, b, rm, rv, True, 0.1, 1e-5, slope, impl=impl_name)

    def step_of(op):
        if mode == "fwd":
            return op
        return lambda: torch.autograd.grad(op(), (x, w, b), dy)  # grad, not backward: no accumulation traffic

    elem = x.element_size() * x.numel()
    info = {**_env(device), "impl": impl, "mode": mode, "shape": list(shape), "format": fmt,
            "negative_slope": slope, "min_bytes": elem * (2 if mode == "fwd" else 5)}
    if impl == "triton":  # its own passes: stats read x, apply reads x writes y; backward 2 + 3 more
        info["kernel_bytes"] = elem * (3 if mode == "fwd" else 8)
    eager = None if impl == "torch" else (lambda: step_of(op_of("torch")))
    info.update(bench_op(benchmark, step_of(op_of(impl)), device, info["min_bytes"], eager))
    benchmark.extra_info.update(info)
