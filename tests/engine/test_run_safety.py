"""What a run refuses before its first step, and what it keeps when it must stop: config values torch would
reject mid-run, a resume into another run's folder, a fine-tune from a loose checkpoint file, an evaluation
metric the run cannot compute, and the steps done before a failing side effect."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from fastgan.cli import main
from fastgan.config import ConfigError, higher_is_better, load_config
from fastgan.devices import usable_threads
from fastgan.engine import loop
from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
from fastgan.errors import FastganError


def user_error(capsys, argv: list[str], *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan: error:") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# -- values torch.optim / OpenMP / the loss would reject only once the run is under way ------------------------------

@pytest.mark.parametrize(("key", "value", "says"), [
    ("optim.g_betas", "1.5,0.9", "each in [0, 1)"), ("optim.d_betas", "nan,0.5", "each in [0, 1)"),
    ("optim.g_lr", "inf", "(0, 1]"), ("optim.d_lr", "nan", "(0, 1]"),
    ("optim.g_lr", "1e39", "(0, 1]"),  # finite, but past float32: torch failed inside the first step
    ("loss.gp_weight", "-5", "from 0 to"), ("loss.gp_weight", "nan", "from 0 to"), ("loss.aux_weight", "inf", "to 1e+06"),
    ("loss.instance_noise", "nan", "from 0 to"), ("loss.instance_noise", "1e300", "to 100"),
    ("eval.reference", "1", "at least 10"), ("loss.instance_noise_steps", "-3", ">= 0"),
    ("optim.ema_start", "-5", ">= 0"), ("train.threads", "-1", ">= 0"), ("train.threads", "100000", "at most 1024"),
    ("data.split", "foo", "train, test"), ("eval.metric", "foo", "classifier_acc_<label>"),
])
def test_values_refused_before_the_run(key, value, says):
    with pytest.raises(ConfigError, match=rf"bad value for {key}: .*{__import__('re').escape(says)}"):
        load_config(None, {key: value})


def test_values_just_inside_the_limits_are_taken():
    cfg = load_config(None, {"optim.g_betas": "0,0.99", "loss.gp_weight": "0", "train.threads": "1024",
                             "eval.metric": "classifier_acc_3", "data.split": "test"})
    assert cfg.optim.g_betas == (0.0, 0.99) and cfg.train.threads == 1024


def test_nul_in_a_path_from_a_config_file_names_key_and_line(tmp_path, capsys):
    (tmp_path / "nul.json").write_text('{"train": {"steps": 2,\n "out": "a\\u0000b"}}')
    user_error(capsys, ["train", "--config", str(tmp_path / "nul.json")], "train.out", "NUL", "nul.json, line 2")
    assert not (tmp_path / "a").exists()


def test_unusable_cache_dir_is_refused_before_any_work(tmp_path, tiny_argv, capsys):
    (tmp_path / "afile").write_text("x")
    user_error(capsys, _train(tmp_path, "r", tiny_argv, "--steps", "2", "--set",
                              f"data.cache_dir={tmp_path / 'afile' / 'sub'}"), "data.cache_dir")
    assert not (tmp_path / "r").exists()


def test_preset_through_set_says_where_it_goes(capsys):
    user_error(capsys, ["train", "--set", "preset=mnist-dcgan", "--dry-run"], "not a --set key", "fastgan train mnist-dcgan")


def test_more_threads_than_cpus_are_lowered_once():
    import os

    cpus = len(os.sched_getaffinity(0))
    assert usable_threads(cpus) == cpus
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert usable_threads(cpus + 1000) == cpus
    assert len(caught) == 1 and f"using {cpus}" in str(caught[0].message)


def test_metric_direction():
    assert not higher_is_better("fid") and not higher_is_better("classifier_fid")
    assert higher_is_better("classifier_acc") and higher_is_better("classifier_acc_7")
    assert higher_is_better("inception_score_mean") and higher_is_better("classifier_is")


# -- resume and fine-tune: which folder a checkpoint belongs to -------------------------------------------------------

def _train(tmp: Path, out: str, tiny_argv, *extra: str) -> list[str]:
    return ["train", "--quiet", "--out", str(tmp / out), *tiny_argv, *extra]


def test_resume_into_another_runs_folder_is_refused_and_changes_nothing(tmp_path, tiny_argv, capsys):
    assert main(_train(tmp_path, "A", tiny_argv, "--steps", "5", "--set", "train.ckpt_every=2",
                       "--set", "train.log_every=1")) == 0
    assert main(_train(tmp_path, "B", tiny_argv, "--steps", "2", "--set", "train.seed=7")) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "A").rglob("*") if p.is_file()}
    user_error(capsys, _train(tmp_path, "A", tiny_argv, "--steps", "8", "--resume",
                              str(tmp_path / "B" / "checkpoints" / "step-0000002.pt")),
               "holds another run", "train.seed: 0 -> 7", "pick a new --out")
    assert {p: p.read_bytes() for p in (tmp_path / "A").rglob("*") if p.is_file()} == before
    # into a new folder: a branch of B, allowed
    assert main(_train(tmp_path, "C", tiny_argv, "--steps", "3", "--set", "train.seed=7", "--resume",
                       str(tmp_path / "B" / "checkpoints" / "step-0000002.pt"))) == 0
    assert [p.name for p in list_checkpoints(tmp_path / "C")] == ["step-0000003.pt"]


def test_resume_from_a_copy_of_the_runs_own_checkpoint_is_allowed(tmp_path, tiny_argv):
    assert main(_train(tmp_path, "A", tiny_argv, "--steps", "5", "--set", "train.ckpt_every=2")) == 0
    backup = tmp_path / "backup-step4.pt"
    backup.write_bytes((tmp_path / "A" / "checkpoints" / "step-0000004.pt").read_bytes())
    assert main(_train(tmp_path, "A", tiny_argv, "--steps", "6", "--resume", str(backup))) == 0
    assert load_checkpoint(list_checkpoints(tmp_path / "A")[-1])["step"] == 6


def test_fine_tune_from_a_loose_checkpoint_file(tmp_path, tiny_argv, capsys):
    assert main(_train(tmp_path, "base", tiny_argv, "--steps", "3")) == 0
    loose = tmp_path / "src.pt"  # a checkpoint outside any run folder; the cwd is tmp_path (conftest)
    loose.write_bytes((tmp_path / "base" / "checkpoints" / "step-0000003.pt").read_bytes())
    assert main(["train", "--quiet", "--steps", "2", "--init-from", "src.pt", "--out", "runs/ft", *tiny_argv]) == 0
    assert [p.name for p in list_checkpoints(tmp_path / "runs" / "ft")] == ["step-0000002.pt"]
    user_error(capsys, ["train", "--steps", "2", "--set", "train.init_from=nope.pt", "--out", "x", *tiny_argv],
               "nope.pt does not exist")
    user_error(capsys, ["train", "--steps", "2", "--init-from", str(tmp_path / "base" / "checkpoints" /
                                                                    "step-0000003.pt"),
                        "--out", str(tmp_path / "base" / "sub"), *tiny_argv], "is inside the run folder of")


# -- evaluation: the metric is checked before step 1; a failure later keeps the steps done ----------------------------

class FakeEvaluator:
    """Stands in for fastgan.metrics.training's evaluator (no Inception on a CPU test): reports ``keys``."""

    def __init__(self, keys, values=None, fail_at_call=None):
        self.keys, self.values, self.fail_at_call, self.calls = tuple(keys), list(values or []), fail_at_call, 0

    def __call__(self, G):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise FastganError("the evaluation broke (test)")
        return {k: self.values[self.calls - 1] for k in self.keys}


