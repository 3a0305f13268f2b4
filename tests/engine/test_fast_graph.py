"""The whole iteration as one CUDA graph against the eager reference (GPU only: skipped with a reason without one)."""

from __future__ import annotations

import pytest
import torch

from fastgan.config import load_config
from fastgan.data import load_dataset
from fastgan.engine.build import stepper_for
from fastgan.engine.fast import FastOptions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a CUDA GPU")

CUDA = torch.device("cuda")
STEPS = 10
TINY = {"model.resolution": "32", "model.g_width": "16", "model.d_width": "16", "model.z_dim": "32",
        "train.batch_size": "32", "train.device": "cuda"}
VARIANTS = {  # each switches on a different part of the captured iteration
    "cdcgan-ema-noise-hflip": {"model.conditioning": "concat", "optim.ema_decay": "0.9", "optim.ema_start": "3",
                               "loss.instance_noise": "0.1", "data.hflip": "true", "data.loader": "device"},
    "acgan-smoothing-dropout": {"model.conditioning": "acgan", "loss.label_smoothing": "0.1", "model.d_dropout": "0.2",
                                "data.loader": "device"},
    "wgan-gp": {"model.conditioning": "none", "model.d_norm": "none", "loss.kind": "wgan-gp", "optim.n_critic": "3",
                "data.loader": "device"},
}


def config(variant: str):
    return load_config(None, {**TINY, **VARIANTS[variant]})


def train(stepper, noise_on: bool, steps: int = STEPS) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    st, losses = stepper.state, []
    for _ in range(steps):
        noise = 0.1 * (1 - st.step / steps) if noise_on else None
        decay = (0.9 if st.step >= 3 else 0.0) if st.G_ema is not None else None
        losses.append({k: float(v) for k, v in stepper(noise, decay).items()})
        st.step += 1
    weights = {f"{n}.{k}": v.detach().float().cpu() for n, m in (("G", st.G), ("D", st.D), ("E", st.G_ema))
               if m is not None for k, v in m.state_dict().items()}
    return losses, weights


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_graph_replay_matches_eager_over_ten_steps(variant, weight_diff):
    cfg = config(variant)
    ds = load_dataset(cfg.data)
    noise_on = cfg.loss.instance_noise > 0
    ref_losses, ref = train(stepper_for(cfg, ds, CUDA, FastOptions()), noise_on)
    stepper = stepper_for(cfg, ds, CUDA, FastOptions(cuda_graph=True))
    assert stepper.graph is not None, "capture fell back to the uncaptured step (see the warning)"
    losses, got = train(stepper, noise_on)
    # Same random numbers (graph-safe RNG); differences come from capturable Adam's device-side bias
    # correction, the tensor-decay EMA and cuDNN algorithm choice: rounding, compounded over 10 steps.
    assert weight_diff.max_rel_diff(got, ref) < 2e-3
    for a, b in zip(losses, ref_losses):
        for k in b:
            assert abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(b[k])), (k, a[k], b[k])


def test_graph_compile_bf16_matches_compile_bf16_uncaptured(weight_diff):
    cfg = config("cdcgan-ema-noise-hflip")
    ds = load_dataset(cfg.data)
    torch._dynamo.reset()
    ref_losses, ref = train(stepper_for(cfg, ds, CUDA, FastOptions(compile=True, amp="bf16")), True)
    torch._dynamo.reset()
    stepper = stepper_for(cfg, ds, CUDA, FastOptions(compile=True, amp="bf16", channels_last=True, cuda_graph=True))
    assert stepper.graph is not None
    losses, got = train(stepper, True)
    assert weight_diff.max_rel_diff(got, ref) < 5e-2
    assert all(abs(a["d_loss"] - b["d_loss"]) < 0.05 * max(1.0, abs(b["d_loss"])) for a, b in zip(losses, ref_losses))


def test_replays_never_sync_and_follow_learning_rate_changes():
    cfg = config("acgan-smoothing-dropout")
    stepper = stepper_for(cfg, load_dataset(cfg.data), CUDA, FastOptions(cuda_graph=True))
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the steps raises
    try:
        for _ in range(3):
            stepper(None, None)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    d_before = [p.detach().clone() for p in stepper.state.D.parameters()]
    for g in stepper.state.opt_d.param_groups:
        g["lr"] = 0.0  # a schedule changes the float; the next replay reads it through the LR tensor
    stepper(None, None)
    assert all(torch.equal(a, b) for a, b in zip(d_before, stepper.state.D.parameters()))


def test_graph_checkpoint_resumes_on_cpu_without_the_graph(tmp_path):
    from fastgan.engine.loop import train as train_run

    ov = {**TINY, **VARIANTS["wgan-gp"], "train.cuda_graph": "true", "train.sample_every": "100",
          "train.grid_size": "4", "train.log_every": "2", "train.out": str(tmp_path / "r")}
    first = train_run(load_config(None, {**ov, "train.steps": "4"}), quiet=True)
    assert first.step == 4
    resumed = train_run(load_config(None, {**ov, "train.steps": "6", "train.device": "cpu", "train.cuda_graph": "false"}),
                        resume="auto", quiet=True)
    assert resumed.step == 6
