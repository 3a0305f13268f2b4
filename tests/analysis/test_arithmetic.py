"""Latent arithmetic: A - A + C is C, and sheet indices are checked."""

from __future__ import annotations

import json

import pytest
import torch

from fastgan.analysis.arithmetic import combine, sheet
from fastgan.analysis.common import load_model, run_g
from fastgan.cli import main


@pytest.mark.slow
def test_a_minus_a_plus_c_is_c(trained_ckpt):
    model = load_model(trained_ckpt, torch.device("cpu"))
    r = combine(model, a=[1, 2, 3], b=[1, 2, 3], c=[7], n=20, seed=4)
    z, y = sheet(model, 20, 4)
    c_img = run_g(model, z[7:8], y[7:8])[0]
    assert r["label"] == int(y[7])
    torch.testing.assert_close(r["result"], c_img, atol=1e-5, rtol=0)
    # negative control: a different sheet image is not within that tolerance
    assert (run_g(model, z[8:9], y[7:8])[0] - c_img).abs().max() > 0.1
    # the pixel-space counterpart is C's image too (mean pixels of A cancel exactly)
    torch.testing.assert_close(r["pixel_result"], c_img.clamp(-1, 1), atol=1e-5, rtol=0)
    # neighbours are different images, near the result
    diffs = (r["neighbours"] - r["result"]).flatten(1).abs().mean(1)
    assert (diffs > 0).all()


def test_pick_then_arithmetic_cli(tiny_ckpt, tmp_path):
    run = tmp_path / "analysis"
    assert main(["analyze", "pick", str(tiny_ckpt), "--out", str(run / "pick"), "-n", "12", "--seed", "3",
                 "--device", "cpu"]) == 0
    sheet_json = json.loads((run / "pick" / "pick.json").read_text())
    assert sheet_json["labels"] == [i % 10 for i in range(12)] and (run / "pick" / "pick.png").stat().st_size > 0
    assert main(["analyze", "arithmetic", str(tiny_ckpt), "--out", str(run / "arithmetic"), "--a", "1,2",
                 "--b", "3", "--c", "11", "--device", "cpu"]) == 0
    res = json.loads((run / "arithmetic" / "arithmetic.json").read_text())
    # the sheet pick wrote (12 images, seed 3) is the one used, so index 11 is valid
    assert res["protocol"]["sheet_n"] == 12 and res["protocol"]["sheet_seed"] == 3 and res["protocol"]["label"] == 1


def test_index_outside_the_sheet_is_a_user_error(tiny_ckpt, cli_error, tmp_path):
    err = cli_error(["analyze", "arithmetic", str(tiny_ckpt), "--out", str(tmp_path), "--a", "1", "--b", "2",
                     "--c", "64", "--device", "cpu"])
    assert "outside the pick sheet" in err and "0..63" in err


@pytest.mark.parametrize("record", ['{"protocol": {"n": 12', '{"protocol": {"n": "12", "seed": 3}}', "[]"])
def test_damaged_pick_record_is_a_user_error(tiny_ckpt, cli_error, tmp_path, record):
    (tmp_path / "pick").mkdir()
    (tmp_path / "pick" / "pick.json").write_text(record)
    argv = ["analyze", "arithmetic", str(tiny_ckpt), "--out", str(tmp_path / "arithmetic"), "--a", "1", "--b", "2",
            "--c", "3", "--device", "cpu"]
    err = cli_error(argv)
    assert "pick.json is not a readable contact-sheet record" in err and "--sheet-seed" in err
    assert main([*argv, "-n", "8", "--sheet-seed", "1"]) == 0  # both given: the record is not needed
