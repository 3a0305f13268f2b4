"""bench/quality/run.py at a toy budget on the bundled digits: the fixed-budget quality benchmark runs end to end
(calibration, classifier evaluations, Inception FID where the weights are present, curve and sample grid), so it
cannot rot between the long runs that produce the README's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # calibration + 100 steps + a classifier trained once into the test's cache: ~30-60 s of CPU
def test_quality_bench_runs_end_to_end(tmp_path):
    from fastgan.metrics.inception import NPZ_NAME

    data = Path(os.environ.get("FASTGAN_DATA") or REPO.parent / "shared" / "data")
    with_fid = (data / "inception" / NPZ_NAME).is_file()  # else that stage is left out (the rest still runs)
    out, docs = tmp_path / "q.json", tmp_path / "docs"
    fid = ["--fid-samples", "50" if with_fid else "0"]
    env = {**os.environ, "FASTGAN_CACHE": str(tmp_path / "cache"), "FASTGAN_DATA": str(data)}
    base = [sys.executable, str(REPO / "bench" / "quality" / "run.py"), "--presets", "digits-cdcgan", "--evals", "2",
            "--eval-samples", "200", "--runs", str(tmp_path / "runs"), "--docs", str(docs), "--out", str(out)]

    def bench(*extra: str) -> dict:
        r = subprocess.run([*base, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                           check=False)
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(out.read_text())

    doc = bench("--steps", "100", "--set", "optim.ema_start=10", *fid)
    assert doc["device"].startswith("CPU")
    (res,) = doc["results"]
    assert res["command"].startswith("python bench/quality/run.py --presets digits-cdcgan")
    # trained as `fastgan train --fast` trains here (channels-last everywhere, bf16 where the CPU has it)
    assert res["config"]["train"]["fast"] is True and res["fast"]["channels_last"] is True
    assert res["entry"] == "digits-cdcgan optim.ema_start=10" and res["overrides"]["optim.ema_start"] == "10"
    assert res["steps"] == 100 and res["stopped_by"] == "fixed step count"
    assert res["images_seen"] == 100 * res["batch_size"]
    assert res["classifier"]["trained_now"] is True  # into the test's own cache, not the user's
    assert [p["step"] for p in res["curve"]] == [50, 100]
    assert all(0 <= p["classifier_acc"] <= 1 and p["classifier_fid"] > 0 for p in res["curve"])
    assert res["final"]["step"] == 100 and res["best_classifier_fid"]["value"] == pytest.approx(
        min(p["classifier_fid"] for p in res["curve"]), abs=1e-4)
    if with_fid:
        assert res["inception_fid"]["fid"] > 0 and res["inception_fid"]["protocol"]["generated"] == 50
    # an experiment's pictures are named after it: the preset's own (the README's) are never overwritten
    assert (docs / "quality-digits-cdcgan_optim.ema_start_10.png").stat().st_size > 1000
    assert (docs / "samples-digits-cdcgan_optim.ema_start_10.png").stat().st_size > 1000
    assert not (docs / "quality-digits-cdcgan.png").exists()

    # the timed form: the clock (12 s) stops the run before its step cap, and the entry is merged in
    # (--plain: fp32 eager, named apart from the --fast entry)
    doc = bench("--minutes", "0.2", "--set", "optim.ema_start=20", "--fid-samples", "0", "--plain")
    assert [e["entry"] for e in doc["results"]] == ["digits-cdcgan optim.ema_start=10",
                                                    "digits-cdcgan optim.ema_start=20 --plain"]
    timed = doc["results"][1]
    assert timed["config"]["train"]["fast"] is False and "fast" not in timed
    assert timed["stopped_by"] == "the clock" and 0 < timed["steps"] < timed["config"]["train"]["steps"]
    assert 12 <= timed["train_wall_seconds"] < 60
