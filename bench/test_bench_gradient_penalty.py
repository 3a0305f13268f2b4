"""WGAN-GP pieces' speed: the Triton ops vs eager torch vs torch.compile of the torch references.

    pytest bench/test_bench_bn_leaky_relu.py bench/test_bench_gradient_penalty.py --benchmark-enable \\
        --benchmark-json bench/results/kernels-<device>.json

The interpolation x_hat = eps*x + (1-eps)*x_fake (forward) and the norm penalty over g = dD/dx_hat
(forward, and forward+backward to g), fp32, at WGAN-GP image shapes (1x32x32 Fashion-MNIST, 3x64x64)
for batch 128 and 1024. Without CUDA those cases skip and one tiny CPU smoke case runs eager torch only.
Timing and extra_info as in bench/test_bench_bn_leaky_relu.py; minimal traffic: interpolation reads two
images and writes one; the penalty reads g (forward) and reads g and writes dg again (backward).
"""

from __future__ import annotations

import pytest
import torch

from fastgan.benchmark.timing import bench_op
from fastgan.kernels.gradient_penalty import (
    gradient_norm_penalty,
    gradient_norm_penalty_ref,
    interpolate,
    interpolate_ref,
)

CASES = [("cuda", (b, *img)) for b in (128, 1024) for img in ((1, 32, 32), (3, 64, 64))]
CASES.append(("cpu", (8, 1, 16, 16)))  # the smoke case
OPS = {"interpolate": 3, "penalty-fwd": 1, "penalty-fwd+bwd": 3}  # op -> minimal traffic in image sizes
IMPLS = ["triton", "torch", "compile"]


def _step(op: str, impl: str, real, fake, eps, g):
    if op == "interpolate":
        if impl == "compile":
            ref = torch.compile(interpolate_ref)
            return lambda: ref(real, fake, eps)
        return lambda: interpolate(real, fake, eps, impl=impl)
    if impl == "compile":
        ref = torch.compile(gradient_norm_penalty_ref)
        penalty = lambda: ref(g, 10.0)
    else:
        penalty = lambda: gradient_norm_penalty(g, 10.0, impl=impl)
    if op == "penalty-fwd":
        return penalty
    return lambda: torch.autograd.grad(penalty(), g)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("device,shape", CASES, ids=[f"{d}-b{s[0]}-{s[1]}x{s[2]}x{s[3]}" for d, s in CASES])
def test_gradient_penalty(benchmark, device, shape, op, impl):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (a GPU measurement still owed)")
    if device == "cpu" and impl != "torch":
        pytest.skip("CPU smoke case: eager torch only (Triton needs a GPU; compile is too slow for a smoke case)")
    real, fake = torch.randn(shape, device=device), torch.randn(shape, device=device)
    eps = torch.rand(shape[0], device=device)
    g = (torch.randn(shape, device=device) * 0.02).requires_grad_(op == "penalty-fwd+bwd")
    import triton

    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
            "triton": triton.__version__, "impl": impl, "op": op, "shape": list(shape),
            "min_bytes": OPS[op] * real.numel() * real.element_size()}
    eager = None if impl == "torch" else (lambda: _step(op, "torch", real, fake, eps, g))
    info.update(bench_op(benchmark, _step(op, impl, real, fake, eps, g), device, info["min_bytes"], eager))
    benchmark.extra_info.update(info)
