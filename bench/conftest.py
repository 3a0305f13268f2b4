"""Options and the end-of-run table of the train-step benchmark (bench/test_bench_train_step.py).

    pytest bench/test_bench_train_step.py --benchmark-enable --benchmark-json bench/results/train-step-cpu.json
    pytest bench/test_bench_train_step.py --benchmark-enable -k "dcgan-32 and (baseline or eager or compile)"
"""

from __future__ import annotations

import pytest

ROWS: list[dict] = []  # one per measured case, in run order: the baselines come first within a case


def pytest_addoption(parser):
    g = parser.getgroup("fastgan train-step benchmark")
    g.addoption("--bench-device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    g.addoption("--bench-batch", type=int, action="append",
                help="batch size, repeatable (default 128 and 1024 on a GPU, 64 on a CPU)")
    g.addoption("--bench-rounds", type=int, help="timed rounds per case (default 10 on a GPU, 5 on a CPU)")
    g.addoption("--bench-per-round", type=int, help="iterations per timed round (default 20 on a GPU, 1 on a CPU)")
    g.addoption("--bench-threads", type=int, help="torch CPU threads (default torch's; 1 is steadier on a shared machine)")


@pytest.fixture(scope="session")
def train_step_rows() -> list[dict]:
    return ROWS


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        from fastgan.benchmark.suite import table

        terminalreporter.section("train step: images/s and speedup over the baseline of the same run")
        for line in table(ROWS).splitlines():
            terminalreporter.write_line(line)