def test_metric_the_evaluation_cannot_compute_is_refused_before_step_1(tmp_path, tiny_argv, capsys, monkeypatch):
    monkeypatch.setattr(loop, "make_evaluator", lambda cfg, ds, dev: FakeEvaluator(["classifier_fid", "classifier_acc",
                                                                                    "classifier_acc_0"]))
    user_error(capsys, _train(tmp_path, "r", tiny_argv, "--steps", "6", "--eval-every", "4"),
               "eval.metric 'fid' is not computed", "classifier_fid, classifier_acc with")
    assert not list_checkpoints(tmp_path / "r") and not (tmp_path / "r" / "metrics.jsonl").exists()


def test_failing_evaluation_keeps_the_steps_before_it(tmp_path, tiny_argv, capsys, monkeypatch):
    monkeypatch.setattr(loop, "make_evaluator", lambda cfg, ds, dev: FakeEvaluator(["fid"], [5.0], fail_at_call=2))
    user_error(capsys, _train(tmp_path, "r", tiny_argv, "--steps", "9", "--eval-every", "3",
                              "--set", "train.ckpt_every=100"), "the evaluation broke", "step 6 was saved to",
               "--resume auto")
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step-0000006.pt"]  # not lost with the error
    assert load_checkpoint(tmp_path / "r" / "best.pt")["step"] == 3
    monkeypatch.setattr(loop, "make_evaluator", lambda cfg, ds, dev: FakeEvaluator(["fid"], [4.0]))
    assert main(_train(tmp_path, "r", tiny_argv, "--steps", "9", "--eval-every", "3", "--resume", "auto")) == 0
    assert load_checkpoint(list_checkpoints(tmp_path / "r")[-1])["step"] == 9


