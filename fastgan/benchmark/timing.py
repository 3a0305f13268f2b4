"""Timing helpers shared by the kernel benchmarks: synchronised medians and the copy-bandwidth ceiling."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

INNER = 20  # op calls per timed call
ROUNDS = 15


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_per_op(fn: Callable[[], object], device: str, rounds: int = ROUNDS, inner: int = INNER) -> float:
    """Median seconds per call of ``fn`` over ``rounds`` timed batches of ``inner`` calls."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / inner


_copy_gbps: dict[str, float] = {}


def copy_bandwidth(device: str) -> float:
    """Measured device copy bandwidth in GB/s (read + write of a 256 MiB fp32 buffer; 32 MiB on a CPU)."""
    if device not in _copy_gbps:
        n = (64 if device == "cuda" else 8) * 2**20
        src = torch.randn(n, device=device)
        dst = torch.empty_like(src)
        dst.copy_(src)
        sync(device)
        _copy_gbps[device] = 2 * src.numel() * 4 / median_per_op(lambda: dst.copy_(src), device) / 1e9
    return _copy_gbps[device]


def bench_op(benchmark, step: Callable[[], object], device: str, min_bytes: int,
             make_eager: Callable[[], Callable[[], object]] | None = None) -> dict[str, float]:
    """Time ``step`` with pytest-benchmark (INNER calls per synchronised round, after a warm-up that keeps
    compilation and autotuning out) and return its per-op time, effective GB/s over ``min_bytes``, that as a
    fraction of the measured copy bandwidth, and, given ``make_eager``, the speedup over the eager reference."""
    for _ in range(3):
        step()
    sync(device)

    def timed():
        for _ in range(INNER):
            step()
        sync(device)

    benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: the case ran once, nothing was measured
        return {}
    per_op = benchmark.stats.stats.median / INNER
    gbps = min_bytes / per_op / 1e9
    info = {"per_op_us": per_op * 1e6, "gbps": gbps, "copy_gbps": copy_bandwidth(device),
            "fraction_of_copy": gbps / copy_bandwidth(device)}
    if make_eager is not None:
        eager = median_per_op(make_eager(), device)
        info.update(eager_us=eager * 1e6, speedup_vs_eager=eager / per_op)
    return info
