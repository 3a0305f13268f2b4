"""FID speed: the trace-sqrt forms against scipy's sqrtm of the product (pytorch-fid's way), side by
side in one run, and the Inception's images/s.

    pytest bench/test_bench_fid.py --benchmark-enable --benchmark-json bench/results/fid-cpu.json

Each case times its reference (scipy.linalg.sqrtm of S1 S2, once: it takes tens of seconds at
d = 2048) in the same test and stores ``reference_s`` and ``speedup`` (reference / median) in
extra_info. Targets: >= 10x at d = 2048 (full rank), >= 50x for the low-rank form at n = 1000.
"""

from __future__ import annotations

import os
import platform
import time
import warnings

import numpy as np
import pytest
import scipy
import scipy.linalg
import torch

from fastgan.metrics import fid as fid_mod
from fastgan.metrics.fid import Stats, features_to_stats

D = 2048
IMPLS = ["native", "numpy", "torch"]
_reference_s: dict[str, float] = {}


def _env() -> dict:
    return {"device": "cuda" if torch.cuda.is_available() else "cpu", "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__}


def _features(rng, n):
    mix = rng.standard_normal((D, D)) / np.sqrt(D)
    return (rng.standard_normal((n, D)) * np.exp(rng.uniform(-2, 1, D))) @ mix


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    full1, full2 = features_to_stats(_features(rng, 3000)), features_to_stats(_features(rng, 3000))
    low1 = features_to_stats(_features(rng, 1000))  # n = 1000 < d: keeps its features
    return full1, full2, low1


def _sqrtm_seconds(key: str, s1: np.ndarray, s2: np.ndarray) -> float:
    if key not in _reference_s:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scipy.linalg.sqrtm(s1 @ s2)
        _reference_s[key] = time.perf_counter() - t
    return _reference_s[key]


def _record(benchmark, ref_s: float, target: float | None, **info) -> float:
    med = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(_env(), reference="scipy.linalg.sqrtm(S1 @ S2)", reference_s=round(ref_s, 3),
                                speedup=round(ref_s / med, 1), **info)
    if target and not benchmark.disabled:
        assert ref_s / med >= target, f"speedup {ref_s / med:.1f}x < {target}x"
    return med


@pytest.mark.parametrize("impl", IMPLS)
def test_trace_sqrt_full_rank_2048(benchmark, stats, impl):
    s1, s2, _ = stats
    ref_s = _sqrtm_seconds("full", s1.sigma, s2.sigma)
    benchmark.pedantic(fid_mod.trace_sqrt, args=(Stats(s1.mu, s1.sigma, s1.n), Stats(s2.mu, s2.sigma, s2.n), impl),
                       rounds=5, warmup_rounds=1)
    _record(benchmark, ref_s, 10 if impl == "native" else None, impl=impl, d=D, form="Cholesky + eigvalsh(L^T S2 L)")


@pytest.mark.parametrize("impl", IMPLS)
def test_trace_sqrt_low_rank_n1000(benchmark, stats, impl):
    _, s2, low = stats
    ref_s = _sqrtm_seconds("lowrank", low.sigma, s2.sigma)
    benchmark.pedantic(fid_mod.trace_sqrt, args=(low, Stats(s2.mu, s2.sigma, s2.n), impl), rounds=5, warmup_rounds=1)
    _record(benchmark, ref_s, 50 if impl == "native" else None, impl=impl, d=D, n=1000,
            form="eigvalsh(A S2 A^T), n x n")


def test_inception_images_per_second(benchmark):
    from fastgan.metrics.inception import NPZ_NAME, load_inception

    data = os.environ.get("FASTGAN_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    path = os.path.join(data, "inception", NPZ_NAME)
    if not os.path.isfile(path):
        pytest.skip(f"Inception weights not found at {path} (set FASTGAN_DATA)")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_inception(path, device=dev)
    batch = 50 if dev.type == "cpu" else 250
    x = torch.rand(batch, 3, 32, 32, device=dev) * 2 - 1

    def run():
        with torch.no_grad():
            net(x)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    med = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(_env(), batch=batch, images_per_s=round(batch / med, 2),
                                gflop_per_image=11.4, tflops=round(batch * 11.4e-3 / med, 3))
