"""The wiring between the rooms: config choices from one source, one float->uint8 rule, one run-assembly path
(the benchmark's stepper is the trainer's), one fallback warning for every fast path, compute_fid as a library
call, and the options the commands share."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from fastgan import config as config_mod
from fastgan import fallback
from fastgan.cli import build_parser, main
from fastgan.config import DEFAULT_PRESET, PRESETS, RESUMABLE_CHANGES, Config, key_fields, load_config, validate
from fastgan.errors import ConfigError, DataError, FastganError
from fastgan.fallback import FallbackWarning
from fastgan.images import quantize, to_uint8

CPU = torch.device("cpu")


# -- config: allowed values and the resume rule live on the fields ---------------------------------------
def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _action(p: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in p._actions if flag in a.option_strings)


CHOICE_KEYS = [k for k, f in key_fields().items() if f.metadata.get("choices")]


def test_choice_keys_are_the_enumerated_ones():
    assert set(CHOICE_KEYS) == {"model.arch", "model.conditioning", "model.label_mode", "model.d_norm",
                                "model.kernels", "loss.kind", "train.amp", "data.loader"}


@pytest.mark.parametrize("key", CHOICE_KEYS)
def test_validate_reads_the_fields_choices(key):
    allowed = config_mod.choices(key)
    sec, name = key.split(".")
    assert getattr(getattr(Config(), sec), name) in allowed  # the default is one of them
    bad = replace(Config(), **{sec: replace(getattr(Config(), sec), **{name: "nonsense"})})
    with pytest.raises(ConfigError, match=f"bad value for {key}: 'nonsense' \\(choose one of {', '.join(allowed)}\\)"):
        validate(bad)


@pytest.mark.parametrize("flag,key", [("--kernels", "model.kernels"), ("--amp", "train.amp")])
def test_cli_choices_are_the_configs(flag, key):
    assert tuple(_action(_subparser("train"), flag).choices) == config_mod.choices(key)


def test_resumable_keys_are_marked_on_the_fields():
    assert RESUMABLE_CHANGES == {k for k, f in key_fields().items() if f.metadata.get("resumable")}
    # bookkeeping, how the step runs, and the knobs the NaN recovery turns
    assert {"train.steps", "train.amp", "model.kernels", "data.loader", "eval.every", "preset", "optim.g_lr",
            "optim.d_lr", "loss.label_smoothing", "loss.instance_noise"} <= RESUMABLE_CHANGES
    # the training math is not
    assert not {"optim.n_critic", "optim.g_betas", "loss.kind", "model.z_dim", "train.batch_size",
                "train.seed"} & RESUMABLE_CHANGES
    from fastgan.engine.checkpoint import config_differences

    a = load_config(None, {"optim.g_lr": "1e-3", "optim.n_critic": "2", "train.steps": "9"})
    assert config_differences(a, load_config()) == ["optim.n_critic: 1 -> 2"]


def test_default_preset_is_defined_once():
    assert Config().preset == DEFAULT_PRESET == load_config().preset and DEFAULT_PRESET in PRESETS


def test_keys_listing_shows_defaults_choices_and_resume_marks(capsys):
    assert main(["train", "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(key_fields())
    assert 'train.amp = "none"  [none | bf16 | fp16]  (may change on resume)' in lines
    assert "optim.n_critic = 1" in lines


# -- one float -> uint8 rule --------------------------------------------------------------------------
def _levels() -> torch.Tensor:
    """Every level's centre and both rounding edges (ties included), and values outside [-1, 1]."""
    k = torch.arange(256, dtype=torch.float64)
    u = torch.cat([k, k + 0.5, k - 0.5, k + 0.49, k + 0.51]) / 127.5 - 1
    return torch.cat([u, torch.tensor([-3.0, -1.0, 1.0, 2.5])]).float().reshape(1, 1, -1, 4)


