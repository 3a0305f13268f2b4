"""D as a feature extractor: a trained D's features beat the same architecture untrained."""

from __future__ import annotations

import json

import pytest
import torch

from fastgan.analysis import dfeatures
from fastgan.analysis.common import load_model
from fastgan.cli import main

MARGIN = 0.03  # accuracy points the trained D must gain over the untrained one (measured: see README)


@pytest.mark.slow  # SVMs on every digit, three feature sets: ~14 s on 2 cores
def test_features_shapes_and_json(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt, torch.device("cpu"))
    x = torch.randint(0, 256, (5, 1, 32, 32), dtype=torch.uint8)
    f = dfeatures.d_features(model.discriminator(), x, model.device)
    # d_width 8 at 32 px: activations of 8, 16, 32 channels, each max-pooled to 4x4
    assert f.shape == (5, (8 + 16 + 32) * 16)
    assert main(["analyze", "dfeatures", str(tiny_ckpt), "--out", str(tmp_path), "--per-class", "5,30",
                 "--max-test", "200", "--device", "cpu"]) == 0
    res = json.loads((tmp_path / "dfeatures.json").read_text())
    rows = {(r["features"], r["per_class"]): r for r in res["results"]}
    assert set(rows) == {(f, n) for f in ("D (trained)", "D (untrained)", "pixels") for n in (5, 30)}
    assert rows[("pixels", 5)]["labels"] == 50 and rows[("pixels", 30)]["labels"] == 300
    assert rows[("pixels", 30)]["test_accuracy"] > 0.75  # a linear SVM on digit pixels is a strong baseline


def test_label_planes_do_not_leak_the_class(tiny_ckpt):
    """Features of one image must not depend on anything but the image (zero label planes)."""
    model = load_model(tiny_ckpt, torch.device("cpu"))
    x = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    D = model.discriminator()
    torch.testing.assert_close(dfeatures.d_features(D, x, model.device)[1:2],
                               dfeatures.d_features(D, x[1:2], model.device))


@pytest.mark.slow
def test_trained_d_beats_untrained_d(trained_ckpt):
    model = load_model(trained_ckpt, torch.device("cpu"))
    r = dfeatures.analyse(model, [20], seed=0, quiet=True)
    acc = {row["features"]: row["test_accuracy"] for row in r["rows"]}
    print(acc)
    assert acc["D (trained)"] >= acc["D (untrained)"] + MARGIN, acc
