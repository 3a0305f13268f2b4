"""The fast step paths against the plain PyTorch reference (CPU): compile, bf16 autocast, fp16 + scaler,
channels-last, option checks, and the CUDA-graph warm-up bookkeeping that does not need a GPU.

Compiling on a CPU is slow (inductor builds C++), so each (variant, mode) run is made once per session
and shared by the tests that read it; the tiny models at 28 px keep each compile to a few seconds.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch

from fastgan.cli import main
from fastgan.config import TrainConfig, load_config
from fastgan.data import load_dataset
from fastgan.engine.build import stepper_for
from fastgan.engine.fast import FastOptions, Stepper, check_options, ema_step, resolve_options
from fastgan.engine.graph import restore, snapshot
from fastgan.engine.state import update_ema
from fastgan.engine.step import d_losses
from fastgan.errors import ConfigError

CPU = torch.device("cpu")
STEPS = 5
TINY = {"model.resolution": "28", "model.g_width": "8", "model.d_width": "8", "model.z_dim": "16",
        "train.batch_size": "16", "optim.ema_start": "2"}
VARIANTS = {
    "dcgan": {"model.conditioning": "none"},
    "cdcgan": {"model.conditioning": "concat"},
    "acgan": {"model.conditioning": "acgan"},
    "wgan-gp": {"model.conditioning": "none", "model.d_norm": "none", "loss.kind": "wgan-gp", "optim.n_critic": "2",
                "optim.g_betas": "0,0.9", "optim.d_betas": "0,0.9", "optim.g_lr": "1e-4", "optim.d_lr": "1e-4"},
}
MODES = {"eager": FastOptions(), "compile": FastOptions(compile=True),
         "compile+bf16": FastOptions(compile=True, amp="bf16")}


def config(variant: str, **extra: str):
    return load_config(None, {**TINY, **VARIANTS[variant], **extra})


@pytest.fixture(scope="session")
def digits():
    return load_dataset(config("dcgan").data)


def params(st) -> dict[str, torch.Tensor]:
    out = {f"G.{k}": v.detach().clone() for k, v in st.G.state_dict().items()}
    out.update({f"D.{k}": v.detach().clone() for k, v in st.D.state_dict().items()})
    return out


def run_steps(stepper: Stepper, steps: int = STEPS) -> list[dict[str, float]]:
    """The loop's schedule (EMA from step 2, decay 0.99), reading the losses every step."""
    st = stepper.state
    losses = []
    for _ in range(steps):
        decay = (0.99 if st.step >= 2 else 0.0) if st.G_ema is not None else None
        out = stepper(None, decay)
        st.step += 1
        losses.append({k: float(v) for k, v in out.items()})
    return losses


@pytest.fixture(scope="session")
def run(digits):
    """``run(variant, mode)``: 5 steps from seed 0, made once per session and shared (compiling is the slow
    part); a session fixture, so any test may be the first to ask, alone or in any order."""
    runs: dict[tuple[str, str], dict] = {}

    def get(variant: str, mode: str) -> dict:
        key = (variant, mode)
        if key not in runs:
            # Each new model instance adds cache entries to the same forward(); past dynamo's recompile limit it
            # would silently run eager, so start clean (the on-disk inductor cache still saves the C++ builds).
            torch._dynamo.reset()
            counters = torch._dynamo.utils.counters
            counters.clear()
            t0 = time.perf_counter()
            stepper = stepper_for(config(variant), digits, CPU, MODES[mode])
            before = params(stepper.state)
            losses = run_steps(stepper)
            runs[key] = {"before": before, "after": params(stepper.state), "losses": losses, "stepper": stepper,
                         "graph_breaks": dict(counters["graph_break"]), "graphs": counters["stats"]["unique_graphs"],
                         "seconds": time.perf_counter() - t0}
        return runs[key]

    return get


