"""Train-step throughput: cases x modes x batch sizes, each against the baseline of the same run.

    pytest bench/test_bench_train_step.py --benchmark-enable --benchmark-json bench/results/train-step-cpu.json

Cases: dcgan-28, dcgan-32, dcgan-64, cdcgan-32, acgan-32, wgan-gp-64. Modes: baseline (the PyTorch
DCGAN example's way, fastgan/benchmark/baseline.py), eager, compile, amp (bf16), compile+amp, graph+amp,
graph+compile+amp, and ``fast`` where --fast picks a combination none of those is; graph modes skip
with the reason on a CPU. Batch 128 and 1024 on a GPU, 64 on a CPU (--bench-batch). Select with -k,
e.g. ``-k "dcgan-32 and (baseline or compile)"`` (a baseline must run in the same session for the
ratio). Without --benchmark-enable each case runs one iteration as a smoke test.

extra_info of each case: images/s, achieved TFLOP/s, GFLOP per iteration (FlopCounterMode on the eager
step), peak memory, speedup over the baseline, device name and library versions (fastgan/benchmark/suite.py).
"""

from __future__ import annotations

import pytest
import torch

from fastgan.benchmark import suite
from fastgan.devices import resolve_device


def _device(config):
    return resolve_device(config.getoption("--bench-device"))


def pytest_generate_tests(metafunc):
    if "case_mode_batch" not in metafunc.fixturenames:
        return
    device = _device(metafunc.config)
    batches = metafunc.config.getoption("--bench-batch") or suite.default_batches(device)
    params = [(c, m, b) for c in suite.CASES for b in batches for m in suite.modes_for(device)]
    metafunc.parametrize("case_mode_batch", params, ids=[f"{c}-{m}-b{b}" for c, m, b in params])


def test_train_step(benchmark, case_mode_batch, train_step_rows, request):
    case, mode, batch = case_mode_batch
    device = _device(request.config)
    why = suite.unsupported(mode, device)
    if why:
        pytest.skip(why)
    if request.config.getoption("--bench-threads"):
        torch.set_num_threads(request.config.getoption("--bench-threads"))
    runner = suite.Runner(case, mode, batch, device)
    if benchmark.disabled:
        runner.run(1)
        return
    timing = suite.default_timing(device)
    rounds = request.config.getoption("--bench-rounds") or timing["rounds"]
    per_round = request.config.getoption("--bench-per-round") or timing["per_round"]
    for _ in range(timing["warmup"]):  # compilation, autotuning and graph capture stay out of the timing
        runner.run(per_round)
    suite.reset_peak(device)
    benchmark.group = f"{case} batch {batch}"
    benchmark.pedantic(runner.run, args=(per_round,), rounds=rounds, iterations=1)
    baseline = next((r["images_per_s"] for r in train_step_rows
                     if (r["case"], r["batch"], r["mode"]) == (case, batch, "baseline")), None)
    row = suite.record(runner, list(benchmark.stats.stats.data), per_round, baseline)
    benchmark.extra_info.update({**row, **suite.environment(device)})
    train_step_rows.append(row)
    del runner
    suite.release(device)
