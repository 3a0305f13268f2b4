"""`fastgan report`: one self-contained page holding every figure it claims, which a real browser
renders without errors."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastgan.analysis.report import build_report
from fastgan.cli import main

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "",
                             shutil.which("google-chrome") or "") if p and Path(p).is_file()), None)


@pytest.fixture(scope="module")
def run_dir(tiny_ckpt) -> Path:
    run = tiny_ckpt.parent.parent
    for argv in (["interpolate", "--k", "2", "--steps", "3"], ["pick", "-n", "8"]):
        assert main(["analyze", argv[0], str(tiny_ckpt), *argv[1:], "--device", "cpu"]) == 0
    return run


def test_report_inlines_every_figure(run_dir, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    text = out.read_text()
    _, figures = build_report(run_dir)
    on_disk = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                     if p.suffix in (".png", ".gif") and p.name != "loss_curve.png")
    assert set(on_disk) <= set(figures), set(on_disk) - set(figures)
    for rel in on_disk:  # each file's exact bytes are in the page
        assert base64.b64encode((run_dir / rel).read_bytes()).decode() in text, rel
    assert "analysis/interpolate/interpolate.gif" in figures and "analysis/pick/pick.png" in figures
    assert len(re.findall(r'<img [^>]*src="data:image/(?:png|gif);base64,', text)) == len(figures)
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "mid_norm_slerp" in text and "step-0000002.pt" in text


def test_report_of_a_folder_that_is_not_a_run(tmp_path, cli_error):
    assert "not a fastgan run folder" in cli_error(["report", str(tmp_path)])


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(page)]) == 0
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False).stdout
    # the page's own script marks <body data-errors="N"> once loaded (window.onerror, undecodable images)
    m = re.search(r'<body[^>]*data-errors="(\d+)"', dom)
    assert m, f"the page never finished loading (no data-errors mark): {dom[:300]!r}"
    assert m.group(1) == "0", re.search(r"<title>(.*?)</title>", dom).group(1)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=False)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (2000, 1200) and img.std() > 10, img.std()  # text, tables and grids, not a blank page


def test_report_survives_damaged_run_files(tmp_path, capsys):
    """A cut or hand-edited config.json, metrics.jsonl or analysis JSON is shown as such, never a crash."""
    run = tmp_path / "run"
    (run / "analysis" / "pick").mkdir(parents=True)
    (run / "analysis" / "pick" / "pick.json").write_text("[1, 2]\n")  # valid JSON, not a result
    (run / "analysis" / "pick" / "cut.json").write_text('{"protocol": {"n"')
    (run / "metrics.jsonl").write_bytes(b'{"step": 10, "d_loss": 1.5, "g_loss": 0.7}\n[1]\n{"d_loss": 2}\n\xff\xfe{"st')
    for cfg in ('{"model": {"arch"', '["model"]', "\xff"):
        (run / "config.json").write_text(cfg, errors="surrogateescape")
        assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0, capsys.readouterr().err
        text = (tmp_path / "r.html").read_text()
        assert "no readable config.json" in text
        assert "1 log lines up to step 10" in text  # the one whole row with a step, the rest skipped
        assert "pick.json: not an analysis result" in text and "cut.json: not an analysis result" in text
