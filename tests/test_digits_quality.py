"""The default job learns digits: a short run of the default preset, judged by an SVM."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fastgan.config import load_config
from fastgan.engine.checkpoint import load_generator
from fastgan.engine.loop import train
from fastgan.models import build_generator


@pytest.mark.slow  # 300 training steps of the default preset
def test_default_preset_generates_the_requested_digits(tmp_path, digit_accuracy):
    # The full default (1500 steps) scores about 0.97; 300 steps is enough to clear the 0.8 bar.
    cfg = load_config(None, {"train.steps": "300", "optim.ema_start": "100", "train.out": str(tmp_path / "run")})
    result = train(cfg, quiet=True)
    G, _, _ = load_generator(result.checkpoint, torch.device("cpu"))
    acc = digit_accuracy(G)
    assert acc >= 0.8, f"only {acc:.2f} of conditional samples classified as their label"


def test_untrained_generator_fails_the_check(digit_accuracy):
    """The check itself can fail: an untrained generator scores near chance."""
    cfg = load_config(None)
    G = build_generator(replace(cfg.model, channels=1, num_classes=10))
    assert digit_accuracy(G) < 0.5
