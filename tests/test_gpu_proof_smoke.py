"""bench/gpu_proof.py --smoke: every stage of the GPU proof runs at toy sizes on the CPU, so the one-command
proof cannot rot between GPU visits. Checks the JSON: every stage done with numbers, or skipped with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~15 s of CPU time; minutes of wall time on a busy shared machine
def test_smoke_run_writes_every_stage(tmp_path):
    out = tmp_path / "proof"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_proof.py"), "--smoke", "--out", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "proof.json").read_text())
    assert doc["format"] == "fastgan-gpu-proof/1" and doc["smoke"] is True
    assert doc["environment"]["device_type"] == "cpu" and doc["environment"]["torch"]
    stages = doc["stages"]
    assert set(stages) == {"gpu_tests", "kernels", "train_step", "fid", "e2e"}
    for name, st in stages.items():
        assert st["status"] in ("done", "skipped"), (name, st.get("error"), st.get("traceback"))
        assert st["status"] == "done" or st["reason"], name

    tests = stages["gpu_tests"]
    assert tests["tests"] and all(t["outcome"] == "skipped" and "CUDA" in t["message"] for t in tests["tests"])
    assert (out / "gpu-tests.xml").is_file()

    krow = next(r for r in stages["kernels"]["rows"] if r.get("impl") == "torch" and r.get("mode") == "fwd+bwd")
    assert krow["us"] > 0 and krow["gbps"] > 0 and stages["kernels"]["copy_gbps"] > 0

    rows = {r["mode"]: r for r in stages["train_step"]["rows"]}
    assert rows["baseline"]["images_per_s"] > 0 and rows["eager"]["tflops_per_s"] > 0
    assert rows["eager"]["speedup_vs_baseline"] > 0 and rows["eager"]["peak_memory_mib"] > 0
    assert "graph" in rows["graph+compile+amp"]["skipped"] or "CUDA" in rows["graph+compile+amp"]["skipped"]
    assert "CUDA" in rows["eager+triton"]["skipped"]  # skips carry their reason ...
    assert any(s["item"].endswith("eager+triton") for s in doc["skips"])  # ... and are listed once more

    fid = stages["fid"]
    assert fid["images"] > 0 and fid["features_and_stats_s"] > 0 and fid["extrapolated_50k_s"] > fid["total_s"]
    assert fid["fid_value"] > 0  # the reference differs from the generated set by a shifted mean

    e2e = stages["e2e"]
    assert e2e["user_images_per_s"] > 0 and e2e["steady_images_per_s"] > 0 and e2e["fast_picked"]

    targets = {t["target"]: t for t in doc["targets"]}
    assert all(t["status"] in ("met", "missed", "not measured", "n/a") for t in targets.values())
    assert targets["50k-sample FID end to end <= 60 s"]["value"] == fid["extrapolated_50k_s"]
    summary = (out / "summary.md").read_text()
    assert "## Targets" in summary and "## Train step" in summary and "SMOKE" in summary


def _load_proof_module(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_proof", REPO / "bench" / "gpu_proof.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_proof", mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_targets_judge_gpu_figures(monkeypatch):
    """The met/missed verdicts on GPU-shaped figures (the smoke run cannot produce them on a CPU)."""
    gp = _load_proof_module(monkeypatch)

    def row(case, batch, mode, ips, ratio=None):
        return {"case": case, "batch": batch, "mode": mode, "images_per_s": ips, "tflops_per_s": 1.0,
                "peak_memory_mib": 1.0, "speedup_vs_baseline": ratio}

    def krow(batch, speedup, frac):
        return {"shape": [batch, 64, 32, 32], "format": "bf16-cl", "impl": "triton", "mode": "fwd+bwd", "us": 1.0,
                "gbps": 1.0, "fraction_of_copy": frac, "speedup_vs_eager": speedup}

    doc = {"smoke": False, "created": "2026-12-02T00:00:00", "budget_s": 480, "elapsed_s": 400, "skips": [],
           "environment": {"device": "NVIDIA H200"},
           "stages": {
               "train_step": {"rows": [row("dcgan-64", 128, "baseline", 10_000), row("dcgan-64", 128, "eager", 12_000, 1.2),
                                       row("dcgan-64", 128, "graph+compile+amp", 40_000, 4.0),
                                       row("wgan-gp-64", 128, "baseline", 5_000),
                                       row("wgan-gp-64", 128, "graph+compile+amp+triton", 7_500, 1.5),
                                       row("dcgan-64", 1024, "graph+compile+amp", 90_000, 3.0)]},
               "kernels": {"rows": [krow(1024, 2.0, 0.8), krow(1024, 1.6, 0.65), krow(128, 0.9, 0.1)],
                           "auto": {"choice": "triton"}},
               "fid": {"extrapolated_50k_s": 70.0, "measured_50k": {"images": 50_000, "total_s": 45.0}},
               "gpu_tests": {"counts": {"passed": 150, "failed": 1, "error": 0, "skipped": 6}}}}
    got = {t["target"].split(":")[0]: (t["status"], t["value"]) for t in gp.targets(doc)}
    assert got["dcgan-64 b128"] == ("met", 4.0)
    assert got["wgan-gp-64 b128"] == ("missed", 1.5)
    assert got["dcgan-64 b1024"] == ("missed", 90_000)
    assert got["BN+LeakyReLU fwd+bwd at large shapes"][0] == "missed"  # one large shape at 65% of copy
    assert got["--kernels auto picks what measured faster"] == ("met", "triton")
    assert got["50k-sample FID end to end <= 60 s"] == ("met", 45.0)  # measured beats extrapolated
    assert got["GPU tests pass"] == ("missed", "150 passed, 1 failed")
    doc["environment"]["device"] = "NVIDIA A10"
    assert {t["target"]: t["status"] for t in gp.targets(doc)}["dcgan-64 b1024: >= 100,000 images/s (H100/H200)"] == "n/a"
    doc["targets"] = gp.targets(doc)
    text = gp.summary(doc)
    assert "| dcgan-64 b128: best mode >= 3x baseline | met | 4.0 |" in text and "40,000" in text