def update_error(fast: dict, ref: dict) -> float:
    """|Δ_fast - Δ_ref| / |Δ_ref| over every float parameter and buffer: how far the 5 updates differ."""
    num = den = 0.0
    for k, v in ref["after"].items():
        if not v.is_floating_point():
            continue
        d_ref = v - ref["before"][k]
        d_fast = fast["after"][k] - fast["before"][k]
        num += float((d_fast - d_ref).pow(2).sum())
        den += float(d_ref.pow(2).sum())
    return (num / den) ** 0.5


# Tolerances (measured on a 2-core AMD EPYC: fp32 compile <= 4e-7 on updates and 2e-7 on losses; bf16 <= 4e-3 and
# 6e-4), with margin: fp32 compile differs from eager only by kernel rounding; bf16 carries ~3 significant digits
# through two networks, and Adam's first steps move a weight by about lr * sign(grad), so a weight whose gradient
# is below bf16 noise may step the other way. For scale: dropping WGAN-GP's penalty altogether changes the 5
# updates by 1.6e-2, which the fp32 bound catches and the bf16 one barely does; the penalty's own gradients are
# pinned by test_penalty_gradients_through_compiled_step_match_eager.
TOL = {"compile": {"update": 1e-4, "loss": 1e-5}, "compile+bf16": {"update": 1e-2, "loss": 5e-3}}


