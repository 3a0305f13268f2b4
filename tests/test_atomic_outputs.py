"""Every file a command writes goes through a temp file and a rename: a full disk or a file-size limit ends the
command with one line and leaves an existing output as it was (it used to be truncated to a corrupt file)."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan.cli import main

LIMIT = 16 * 1024  # RLIMIT_FSIZE in bytes: large enough for a small first output, too small for a big second one


@pytest.fixture(scope="module")
def ckpt(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "step-0000002.pt"


def limited(argv: list[str], cwd: Path, limit: int = LIMIT) -> subprocess.CompletedProcess:
    """``python -m fastgan ARGV`` with a file-size limit (``ulimit -f``): writes past it fail with EFBIG, as on a
    full disk, without root or a small filesystem. (Python ignores SIGXFSZ, so the write returns the error.)"""
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "fastgan", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=cap, timeout=300, check=False)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    err = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith(("onnxruntime provider", "-n "))]
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("fastgan: error:"), r.stderr
    for n in needles:
        assert n in err[0], (n, err[0])


def no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.rglob("*.tmp")], list(folder.rglob("*.tmp"))


@pytest.mark.parametrize("suffix", [".npz", ".png"])
def test_sample_over_the_limit_keeps_the_previous_file(ckpt, tmp_path, suffix):
    out = tmp_path / f"keep{suffix}"
    assert main(["sample", str(ckpt), "-n", "4", "--out", str(out)]) == 0
    before = digest(out)
    r = limited(["sample", str(ckpt), "-n", "3000", "--out", str(out)], tmp_path)
    one_error_line(r, str(out), "ulimit -f")
    assert digest(out) == before  # the old samples, whole
    no_temp_files(tmp_path)
    if suffix == ".npz":
        assert np.load(out)["images"].shape[0] == 4


def test_report_and_analysis_outputs_survive(ckpt, tmp_path):
    run = ckpt.parent.parent
    report = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(report)]) == 0
    before = digest(report)
    one_error_line(limited(["report", str(run), "--out", str(report)], tmp_path, limit=4096), str(report))
    assert digest(report) == before
    out = tmp_path / "interp"
    assert main(["analyze", "interpolate", str(ckpt), "--k", "2", "--steps", "3", "--out", str(out),
                 "--device", "cpu"]) == 0
    files = {p: digest(p) for p in out.iterdir()}
    assert len(files) >= 3  # the PNG, the GIF and the JSON
    one_error_line(limited(["analyze", "interpolate", str(ckpt), "--k", "8", "--steps", "12", "--out", str(out),
                            "--device", "cpu"], tmp_path, limit=4096))
    assert {p: digest(p) for p in out.iterdir()} == files  # each file is the old one or (none here) a whole new one
    no_temp_files(tmp_path)


def test_statistics_file_is_written_whole_or_not_at_all(tmp_path):
    from fastgan.metrics.fid import Stats, load_stats, save_stats

    feats = np.random.default_rng(0).standard_normal((50, 8))
    small = Stats(feats.mean(0), np.cov(feats, rowvar=False), 50)
    path = tmp_path / "stats.npz"
    save_stats(path, small)
    before = digest(path)
    code = ("import numpy as np; from fastgan.metrics.fid import Stats, save_stats; f = np.ones((4, 3000)); "
            f"save_stats({str(path)!r}, Stats(f.mean(0), np.eye(3000), 4))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY)))
    assert r.returncode != 0 and "file size limit" in r.stderr
    assert digest(path) == before and load_stats(path).n == 50
    no_temp_files(tmp_path)


def test_save_stats_names_a_npz(tmp_path, capsys):
    assert main(["fid", str(tmp_path), "--save-stats", str(tmp_path / "st.txt")]) == 2
    err = capsys.readouterr().err
    assert "name a .npz file" in err and not (tmp_path / "st.txt.npz").exists()


def test_classifier_file_uses_a_private_temp_name(tmp_path):
    from fastgan.metrics.classifier import DomainClassifier, load_classifier, save_classifier

    mine = tmp_path / "mine.tmp"  # the user's own file, beside the output (it used to be the temp file)
    mine.write_text("precious")
    model = DomainClassifier(1, 10)
    model.meta = {"dataset": "digits", "class_names": [str(i) for i in range(10)], "report": {}}
    save_classifier(model, tmp_path / "mine.pt")
    assert mine.read_text() == "precious"
    loaded = load_classifier(tmp_path / "mine.pt")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_output_folder_that_is_a_file(ckpt, tmp_path, capsys):
    (tmp_path / "t.sh").write_text("#!/bin/sh\n")
    assert main(["analyze", "interpolate", str(ckpt), "--k", "2", "--steps", "3", "--out", str(tmp_path / "t.sh"),
                 "--device", "cpu"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["report", str(ckpt.parent.parent), "--out", str(tmp_path / "t.sh" / "r.html")]) == 2
    assert "which is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "t.sh").read_text() == "#!/bin/sh\n"


def test_onnx_sampling_runs_in_batches(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")
    from fastgan.commands import sample

    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "g.onnx")]) == 0
    monkeypatch.setattr(sample, "ONNX_BATCH", 7)
    assert main(["sample", "--onnx", str(tmp_path / "g.onnx"), "-n", "20", "--out", str(tmp_path / "a.npz"),
                 "--device", "cpu"]) == 0
    monkeypatch.setattr(sample, "ONNX_BATCH", 1024)
    assert main(["sample", "--onnx", str(tmp_path / "g.onnx"), "-n", "20", "--out", str(tmp_path / "b.npz"),
                 "--device", "cpu"]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["images"].shape[0] == 20 and np.array_equal(a["labels"], b["labels"])
    assert np.abs(a["images"].astype(int) - b["images"].astype(int)).max() <= 1  # batching: rounding at most


def test_sample_input_wording(ckpt, tmp_path, capsys):
    assert main(["sample", str(ckpt), "--labels", ",", "--out", str(tmp_path / "x.png")]) == 2
    assert "--labels ',' names no label" in capsys.readouterr().err
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")
    (tmp_path / "dir.onnx").mkdir()
    assert main(["sample", "--onnx", str(tmp_path / "dir.onnx"), "--out", str(tmp_path / "x.png")]) == 2
    assert "dir.onnx is a folder, not a file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_export_over_the_limit_names_the_onnx_file_and_keeps_it(ckpt, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")
    out = tmp_path / "g.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out)]) == 0
    before = digest(out)
    one_error_line(limited(["export", str(ckpt), "--onnx", str(out)], tmp_path, limit=2048), "g.onnx", "ulimit -f")
    assert digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