def test_higher_is_better_metrics_keep_the_highest(tmp_path, tiny_argv, monkeypatch):
    monkeypatch.setattr(loop, "make_evaluator",
                        lambda cfg, ds, dev: FakeEvaluator(["classifier_acc"], [0.5, 0.9, 0.7]))
    assert main(_train(tmp_path, "r", tiny_argv, "--steps", "9", "--eval-every", "3",
                       "--set", "eval.metric=classifier_acc")) == 0
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["step"] == 6 and best["best"]["value"] == pytest.approx(0.9)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["classifier_acc"] for r in rows if "classifier_acc" in r] == [0.5, 0.9, 0.7]


# -- follow-ups: the CLI's one-line warnings, and messages that named the wrong cause ---------------------------------

def test_fallback_warnings_are_one_line_from_the_cli(tmp_path, tiny_argv):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fastgan", "train", "--quiet", "--steps", "2", "--out", str(tmp_path / "r"),
                        "--set", "train.threads=1000", *tiny_argv], capture_output=True, text=True, timeout=300,
                       check=False, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(ln.startswith("fastgan: threads falls back: 1000 CPU threads asked for") for ln in lines), lines
    assert not any("FallbackWarning" in ln or "usable_threads(" in ln for ln in lines), lines  # no file:line, no source


def test_resume_from_a_folder_says_what_it_is(tmp_path, tiny_argv, capsys):
    (tmp_path / "ck.pt").mkdir()
    user_error(capsys, _train(tmp_path, "r", tiny_argv, "--steps", "2", "--resume", str(tmp_path / "ck.pt")),
               "is not a regular file")
    user_error(capsys, _train(tmp_path, "r", tiny_argv, "--steps", "2", "--resume", str(tmp_path / "gone.pt")),
               "does not exist")


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_deeply_nested_config_file_is_named(tmp_path, capsys, suffix):
    path = tmp_path / f"deep{suffix}"
    path.write_text(("[" * 100000 + "]" * 100000) if suffix == ".json" else "a = " + "[" * 100000 + "]" * 100000)
    user_error(capsys, ["train", "--dry-run", "--config", str(path)], f"deep{suffix}", "nested too deeply")


def test_cache_resolution_is_capped():
    with pytest.raises(ConfigError, match=r"data.cache_resolution: 100000 \(8 to 1024 px"):
        load_config(None, {"data.cache_resolution": "100000"})


def test_file_size_limit_during_training_names_the_limit_and_keeps_the_checkpoint(tmp_path, tiny_argv):
    import os
    import resource
    import subprocess
    import sys

    run = tmp_path / "r"
    assert main(_train(tmp_path, "r", tiny_argv, "--steps", "2")) == 0
    ckpt = run / "checkpoints" / "step-0000002.pt"
    before = ckpt.read_bytes()
    limit = 2 * len(before) // 3  # the next checkpoint cannot be written whole

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    r = subprocess.run([sys.executable, "-m", "fastgan", *_train(tmp_path, "r", tiny_argv, "--steps", "4",
                                                                "--resume", "auto")],
                       capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path, preexec_fn=cap,
                       env={**os.environ})
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "ulimit -f" in err[0] and "step-0000002.pt is intact" in err[0] and "disk full" not in err[0], err[0]
    assert ckpt.read_bytes() == before and not list(run.rglob("*.tmp"))