def test_to_uint8_is_quantize_in_numpy_layout():
    x = _levels()
    q = quantize(x)
    assert q.dtype == torch.uint8 and int(q.min()) == 0 and int(q.max()) == 255
    assert np.array_equal(to_uint8(x), q.permute(0, 2, 3, 1).numpy())
    # the rule itself: (x + 1) * 127.5, round half to even, clamped
    ref = np.clip(np.round((x.double().numpy().clip(-1, 1) + 1) * 127.5), 0, 255)
    assert np.abs(q.numpy().astype(int) - ref).max() <= 1  # fp32 vs fp64 at exact ties only
    assert torch.equal(quantize(x.bfloat16()), quantize(x.bfloat16().float()))  # fp32 whatever the dtype


def test_onnx_runtime_twin_matches_bit_for_bit():
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")
    from fastgan.export.runtime import to_uint8 as numpy_twin

    x = _levels()
    assert np.array_equal(numpy_twin(x.numpy()), quantize(x).permute(0, 2, 3, 1).numpy())


# -- one run-assembly path: the benchmark trains what the trainer trains -------------------------------
def _bench_modes() -> list[tuple[str, str]]:
    from fastgan.benchmark import suite

    pairs = [("dcgan-28", "eager"), ("cdcgan-32", "amp"), ("dcgan-28", "compile")]
    return pairs + ([("cdcgan-32", "fast")] if "fast" in suite.modes_for(CPU) else [])


