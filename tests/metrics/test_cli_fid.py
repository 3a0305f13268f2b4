"""`fastgan fid`: sources, JSON protocol, and one-line errors with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fastgan.cli import main
from fastgan.metrics.fid import Stats, load_stats, save_stats
from fastgan.metrics.inception import NPZ_SHA256, PTH_NAME


def _stats_file(path, d, n=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    save_stats(path, Stats(x.mean(0), np.cov(x, rowvar=False), n))
    return str(path)


def _folder(path, sizes, mode="L"):
    path.mkdir()
    rng = np.random.default_rng(1)
    for i, s in enumerate(sizes):
        shape = (s, s) if mode == "L" else (s, s, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path / f"{i}.png")
    return str(path)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_two_stats_files_give_json_with_protocol(tmp_path, capsys):
    a, b = _stats_file(tmp_path / "a.npz", 16, seed=0), _stats_file(tmp_path / "b.npz", 16, seed=1)
    assert main(["fid", a, b, "--impl", "numpy"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fid"] > 0 and out["protocol"]["trace_sqrt"] == "numpy"
    assert out["protocol"]["a"] == {"source": a, "kind": "stats", "count": 50}


def test_images_checkpoint_and_saved_stats(tmp_path, capsys, npz_path, tiny_checkpoint):
    folder = _folder(tmp_path / "imgs", [28, 28, 28, 32, 32], mode="L")  # mixed sizes: reported, not refused
    w = ["--weights", str(npz_path), "--quiet"]
    assert main(["fid", folder, "digits:test", "--samples", "6", *w, "--save-stats", str(tmp_path / "f.npz")]) == 0
    cap = capsys.readouterr()
    direct = json.loads(cap.out)
    assert "2 sizes" in cap.err
    p = direct["protocol"]
    assert p["a"]["count"] == 5 and p["a"]["mixed_sizes"] == {"28x28": 3, "32x32": 2}
    assert p["b"] == {"source": "digits:test", "kind": "dataset", "count": 6, "resolution": 8, "first": 6}
    assert p["weights_sha256"] == NPZ_SHA256 and p["dims"] == 2048 and "299" in p["resize"]
    assert load_stats(tmp_path / "f.npz").n == 5
    assert main(["fid", str(tmp_path / "f.npz"), "digits:test", "--samples", "6", *w]) == 0
    assert json.loads(capsys.readouterr().out)["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert main(["fid", str(tiny_checkpoint), str(tmp_path / "f.npz"), "--samples", "5", *w]) == 0
    gen = json.loads(capsys.readouterr().out)
    assert gen["fid"] > 0 and gen["protocol"]["a"]["kind"] == "checkpoint" and gen["protocol"]["a"]["count"] == 5


def test_bad_input_one_line_exit_2(tmp_path, capsys, npz_path):
    good = _stats_file(tmp_path / "good.npz", 16)
    np.savez(tmp_path / "nomu.npz", images=np.zeros((2, 4)))
    assert "no 'mu' and 'sigma'" in _error(capsys, ["fid", str(tmp_path / "nomu.npz"), good])
    other = _stats_file(tmp_path / "d8.npz", 8)
    assert "different feature sizes (16 vs 8)" in _error(capsys, ["fid", good, other])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds 0 images" in _error(capsys, ["fid", str(empty), good])
    one = _folder(tmp_path / "one", [28])
    assert "holds 1 images" in _error(capsys, ["fid", one, good])
    # --save-stats rather than B = good.npz: 2048-d images against 16-d stats is refused before any weights are read
    err = _error(capsys, ["fid", "digits:test", "--save-stats", str(tmp_path / "s.npz"), "--weights",
                          str(tmp_path / "missing.pth")])
    assert "missing.pth does not exist" in err
    bad = tmp_path / PTH_NAME
    bad.write_bytes(b"x" * 100)
    assert "has sha256" in _error(capsys, ["fid", "digits:test", "--save-stats", str(tmp_path / "s.npz"), "--weights",
                                           str(bad)])
    assert "good.npz has d=16 features but the other side has d=2048" in _error(capsys, ["fid", "digits:test", good])
    err = _error(capsys, ["fid", "digits:test", "--isc", "--weights", str(npz_path)])
    assert "no fc layer, so no Inception Score" in err
    assert "is not an image folder" in _error(capsys, ["fid", "nosuch:test", good])
    assert "give a second source" in _error(capsys, ["fid", good])


def test_missing_weights_offline_says_where_to_put_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    err = _error(capsys, ["fid", "digits:test", _stats_file(tmp_path / "s.npz", 2048, n=10), "--no-download"])
    assert "weights not found: put pt_inception-2015-12-05-6726825d.pth" in err
