"""The domain classifier: training, save/load, and its CLI."""

from __future__ import annotations

import json

import pytest
import torch

from fastgan.cli import main
from fastgan.errors import FastganError
from fastgan.metrics.classifier import default_path, load_classifier


def test_trains_to_high_accuracy_on_digits(digits_classifier_file):
    _, report = digits_classifier_file
    assert report["dataset"] == "digits" and report["train_images"] == 1797
    assert report["test_accuracy"] >= 0.9


def test_save_load_roundtrip_keeps_outputs_and_rng(digits_classifier_file):
    path, _ = digits_classifier_file
    before = torch.get_rng_state()
    a, b = load_classifier(path), load_classifier(path)
    assert torch.equal(before, torch.get_rng_state())  # no random init on load
    x = torch.rand(4, 1, 32, 32) * 2 - 1  # any size: resized to 28
    with torch.no_grad():
        fa, la = a(x, logits=True)
        fb, lb = b(x, logits=True)
    assert fa.shape == (4, 128) and la.shape == (4, 10)
    torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    torch.testing.assert_close(la, lb, rtol=0, atol=0)


def test_bad_classifier_files(tmp_path):
    with pytest.raises(FastganError, match="does not exist"):
        load_classifier(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(FastganError, match="not a fastgan classifier"):
        load_classifier(tmp_path / "junk.pt")


def test_cli_train_saves_where_training_finds_it(capsys, private_cache):
    assert main(["classifier", "train", "--data", "digits", "--epochs", "1", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(default_path("digits")) and default_path("digits").is_file()
    assert 0.0 <= report["test_accuracy"] <= 1.0 and str(private_cache) in report["path"]


def test_cli_eval_of_a_checkpoint(capsys, tiny_checkpoint, digits_classifier_file):
    path, _ = digits_classifier_file
    rc = main(["classifier", "eval", str(tiny_checkpoint), "--classifier", str(path), "--samples", "20"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["classifier_fid"] > 0 and 0 <= res["classifier_acc"] <= 1 and "classifier_acc_9" in res


def test_cli_bad_input(capsys, tmp_path):
    assert main(["classifier", "train", "--data", "nosuch"]) == 2
    assert "not available" in capsys.readouterr().err
    assert main(["classifier", "train", "--data", "digits", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