def _optim_settings(opt: torch.optim.Optimizer) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("case,mode", _bench_modes())
def test_bench_stepper_is_configured_like_the_trainers(case, mode, tmp_path, monkeypatch):
    """A bench case (synthetic data of the case's shape) against a Trainer of the same config on digits (the
    shapes agree: 1 channel, 10 classes): same stepper class and options, spec, n_critic, loader kind, models
    and optimizers. Nothing runs a step, so compile costs nothing here."""
    from fastgan.benchmark import suite
    from fastgan.engine import fast
    from fastgan.engine.loop import Trainer

    monkeypatch.setattr(fast, "warn_emulated_bf16", lambda device: None)  # no bf16 step runs here
    opts = suite.mode_options(mode, CPU)
    cfg = suite.case_config(case, 8, CPU)
    cfg = replace(cfg, train=replace(cfg.train, compile=opts.compile, amp=opts.amp,
                                     channels_last=opts.channels_last, cuda_graph=opts.cuda_graph))
    bench = suite.Runner(case, mode, 8, CPU).stepper
    trainer = Trainer(cfg, tmp_path / "run", quiet=True).stepper
    assert type(bench) is type(trainer) and bench.opts == trainer.opts == opts
    assert bench.spec == trainer.spec and bench.n_critic == trainer.n_critic == cfg.optim.n_critic
    assert type(bench.loader) is type(trainer.loader) and bench.loader.kind == trainer.loader.kind == "device"
    assert (bench.reference, bench.amp_dtype, type(bench.G), type(bench.D)) == \
        (trainer.reference, trainer.amp_dtype, type(trainer.G), type(trainer.D))
    for name in ("G", "D"):
        a, b = getattr(bench.state, name).state_dict(), getattr(trainer.state, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name  # same seed, same init
        pa, pb = getattr(bench.state, name).parameters(), getattr(trainer.state, name).parameters()
        assert [p.stride() for p in pa] == [p.stride() for p in pb]  # memory format (channels-last) too
    for opt in ("opt_g", "opt_d"):
        assert _optim_settings(getattr(bench.state, opt)) == _optim_settings(getattr(trainer.state, opt))


# -- one fallback warning: every fast path, turned into an error ---------------------------------------
@pytest.fixture
def fallbacks_raise():
    fallback.reset()  # warn_once would stay silent for a path another test already reported
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        yield
    fallback.reset()


def _tiny_run(tiny, **options):
    from fastgan.data import load_dataset
    from fastgan.engine.build import assemble
    from fastgan.engine.fast import FastOptions

    cfg = load_config(None, {**tiny, "data.loader": "device"})
    return assemble(cfg, load_dataset(cfg.data), CPU, options=FastOptions(**options))


def test_compile_fallback(fallbacks_raise, tiny, monkeypatch):
    from fastgan.engine import fast

    monkeypatch.setattr(fast, "compiler_problem", lambda device: "no C++ compiler on PATH")
    with pytest.raises(FallbackWarning, match="fastgan: compile falls back: torch.compile cannot run, so the step "
                                              "runs eager: no C\\+\\+ compiler on PATH") as e:
        _tiny_run(tiny, compile=True)
    assert e.value.path == "compile"


def test_cuda_graph_is_refused_off_cuda(tiny):
    with pytest.raises(ConfigError, match="--cuda-graph needs a CUDA device but the run is on cpu"):
        _tiny_run(tiny, cuda_graph=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the capture succeeds (tests/engine/test_fast_graph)")
def test_cuda_graph_capture_failure_fallback(fallbacks_raise, tiny, monkeypatch):
    """The capture itself failing (here: no CUDA stream on a CPU machine, past check_options) keeps training
    uncaptured and says so through the same warning."""
    from fastgan.engine.build import build_stepper
    from fastgan.engine.fast import FastOptions

    run = _tiny_run(tiny)
    for name in ("get_rng_state", "set_rng_state", "synchronize"):  # the bookkeeping around the capture
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    with pytest.raises(FallbackWarning, match="fastgan: cuda_graph falls back: the capture failed") as e:
        build_stepper(run.cfg, run.state, run.spec, run.loader, FastOptions(cuda_graph=True), CPU)
    assert e.value.path == "cuda_graph"


@pytest.mark.parametrize("op", ["bn_leaky_relu", "gradient_norm_penalty"])
def test_triton_kernel_fallback(fallbacks_raise, op, monkeypatch):
    from fastgan.kernels import bn_leaky_relu, gradient_penalty
    from fastgan.kernels.runtime import KernelFallbackWarning

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # CPU tensors: Triton only in its interpreter
    x = torch.randn(4, 3, 5, 5)
    call = {"bn_leaky_relu": lambda: bn_leaky_relu.bn_leaky_relu(x, torch.ones(3), torch.zeros(3), impl="triton"),
            "gradient_norm_penalty": lambda: gradient_penalty.gradient_norm_penalty(x, 10.0, impl="triton")}[op]
    with pytest.raises(KernelFallbackWarning, match=f"fastgan: kernels.{op} \\(Triton\\) falls back: using the "
                                                    "torch reference: ") as e:
        call()
    assert isinstance(e.value, FallbackWarning) and e.value.path == f"kernels.{op} (Triton)"


def test_native_trace_sqrt_fallback(fallbacks_raise, monkeypatch):
    from fastgan.metrics import fid

    monkeypatch.setattr(fid, "_native", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FallbackWarning, match="fastgan: fid.trace_sqrt \\(native\\) falls back: the C\\+\\+ "
                                              "extension is not built"):
        fid.resolve_impl("auto")


def test_dali_asked_for_but_missing_is_a_clear_error_and_auto_never_picks_it(fallbacks_raise, tiny, monkeypatch):
    """A loader named in the config that cannot run is a user error (one line), not a silent swap; ``auto``
    chooses between device and stream only, DALI installed or not."""
    from fastgan.data import load_dataset, make_loader

    cfg = load_config(None, tiny)
    ds = load_dataset(cfg.data)
    for fraction in (1e-12, 0.5, 1.0):
        auto = make_loader(ds, replace(cfg.data, loader="auto", device_fraction=fraction), 32, CPU)
        assert auto.kind in ("device", "stream")
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if the dali extra were not installed
    with pytest.raises(DataError, match="the dali loader needs NVIDIA DALI, which is not installed: pip install"):
        make_loader(ds, replace(cfg.data, loader="dali"), 32, CPU)


# -- compute_fid: the library call behind `fastgan fid` ---------------------------------------------------
def test_compute_fid_is_the_library_call_of_the_command(tmp_path, capsys):
    from fastgan.metrics import compute_fid
    from fastgan.metrics.api import compute_fid as api_fid
    from fastgan.metrics.fid import Stats, save_stats, stats_to_fid

    rng = np.random.default_rng(0)
    stats = []
    for i, n in enumerate((40, 30)):
        x = rng.standard_normal((n, 8)) + i
        stats.append(Stats(x.mean(0), np.cov(x, rowvar=False), n))
        save_stats(tmp_path / f"{i}.npz", stats[-1])
    a, b = str(tmp_path / "0.npz"), str(tmp_path / "1.npz")
    got = compute_fid(a, b, impl="numpy")
    assert compute_fid is api_fid
    assert got["fid"] == pytest.approx(stats_to_fid(stats[0], stats[1], "numpy"), rel=1e-12)
    assert got["protocol"]["a"] == {"source": a, "kind": "stats", "count": 40} and got["protocol"]["b"]["count"] == 30
    assert main(["fid", a, b, "--impl", "numpy"]) == 0
    assert json.loads(capsys.readouterr().out) == got
    with pytest.raises(FastganError, match="give a second source"):
        compute_fid(a)


# -- options the commands share -----------------------------------------------------------------------------
def test_device_and_quiet_are_written_once():
    from fastgan.commands._options import DEVICES

    parsers = [sub for name in ("train", "sample", "fid", "bench") for sub in [_subparser(name)]]
    parsers += [p for name in ("classifier", "data") for p in _nested(_subparser(name))]
    devices = [_action(p, "--device") for p in parsers if "--device" in p._option_string_actions]
    quiets = [_action(p, "--quiet") for p in parsers if "--quiet" in p._option_string_actions]
    assert len(devices) >= 5 and len(quiets) >= 4
    assert all(a.help.startswith(DEVICES) for a in devices)
    assert len({a.help for a in quiets}) == 1


def _nested(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return [q for s in subs for q in s.choices.values()] or [p]


def test_train_help_shows_each_flags_key_and_default():
    from fastgan.commands.train import _SHORTCUTS

    p = _subparser("train")
    for attr in ("steps", "batch_size", "out", "device", "seed", "kernels", "compile", "amp", "channels_last",
                 "cuda_graph", "fast", "eval_every", "patience"):
        key = _SHORTCUTS[attr]
        action = next(a for a in p._actions if a.dest == attr)
        assert f"({key}; default " in action.help, (attr, action.help)
    assert "(train.steps; default the preset's, else 5000)" in _action(p, "--steps").help


def test_shared_weight_helpers_see_a_one_ulp_change(weight_diff):
    """The conftest helpers the resume and graph tests rely on: nested checkpoints flattened, one ulp found."""
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    a = {"models": {"G": m.state_dict()}, "rng": [torch.tensor([1, 2], dtype=torch.uint8)], "step": 3}
    b = {"models": {"G": {k: v.clone() for k, v in m.state_dict().items()}}, "rng": [a["rng"][0].clone()], "step": 3}
    assert set(weight_diff.flat(a)) == {f"models.G.{k}" for k in m.state_dict()} | {"rng.0"}
    assert weight_diff.mismatched(a, b) == [] and weight_diff.max_rel_diff(weight_diff.flat(a), weight_diff.flat(b)) == 0
    w = b["models"]["G"]["0.weight"]
    w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(2.0))
    assert weight_diff.mismatched(a, b) == ["models.G.0.weight"]
    assert 0 < weight_diff.max_rel_diff(weight_diff.flat(b), weight_diff.flat(a)) < 1e-6
