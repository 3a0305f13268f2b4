"""``fastgan bench`` and the benchmark's baseline loop, at a tiny batch on the CPU."""

from __future__ import annotations

import json

import torch

from fastgan.benchmark import suite
from fastgan.cli import main

CPU = torch.device("cpu")


def test_bench_prints_a_table_with_the_ratio_to_the_baseline_of_the_same_run(capsys, tmp_path):
    rc = main(["bench", "--case", "dcgan-28", "--mode", "eager", "--mode", "graph+amp", "--batch", "8",
               "--rounds", "1", "--device", "cpu", "--json", str(tmp_path / "b.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "skipping graph+amp: --cuda-graph needs a CUDA device" in err
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["baseline", "eager"]  # the baseline is always measured first
    base, eager = rows
    assert abs(eager["speedup_vs_baseline"] - eager["images_per_s"] / base["images_per_s"]) < 0.03  # both rounded
    assert all(r["images_per_s"] > 0 and r["tflops_per_s"] > 0 for r in rows)
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["case", "batch", "mode", "images/s"] and len(lines) == 4
    assert lines[3].split()[:3] == ["dcgan-28", "8", "eager"]


def test_bench_refuses_an_unknown_mode(capsys):
    rc = main(["bench", "--mode", "turbo", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("fastgan: error: unknown mode 'turbo'") and len(err.splitlines()) == 1


def test_baseline_loop_trains_the_same_architecture():
    """Same G and D, so about the same FLOPs: the example-style loop reuses the D step's fake batch for the
    G step (one G forward fewer) but computes D's weight gradients there too (about one D forward more)."""
    step = suite.iteration_flops("dcgan-28", 8, False, CPU)  # counted once per case: shared with the test above
    base = suite.iteration_flops("dcgan-28", 8, True, CPU)
    assert abs(base / step - 1) < 0.1, (base, step)
    runner = suite.Runner("dcgan-28", "baseline", 8, CPU)
    loop = runner.iteration.__self__
    before = [p.detach().clone() for p in (*loop.G.parameters(), *loop.D.parameters())]
    runner.run(2)
    after = [*loop.G.parameters(), *loop.D.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert len(loop.log) == 2 and all(torch.isfinite(torch.tensor(loop.log)))