# compile+bf16 builds a second set of inductor graphs per variant (minutes with a cold compile cache): slow lane
@pytest.mark.parametrize("mode", ["compile", pytest.param("compile+bf16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_matches_eager_over_five_steps(variant, mode, run):
    ref, fast = run(variant, "eager"), run(variant, mode)
    err = update_error(fast, ref)
    loss_err = max(abs(f[k] - r[k]) / max(1.0, abs(r[k])) for f, r in zip(fast["losses"], ref["losses"])
                   for k in ("d_loss", "g_loss"))
    print(f"{variant} {mode}: update error {err:.2e}, loss error {loss_err:.2e}, {fast['seconds']:.1f} s")
    assert err < TOL[mode]["update"], err
    assert loss_err < TOL[mode]["loss"], loss_err
    assert all(set(f) == set(r) for f, r in zip(fast["losses"], ref["losses"]))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compiled_hot_path_has_no_graph_breaks(variant, run):
    r = run(variant, "compile")
    assert r["graph_breaks"] == {}, r["graph_breaks"]  # counted over the 5 compiled training steps
    assert r["graphs"] >= 4  # G (no-grad, train) and D (real/fake, G step) really compiled, no silent eager
    # explain() traces without inductor: one graph per forward, so a new break fails here by name.
    stepper = r["stepper"]
    st, spec = stepper.state, stepper.spec
    z = torch.randn(spec.batch_size, spec.z_dim)
    y = torch.randint(spec.num_classes, (spec.batch_size,)) if spec.num_classes else None
    x = st.G(z, y).detach()
    for name, module, args in (("G", st.G, (z, y)), ("D", st.D, (x, y))):
        torch._dynamo.reset()
        ex = torch._dynamo.explain(module)(*args)
        assert ex.graph_break_count == 0 and ex.graph_count == 1, f"{name}: {ex.break_reasons}"


def test_penalty_gradients_through_compiled_step_match_eager(run):
    """The compiled step takes D's loss through compiled D and the penalty (a double backward, which compiled
    modules do not support) through the uncompiled D: the penalty's parameter gradients, and D's whole
    gradient, equal eager's."""
    stepper = run("wgan-gp", "compile")["stepper"]
    st, spec = stepper.state, stepper.spec
    real, _ = stepper.loader.batch(spec.batch_size)
    weights = list(st.D.parameters())

    def grads(G, D, critic, gp_weight):
        torch.manual_seed(7)  # the same fake batch and interpolation both ways
        loss, _ = d_losses(G, D, replace(spec, gp_weight=gp_weight), real, None, None, critic)
        return torch.autograd.grad(loss, weights)

    eager = [grads(st.G, st.D, None, w) for w in (spec.gp_weight, 0.0)]
    comp = [grads(stepper.G, stepper.D, stepper.critic, w) for w in (spec.gp_weight, 0.0)]
    pen_eager = [a - b for a, b in zip(*eager)]  # the penalty's own gradients
    pen_comp = [a - b for a, b in zip(*comp)]
    assert sum(float(g.norm()) for g in pen_eager) > 0.1 * sum(float(g.norm()) for g in eager[0])
    torch.testing.assert_close(pen_comp, pen_eager, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(comp[0], eager[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the GPU form of the fp16 scaler test needs a CUDA GPU"))])
def test_fp16_scaler_skips_a_step_with_an_inf_gradient_and_lowers_the_scale(device, digits):
    stepper = stepper_for(config("dcgan"), digits, torch.device(device), FastOptions(amp="fp16"))
    st = stepper.state
    run_steps(stepper, 1)
    scale = stepper.scalers["D"].get_scale()
    d_before, g_before = params(st), {k: v.clone() for k, v in st.G.state_dict().items()}
    adam_steps = [float(s["step"]) for s in st.opt_d.state.values()]
    hook = st.D.head.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    run_steps(stepper, 1)
    hook.remove()
    assert stepper.scalers["D"].get_scale() == scale * 0.5
    assert all(torch.equal(v, d_before[f"D.{k}"]) for k, v in st.D.state_dict().items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))  # D's update skipped
    assert [float(s["step"]) for s in st.opt_d.state.values()] == adam_steps
    assert not torch.equal(st.G.state_dict()["net.0.weight"], g_before["net.0.weight"])  # G still stepped
    run_steps(stepper, 1)
    assert not torch.equal(st.D.head.weight, d_before["D.head.weight"])  # and D recovers
    assert all(torch.isfinite(p).all() for p in st.D.parameters())


def test_fp16_scaler_state_is_checkpointed_and_resumed(tmp_path):
    from fastgan.engine.checkpoint import load_checkpoint
    from fastgan.engine.loop import train

    ov = {**TINY, **VARIANTS["dcgan"], "train.amp": "fp16", "train.ckpt_every": "3", "train.sample_every": "100",
          "train.log_every": "3", "train.grid_size": "4"}
    straight = train(load_config(None, {**ov, "train.steps": "5", "train.out": str(tmp_path / "a")}), quiet=True)
    train(load_config(None, {**ov, "train.steps": "3", "train.out": str(tmp_path / "b")}), quiet=True)
    resumed = train(load_config(None, {**ov, "train.steps": "5", "train.out": str(tmp_path / "b")}),
                    resume="auto", quiet=True)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    # fp16 overflows D's gradients at the initial scale 2**16, so the scale has history worth keeping
    assert a["scaler"]["D"]["scale"] < 2.0**16 and a["scaler"]["G"]["_growth_tracker"] == 5
    assert a["scaler"] == b["scaler"]  # restored, not restarted
    for net in ("G", "D"):
        for k, v in a["models"][net].items():
            assert torch.equal(v, b["models"][net][k]), k


def test_channels_last_matches_eager(run, digits):
    ref = run("cdcgan", "eager")
    stepper = stepper_for(config("cdcgan"), digits, CPU, FastOptions(channels_last=True))
    assert stepper.state.D.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    before = params(stepper.state)
    losses = run_steps(stepper)
    err = update_error({"before": before, "after": params(stepper.state)}, ref)
    assert err < 1e-4, err
    assert max(abs(a["d_loss"] - b["d_loss"]) for a, b in zip(losses, ref["losses"])) < 1e-5


def test_cuda_graph_on_cpu_is_refused_in_one_line(capsys):
    rc = main(["train", "--cuda-graph", "--device", "cpu", "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "--cuda-graph needs a CUDA device" in err and "drop --cuda-graph" in err


@pytest.mark.parametrize("opts, device, kind, message", [
    (FastOptions(cuda_graph=True, amp="fp16"), "cuda", "device", "use --amp bf16"),
    (FastOptions(cuda_graph=True), "cuda", "stream", "data.loader=device"),
    (FastOptions(cuda_graph=True, compile=True), "cpu", "device", "needs a CUDA device"),
    (FastOptions(amp="fp8"), "cpu", "device", "none, bf16, fp16"),
])
def test_unsupported_combinations_are_refused(opts, device, kind, message):
    with pytest.raises(ConfigError, match=message.replace("-", r"\-")):
        check_options(opts, torch.device(device), kind)


def test_every_cpu_combination_is_accepted_or_refused():
    """All 2x3x2x2 flag combinations on the CPU: cuda_graph is refused, everything else is accepted."""
    for compile_ in (False, True):
        for amp in ("none", "bf16", "fp16"):
            for cl in (False, True):
                for graph in (False, True):
                    opts = FastOptions(compile_, amp, cl, graph)
                    if graph:
                        with pytest.raises(ConfigError):
                            check_options(opts, CPU)
                    else:
                        check_options(opts, CPU)


def test_fast_picks_per_device(monkeypatch):
    opts, line = resolve_options(TrainConfig(fast=True), CPU)
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert opts == FastOptions(amp="bf16" if native_bf16 else "none", channels_last=True)  # measured fastest
    assert line.startswith(f"--fast picked {opts.describe()} for CPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "a GPU")
    opts, line = resolve_options(TrainConfig(fast=True), torch.device("cuda"))
    assert opts == FastOptions(compile=opts.compile, amp="bf16", channels_last=True, cuda_graph=True)
    assert line == f"--fast picked {opts.describe()} for a GPU"
    opts, _ = resolve_options(TrainConfig(fast=True), torch.device("cuda"), loader_kind="stream")
    assert not opts.cuda_graph  # --fast never picks what the run cannot do
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    opts, _ = resolve_options(TrainConfig(fast=True), torch.device("cuda"))
    assert opts.amp == "fp16" and not opts.cuda_graph  # the fp16 scaler cannot be captured


def test_fast_flag_trains_and_says_what_it_picked(capsys, tmp_path):
    sets = [x for k, v in {**TINY, **VARIANTS["cdcgan"], "train.sample_every": "100", "train.grid_size": "4",
                           "train.log_every": "2"}.items() for x in ("--set", f"{k}={v}")]
    rc = main(["train", "--fast", "--steps", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r"), *sets])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "fastgan: --fast picked " in captured.err and "channels-last" in captured.err
    assert '"step": 2' in captured.out


@pytest.mark.parametrize("steps_before", [0, 2])
def test_warmup_snapshot_restore_leaves_training_unchanged(steps_before, digits):
    """The CUDA-graph builder trains warm-up iterations, then puts weights, Adam state and RNG back in place;
    the run must continue exactly as if the warm-up never happened (checked bit for bit on the CPU)."""
    cfg = config("wgan-gp", **{"optim.ema_decay": "0.9", "loss.instance_noise": "0.1"})
    straight = stepper_for(cfg, digits, CPU, FastOptions())
    run_steps(straight, steps_before + 3)
    stepper = stepper_for(cfg, digits, CPU, FastOptions())
    run_steps(stepper, steps_before)
    storage = [p.data_ptr() for p in stepper.state.D.parameters()]
    snap, rng = snapshot(stepper.state), torch.get_rng_state()
    for _ in range(3):
        stepper.iteration(torch.tensor(0.1), torch.tensor(0.5))
    restore(stepper.state, snap)
    torch.set_rng_state(rng)
    assert storage == [p.data_ptr() for p in stepper.state.D.parameters()]  # in place: a graph keeps its storage
    run_steps(stepper, 3)
    a, b = params(straight.state), params(stepper.state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for sa, sb in zip(straight.state.opt_d.state.values(), stepper.state.opt_d.state.values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for ea, eb in zip(straight.state.G_ema.parameters(), stepper.state.G_ema.parameters()):
        assert torch.equal(ea, eb)


def test_ema_with_a_tensor_decay_matches_the_float_reference():
    torch.manual_seed(0)
    model, ema_a = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    ema_b = torch.nn.Linear(5, 3)
    ema_b.load_state_dict(ema_a.state_dict())
    for decay in (0.0, 0.9, 0.999):
        update_ema(ema_a, model, decay)
        ema_step(ema_b, model, torch.tensor(decay))
        for a, b in zip(ema_a.parameters(), ema_b.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert torch.equal(ema_a.weight, model.weight)  # decay 0 copies
