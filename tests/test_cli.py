"""The CLI end to end, and every bad input of the core: one line, exit code 2, no traceback."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastgan.losses
from fastgan.cli import main
from fastgan.engine.checkpoint import list_checkpoints

TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16",
        "--set", "train.log_every=2", "--set", "train.sample_every=4", "--set", "train.ckpt_every=2",
        "--set", "train.grid_size=20", "--batch-size", "16", "--quiet"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastgan: error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture
def tiny_run(capsys, tmp_path) -> Path:
    rc, _, _ = run_cli(capsys, "train", "--steps", 4, "--out", tmp_path / "run", *TINY)
    assert rc == 0
    return tmp_path / "run"


def _write_idx(path: Path, arr: np.ndarray, magic_type: int = 0x08) -> None:
    header = bytes([0, 0, magic_type, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def _fake_mnist(root: Path, n: int = 64, label_max: int = 9, n_labels: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    _write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(root / "train-labels-idx1-ubyte.gz", rng.integers(0, label_max + 1, (n_labels or n,)))
    return root


# -- things that work ---------------------------------------------------------------------------

def test_train_writes_a_complete_run_folder(tiny_run: Path):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "metrics.jsonl", "samples", "checkpoints", "loss_curve.png"} <= names
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"d_loss", "g_loss", "d_real", "d_fake", "acc_real", "acc_fake", "images_per_s"} <= rows[0].keys()
    assert (tiny_run / "samples" / "step-0000004.png").is_file() and (tiny_run / "samples" / "final.png").is_file()
    assert json.loads((tiny_run / "config.json").read_text())["model"]["num_classes"] == 10
    ckpt = torch.load(list_checkpoints(tiny_run)[-1], weights_only=True)  # a checkpoint is data, never code
    assert ckpt["step"] == 4 and ckpt["dataset"]["name"] == "digits"


def test_sample_png_and_npz_with_labels(capsys, tiny_run: Path, tmp_path: Path):
    ckpt = list_checkpoints(tiny_run)[-1]
    rc, _, _ = run_cli(capsys, "sample", ckpt, "--out", tmp_path / "g.png", "-n", 12)
    assert rc == 0
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size[0] > 32
    rc, _, _ = run_cli(capsys, "sample", ckpt, "--out", tmp_path / "s.npz", "-n", 6, "--labels", "3,5")
    assert rc == 0
    z = np.load(tmp_path / "s.npz")
    assert z["images"].shape == (6, 32, 32, 1) and z["images"].dtype == np.uint8
    assert z["labels"].tolist() == [3, 5, 3, 5, 3, 5]


def test_dry_run_prints_resolved_config(capsys):
    rc, out, _ = run_cli(capsys, "train", "fashion-wgan-gp", "--set", "optim.n_critic=3", "--dry-run")
    assert rc == 0
    cfg = json.loads(out)
    assert cfg["optim"]["n_critic"] == 3 and cfg["loss"]["kind"] == "wgan-gp" and cfg["model"]["d_norm"] == "none"


def test_flag_shortcuts_reach_the_config(capsys):
    rc, out, _ = run_cli(capsys, "train", "--amp", "--eval-every", 500, "--patience", 3, "--kernels", "torch",
                         "--dry-run")
    assert rc == 0
    cfg = json.loads(out)
    assert (cfg["train"]["amp"], cfg["eval"]["every"], cfg["eval"]["patience"]) == ("bf16", 500, 3)


def test_presets_lists_every_preset(capsys):
    rc, out, _ = run_cli(capsys, "presets")
    assert rc == 0
    for name in ("digits-cdcgan", "mnist-dcgan", "mnist-cdcgan", "mnist-acgan", "fashion-wgan-gp", "cifar10",
                 "celeba-64", "lsun-church-128", "emnist-letters"):
        assert name in out


def test_mnist_from_the_idx_files(capsys, data_dir: Path, tmp_path: Path):
    rc, out, err = run_cli(capsys, "train", "mnist-cdcgan", "--steps", 2, "--out", tmp_path / "m",
                           "--set", f"data.root={data_dir / 'mnist'}", *TINY)
    assert rc == 0, err
    assert json.loads(out)["step"] == 2


# -- bad input ------------------------------------------------------------------------------------

def test_unknown_preset(capsys):
    assert_user_error(*run_cli(capsys, "train", "mnist-gan")[::2], "unknown preset 'mnist-gan'", "fastgan presets")


def test_unknown_key(capsys):
    assert_user_error(*run_cli(capsys, "train", "--set", "model.depth=3")[::2], "unknown config key 'model.depth'")


def test_bad_value_type(capsys):
    assert_user_error(*run_cli(capsys, "train", "--set", "train.steps=many")[::2], "'many' is not an integer")


def test_missing_data_folder(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "mnist-dcgan", "--set", f"data.root={tmp_path / 'nowhere'}")
    assert_user_error(rc, err, "does not exist", "data.root")


def test_file_that_is_not_idx(capsys, tmp_path):
    root = _fake_mnist(tmp_path / "mnist")
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"<html>not found</html>"))
    rc, _, err = run_cli(capsys, "train", "mnist-dcgan", "--set", f"data.root={root}", "--steps", 1)
    assert_user_error(rc, err, "is not an IDX file", "download")


def test_truncated_idx(capsys, tmp_path):
    root = _fake_mnist(tmp_path / "mnist")
    raw = gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes())
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    rc, _, err = run_cli(capsys, "train", "mnist-dcgan", "--set", f"data.root={root}", "--steps", 1)
    assert_user_error(rc, err, "truncated")


def test_labels_out_of_range_in_data(capsys, tmp_path):
    root = _fake_mnist(tmp_path / "mnist", label_max=12)
    rc, _, err = run_cli(capsys, "train", "mnist-cdcgan", "--set", f"data.root={root}", "--steps", 1)
    assert_user_error(rc, err, "labels in [0, 12] but 10 classes")


def test_label_file_length_mismatch(capsys, tmp_path):
    root = _fake_mnist(tmp_path / "mnist", n_labels=50)
    rc, _, err = run_cli(capsys, "train", "mnist-cdcgan", "--set", f"data.root={root}", "--steps", 1)
    assert_user_error(rc, err, "64 images but", "50 labels")


def test_labels_out_of_range_at_sampling(capsys, tiny_run):
    rc, _, err = run_cli(capsys, "sample", list_checkpoints(tiny_run)[-1], "--labels", "4,10")
    assert_user_error(rc, err, "label 10 is out of range", "0..9")


def test_truncated_checkpoint(capsys, tiny_run, tmp_path):
    ckpt = list_checkpoints(tiny_run)[-1]
    bad = tmp_path / "cut.pt"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    for argv in (["sample", bad], ["train", "--resume", bad]):
        assert_user_error(*run_cli(capsys, *argv)[::2], "truncated or corrupt")


def test_checkpoint_that_is_not_fastgan(capsys, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, other)
    assert_user_error(*run_cli(capsys, "sample", other)[::2], "is not a fastgan checkpoint")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    assert_user_error(*run_cli(capsys, "sample", text)[::2], "truncated or corrupt")


def test_checkpoint_from_another_model(capsys, tiny_run, tmp_path):
    """A checkpoint whose weights belong to a different architecture than its config says."""
    ckpt = torch.load(list_checkpoints(tiny_run)[-1], weights_only=True)
    ckpt["config"]["model"]["g_width"] = 16
    ckpt["config"]["model"]["d_width"] = 16
    forged = tmp_path / "forged.pt"
    torch.save(ckpt, forged)
    assert_user_error(*run_cli(capsys, "sample", forged)[::2], "does not match its config")
    rc, _, err = run_cli(capsys, "train", "--resume", forged, "--out", tmp_path / "x", "--quiet")
    assert_user_error(rc, err, "does not match its config")  # checked on load, before the run is built


def test_resume_with_a_different_config(capsys, tiny_run):
    rc, _, err = run_cli(capsys, "train", "--resume", "auto", "--out", tiny_run, "--steps", 6, *TINY,
                         "--set", "optim.n_critic=2")  # training math (the learning rates may change on resume)
    assert_user_error(rc, err, "cannot resume", "optim.n_critic: 1 -> 2")


def test_existing_run_folder_needs_resume(capsys, tiny_run):
    rc, _, err = run_cli(capsys, "train", "--out", tiny_run, *TINY)
    assert_user_error(rc, err, "already holds checkpoints", "--resume auto")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    d_loss, g_loss = fastgan.losses.LOSSES["ns"]
    calls = {"n": 0}

    def poisoned(real, fake, smoothing=0.0):
        calls["n"] += 1
        loss = d_loss(real, fake, smoothing)
        return loss * float("nan") if calls["n"] > 5 else loss  # diverges in step 6

    monkeypatch.setitem(fastgan.losses.LOSSES, "ns", (poisoned, g_loss))
    run = tmp_path / "nan"
    rc, _, err = run_cli(capsys, "train", "--steps", 10, "--out", run, *TINY)
    assert_user_error(rc, err, "training diverged", "d_loss", "last good checkpoint is", "step-0000004.pt")
    assert [p.name for p in list_checkpoints(run)] == ["step-0000002.pt", "step-0000004.pt"]
    assert torch.load(run / "checkpoints" / "step-0000004.pt", weights_only=True)["step"] == 4


def test_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastgan", "train", "--set", "loss.kind=wgan"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("fastgan: error: bad value for loss.kind: 'wgan' (choose one of ns, hinge, "
                                   "wgan-gp)")
