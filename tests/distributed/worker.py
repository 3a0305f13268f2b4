"""The tests' work under torchrun (``python -m torch.distributed.run --standalone --nproc_per_node 2 worker.py
OUT``), and the same work in one process (``run_steps`` imported by the tests). Every rank writes its results to
OUT/<case>-rank<r>.pt; the tests compare them across ranks and against one process."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from fastgan.config import load_config
from fastgan.data import load_dataset
from fastgan.engine import distributed
from fastgan.engine.build import assemble
from fastgan.engine.fast import FastOptions

TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16"}

# Without batch statistics (critic without BatchNorm, G in eval mode: its BatchNorm a fixed per-sample affine),
# 2 ranks x 8 must train exactly like 1 process x 16: data slices, latents, noise, the penalty's eps, and gradient
# averaging for every loss (the penalty's double backward included) all have to be right.
EQUIV = {
    "wgan-gp": ({"loss.kind": "wgan-gp", "optim.n_critic": "2", "model.conditioning": "none",
                 "data.hflip": "true", "data.crop_pad": "2"}, None),
    "ns-acgan": ({"model.conditioning": "acgan", "loss.label_smoothing": "0.1", "optim.ema_decay": "0.9"}, 0.1),
    "hinge-stream": ({"loss.kind": "hinge", "data.loader": "stream", "data.loader_workers": "0"}, None),
}
STEPS = 5


def run_steps(overrides: dict[str, str], noise: float | None, g_eval: bool, steps: int = STEPS,
              float64: bool = False, options: FastOptions | None = None):
    """``float64``: models, latents and batches in float64, so that the different summation order of 2 x 8
    against 16 (float32 rounding, 1e-7 relative) cannot be blown up by Adam's normalised first steps on
    near-cancelling gradients (seen: 6e-5 in float32, one sign flip of a G weight whose gradient is ~1e-9)."""
    cfg = load_config(None, {**TINY, **overrides})
    device = distributed.setup(torch.device("cpu"))
    prev = torch.get_default_dtype()
    if float64:
        torch.set_default_dtype(torch.float64)
    try:
        run = assemble(cfg, load_dataset(cfg.data), device, options=options or FastOptions())
        if float64:  # the loaders make float32 pixels: widen them on their way into the step
            batch = run.loader.batch

            def wide(n: int):
                x, y = batch(n)
                return x.double(), y
            run.loader.batch = wide
        if g_eval:
            run.state.G.eval()
        return _steps(run, cfg, noise, steps)
    finally:
        torch.set_default_dtype(prev)


def _steps(run, cfg, noise, steps):
    ema = cfg.optim.ema_decay if run.state.G_ema is not None else None
    losses = []
    for _ in range(steps):
        out = run.stepper(noise, ema)
        losses.append({k: float(v) for k, v in distributed.mean(out).items()})
    return run.state, losses


def snapshot(state, losses) -> dict:
    sd = {f"G.{k}": v for k, v in state.G.state_dict().items()}
    sd.update({f"D.{k}": v for k, v in state.D.state_dict().items()})
    if state.G_ema is not None:
        sd.update({f"G_ema.{k}": v for k, v in state.G_ema.state_dict().items()})
    return {"params": {k: v.detach().clone() for k, v in sd.items()}, "losses": losses}


def fake_features() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    # 300 x 64: full-rank covariance; 40 x 64: n < d, the exact low-rank form needs the kept features
    return {"full": torch.randn(300, 64, generator=g).double() * 3 + 1, "lowrank": torch.randn(40, 64, generator=g)}


def feature_net():
    torch.manual_seed(3)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, 2, 1), torch.nn.Tanh(), torch.nn.Flatten())

    def net(x, logits=False):
        f = conv(x)
        return f, (f[:, :5] if logits else None)
    return net


def fid_cases(out: Path, r: int) -> None:
    from fastgan.metrics.features import extract, uint8_batches
    from fastgan.metrics.fid import StatsAccumulator
    from fastgan.shard import Shard

    part = Shard.current()
    res = {}
    for name, feats in fake_features().items():
        acc = StatsAccumulator()
        span = part.span(len(feats))
        for i in range(span.start, span.stop, 7):  # uneven batches, as a generator's would be
            acc.update(feats[i : min(i + 7, span.stop)])
        acc.all_reduce()
        st = acc.result()
        res[name] = (st.mu, st.sigma, st.n, st.features)
    images = (torch.arange(90 * 16 * 16) * 37 % 256).to(torch.uint8).reshape(90, 1, 16, 16)
    span = part.span(len(images))
    got = extract({"net": (feature_net(), True)}, uint8_batches(images[span.start : span.stop], 8),
                  torch.device("cpu"), quiet=True, across_ranks=True)
    st, logits = got["net"]
    res["extract"] = (st.mu, st.sigma, st.n, logits)
    torch.save(res, out / f"fid-rank{r}.pt")


def consistency_case(out: Path, r: int) -> None:
    """A rank that drifts by one ulp in one weight: every rank must refuse the checkpoint, naming it."""
    state, _ = run_steps({}, None, False, steps=1)
    if r == 1:
        with torch.no_grad():
            w = next(state.D.parameters())
            w.view(-1)[3] = torch.nextafter(w.view(-1)[3], torch.tensor(1.0))
    try:
        distributed.before_checkpoint(state)
        msg = "no error"
    except distributed.RanksDiverged as e:
        msg = str(e)
    (out / f"consistency-rank{r}.txt").write_text(msg)


def main(out: Path, only: str = "") -> None:
    torch.set_num_threads(1)
    distributed.setup(torch.device("cpu"))
    r = distributed.rank()
    if only == "compile":  # torch.compile of the DDP modules (DDPOptimizer); the penalty through the eager DDP D
        state, losses = run_steps({"loss.kind": "wgan-gp", "model.d_norm": "none", "model.conditioning": "none"},
                                  None, g_eval=True, steps=3, float64=False, options=FastOptions(compile=True))
        torch.save(snapshot(state, losses), out / f"compile-rank{r}.pt")
        return
    for name, (ov, noise) in EQUIV.items():
        state, losses = run_steps({**ov, "model.d_norm": "none"}, noise, g_eval=True, float64=True)
        torch.save(snapshot(state, losses), out / f"{name}-rank{r}.pt")
    if only == "equiv":
        return
    # with BatchNorm everywhere (the default preset): per-rank batch statistics, but identical parameters
    state, losses = run_steps({"optim.ema_decay": "0.9"}, None, g_eval=False)
    distributed.before_checkpoint(state)  # averaged BatchNorm statistics, checked parameters
    torch.save(snapshot(state, losses), out / f"bn-rank{r}.pt")
    # the fast paths through DDP: bf16 autocast and channels-last (DDP wraps the channels-last modules)
    state, losses = run_steps({"loss.kind": "wgan-gp", "model.d_norm": "none"}, None, g_eval=False, steps=2,
                              options=FastOptions(amp="bf16", channels_last=True))
    torch.save(snapshot(state, losses), out / f"fast-rank{r}.pt")
    fid_cases(out, r)
    consistency_case(out, r)


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
