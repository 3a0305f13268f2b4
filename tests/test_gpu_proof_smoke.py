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
