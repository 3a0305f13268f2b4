from __future__ import annotations

import pytest

from fastgan.config import PRESETS, Config, all_keys, apply_overrides, load_config, parse_set_args
from fastgan.errors import ConfigError


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_resolves(name):
    cfg = load_config(name)
    assert cfg.preset == name
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_defaults_follow_the_dcgan_paper():
    c = Config()
    assert (c.optim.g_lr, c.optim.d_lr, c.optim.g_betas[0], c.train.batch_size) == (2e-4, 2e-4, 0.5, 128)


def test_overrides_typed_and_short_keys():
    cfg = load_config("mnist-dcgan", {"optim.g_betas": "0.0,0.9", "steps": "7", "hflip": "true", "g_lr": "1e-3"})
    assert cfg.optim.g_betas == (0.0, 0.9)
    assert cfg.train.steps == 7 and cfg.data.hflip is True and cfg.optim.g_lr == 1e-3
    assert cfg.data.dataset == "mnist"  # the preset still applies


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"nope": "1"}, "unknown config key 'nope'"),
        ({"train.steps": "ten"}, "bad value for train.steps: 'ten' is not an integer"),
        ({"optim.g_lr": "fast"}, "bad value for optim.g_lr: 'fast' is not a number"),
        ({"data.hflip": "maybe"}, "bad value for data.hflip: 'maybe' is not true or false"),
        ({"optim.g_betas": "0.5"}, "bad value for optim.g_betas"),
        ({"model.conditioning": "film"}, "choose one of none, concat, acgan"),
        ({"loss.kind": "wgan-gp"}, "add --set model.d_norm=none"),
        ({"train.batch_size": "0"}, "must be at least 1"),
    ],
)
def test_bad_overrides_say_what_and_how(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_ambiguous_short_key():
    with pytest.raises(ConfigError, match="ambiguous key 'batch_size'"):
        apply_overrides(Config(), {"batch_size": "3"})


def test_set_syntax():
    assert parse_set_args(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_args(["steps"])


def test_every_key_has_a_type():
    keys = all_keys()
    assert "model.resolution" in keys and "eval.every" in keys
    assert all(t is not None for t in keys.values())
