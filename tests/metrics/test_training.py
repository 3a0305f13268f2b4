"""The in-training evaluator: metrics in metrics.jsonl, best.pt, patience, fixed latents, no global RNG use."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fastgan.config import load_config
from fastgan.data import load_dataset
from fastgan.engine.build import resolve_for_dataset
from fastgan.engine.checkpoint import load_checkpoint
from fastgan.engine.loop import train
from fastgan.errors import ConfigError
from fastgan.metrics.classifier import default_path
from fastgan.metrics.training import make_evaluator
from fastgan.models import build_generator

from .conftest import TINY

EVAL = {"eval.every": "2", "eval.samples": "30", "eval.reference": "200", "eval.inception": "false",
        "eval.metric": "classifier_fid"}


@pytest.fixture
def cached_classifier(digits_classifier_file, private_cache):
    """The digits classifier where the evaluator looks for it by default."""
    default_path("digits").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_classifier_file[0], default_path("digits"))


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_logs_metrics_keeps_best_and_stops_on_patience(tmp_path, cached_classifier):
    cfg = load_config(None, {**TINY, **EVAL, "eval.patience": "1", "train.steps": "20", "train.out": str(tmp_path / "r")})
    result = train(cfg, quiet=True)
    evals = [r for r in _rows(tmp_path / "r") if "classifier_fid" in r]
    assert [r["step"] for r in evals] == list(range(2, result.step + 1, 2))
    for r in evals:
        assert r["classifier_fid"] > 0 and r["classifier_is"] >= 1 and 0 <= r["classifier_acc"] <= 1
        assert all(0 <= r[f"classifier_acc_{i}"] <= 1 for i in range(10))  # conditional: accuracy per label
    values = [r["classifier_fid"] for r in evals]
    # patience 1: training stops at the first evaluation that does not improve on the best so far
    stop = next(i for i in range(1, len(values)) if values[i] >= min(values[:i]))
    assert result.step == evals[stop]["step"] < 20
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["best"]["value"] == pytest.approx(min(values), abs=1e-6)
    assert best["step"] == best["best"]["step"] == evals[values.index(min(values))]["step"]


def test_evaluation_does_not_change_training(tmp_path, cached_classifier):
    """Same weights after 6 steps with and without evaluations: the evaluator never draws from the global RNG."""
    base = {**TINY, "train.steps": "6"}
    a = train(load_config(None, {**base, "train.out": str(tmp_path / "a")}), quiet=True)
    b = train(load_config(None, {**base, **EVAL, "train.out": str(tmp_path / "b")}), quiet=True)
    ga, gb = load_checkpoint(a.checkpoint)["models"]["G"], load_checkpoint(b.checkpoint)["models"]["G"]
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert any("classifier_fid" in r for r in _rows(tmp_path / "b"))


def _setup(overrides):
    cfg = load_config(None, {**TINY, **overrides})
    ds = load_dataset(cfg.data)
    cfg = resolve_for_dataset(cfg, ds)
    return cfg, ds, build_generator(cfg.model).eval()


def test_inception_fid_evaluator(npz_path, private_cache):
    """The default metric: Inception FID against cached reference statistics, on fixed latents."""
    cfg, ds, G = _setup({"eval.samples": "10", "eval.reference": "10", "eval.weights": str(npz_path)})
    rng = torch.get_rng_state()
    evaluate = make_evaluator(cfg, ds, torch.device("cpu"))
    first = evaluate(G)
    assert set(first) == {"fid"} and first["fid"] > 0  # no fc in these weights: no Inception Score
    cached = list((private_cache / "stats").glob("reference-*.npz"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = make_evaluator(cfg, ds, torch.device("cpu"))(G)  # reference from the cache, same latents
    assert again == first and cached[0].stat().st_mtime_ns == mtime
    assert torch.equal(rng, torch.get_rng_state())


def test_evaluator_bad_settings(private_cache):
    cfg, ds, _ = _setup({"eval.inception": "false"})
    with pytest.raises(ConfigError, match="no domain classifier exists"):
        make_evaluator(cfg, ds, torch.device("cpu"))
    cfg, ds, _ = _setup({"eval.inception": "false", "eval.classifier": str(private_cache / "none.pt")})
    with pytest.raises(Exception, match="does not exist"):
        make_evaluator(cfg, ds, torch.device("cpu"))
    cfg, ds, _ = _setup({"eval.samples": "5"})
    with pytest.raises(ConfigError, match="at least 10"):
        make_evaluator(cfg, ds, torch.device("cpu"))
