"""--tensorboard: the event files read back with TensorBoard's own reader (scalars at metrics.jsonl's steps and
values, sample grids, the config as hparams), a resume that purges the lost steps, a live `tensorboard` server
serving the scalars, and the missing package as one line."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fastgan.cli import main
from fastgan.config import load_config

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'fastgan[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fastgan.engine.loggers import TensorBoardLogger

TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16", "--batch-size", "16",
        "--set", "train.grid_size=20", "--set", "train.log_every=2", "--set", "train.sample_every=2",
        "--set", "train.ckpt_every=2", "--quiet"]


def events(tb: Path) -> EventAccumulator:
    ea = EventAccumulator(str(tb), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def rows(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tb") / "run"
    assert main(["train", "--steps", "4", "--out", str(run), "--tensorboard", *TINY]) == 0
    return run


def test_scalars_are_the_metrics_jsonl_rows_at_their_steps(tb_run):
    ea = events(tb_run / "tb")
    logged = rows(tb_run)
    assert [r["step"] for r in logged] == [2, 4]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "acc_real", "acc_fake", "images_per_s"):
        got = [(e.step, e.value) for e in ea.Scalars(key)]
        assert [s for s, _ in got] == [2, 4], key
        assert [v for _, v in got] == pytest.approx([r[key] for r in logged], rel=1e-6), key


def test_sample_grids_and_config_are_there(tb_run):
    ea = events(tb_run / "tb")
    imgs = ea.Images("samples")
    assert [i.step for i in imgs] == [2, 4]  # final.png repeats step 4's grid: written once
    png = (tb_run / "samples" / "step-0000004.png").read_bytes()
    from io import BytesIO

    from PIL import Image

    w, h = Image.open(BytesIO(png)).size
    assert (imgs[-1].width, imgs[-1].height) == (w, h)  # the PNG's layout
    assert set(ea.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                                     "_hparams_/session_end_info"}
    start = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"model.z_dim" in start and b"train.loggers" in start
    assert "config/text_summary" in ea.Tags()["tensors"]


@pytest.mark.slow  # two short trainings: ~20 s on 2 cores
def test_eval_rows_and_a_resume_purge_the_lost_steps(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--steps", "4", "--out", str(run), "--tensorboard", *TINY]) == 0
    # work after the step-4 checkpoint that a crash lost: its events must not survive the resume
    lost = TensorBoardLogger(load_config(None, {}), run, 4)
    lost.scalars({"step": 6, "d_loss": 99.0, "fid": 12.5})  # an eval row goes the same way as a loss row
    lost.close()
    assert [e.value for e in events(run / "tb").Scalars("fid")] == [12.5]
    assert main(["train", "--steps", "6", "--out", str(run), "--resume", "auto", "--tensorboard", *TINY]) == 0
    ea = events(run / "tb")
    d = [(e.step, e.value) for e in ea.Scalars("d_loss")]
    assert [s for s, _ in d] == [2, 4, 6] and 99.0 not in [v for _, v in d]
    assert ea.Scalars("fid") == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_run(tb_run):
    exe = shutil.which("tensorboard")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    port = _free_port()
    proc = subprocess.Popen([*cmd, "--logdir", str(tb_run / "tb"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, tags, last = time.monotonic() + 60, None, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.loads(r.read())
                if tags:
                    break
            except OSError as e:  # not listening yet
                last = str(e)
            time.sleep(0.5)
        if not tags:
            out = proc.stdout.read().decode(errors="replace")[-400:] if proc.poll() is not None else last
            pytest.skip(f"tensorboard did not start within 60 s here: {out}")
        (run_tags,) = tags.values()
        assert {"d_loss", "g_loss", "d_real", "images_per_s"} <= set(run_tags)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_missing_package_is_one_line_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    run = tmp_path / "run"
    rc = main(["train", "--steps", "2", "--out", str(run), "--tensorboard", *TINY])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "pip install 'fastgan[tensorboard]'" in err[0], err
    assert not (run / "config.json").exists() and not (run / "checkpoints").exists()


def test_bad_logger_name_is_one_line(capsys):
    assert main(["train", "--set", "train.loggers=jsonl,wandb", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.loggers: 'wandb'" in err[0] and "tensorboard" in err[0]
