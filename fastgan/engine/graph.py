"""The whole training iteration as one CUDA graph: D step(s), G step, both Adam updates, EMA.

Captured once with ``torch.cuda.graph`` and replayed each step, so a step costs one
launch instead of hundreds. What makes the iteration capturable:

- real batches come from the device-resident loader and latents from torch's CUDA
  generator, which is graph-safe: each replay advances its offset, so the replayed
  random numbers are the ones eager would draw and the checkpointed RNG state holds;
- Adam runs with ``capturable=True`` (step counts on the device) and reads its learning
  rate from a device tensor, refreshed from ``param_groups`` before a replay when it
  changed; the EMA decay and instance-noise std are device tensors filled before a replay;
- warm-up (compilation, cuDNN autotuning, Adam's lazy state) runs on a side stream
  before capture; warm-up trains, so models, optimizer state and RNG are snapshotted
  before it and restored in place after capture (the graph keeps the same storage).

Not capturable: the fp16 gradient scaler (its skip-step check reads the host; refused in
``fast.check_options``). A capture that fails falls back, loudly and once, to the
uncaptured step with the same options.
"""

from __future__ import annotations

import torch

from fastgan.engine.fast import Stepper, eager_optimizers
from fastgan.engine.state import TrainState
from fastgan.fallback import warn_once

Tensor = torch.Tensor
WARMUP_ITERATIONS = 3  # enough for compilation (grad and no-grad graphs), autotuning and Adam's state


def _models(state: TrainState) -> list[torch.nn.Module]:
    return [m for m in (state.G, state.D, state.G_ema) if m is not None]


def snapshot(state: TrainState) -> dict:
    """Copies of every tensor that an iteration changes: weights, buffers, optimizer state."""
    tensors = [t for m in _models(state) for t in (*m.parameters(), *m.buffers())]
    optim = [{p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)} for p, st in opt.state.items()}
             for opt in (state.opt_g, state.opt_d)]
    return {"tensors": [(t, t.detach().clone()) for t in tensors], "optim": optim}


@torch.no_grad()
def restore(state: TrainState, snap: dict) -> None:
    """Put the snapshot back *in place*; optimizer state created since then is reset to fresh (zeros)."""
    for t, saved in snap["tensors"]:
        t.copy_(saved)
    for opt, saved_state in zip((state.opt_g, state.opt_d), snap["optim"]):
        for p, st in opt.state.items():
            saved = saved_state.get(p)
            for k, v in st.items():
                if torch.is_tensor(v):
                    if saved is None:
                        v.zero_()
                    else:
                        v.copy_(saved[k])


class GraphStepper(Stepper):
    """``Stepper`` whose iteration is captured once and replayed (CUDA only).

    The returned statistics are the graph's static output tensors: overwritten by the
    next replay, so a caller that keeps them must copy (the loop adds them into sums).
    """

    def __init__(self, *args, noise: bool = False, warmup: int = WARMUP_ITERATIONS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        dev = self.device
        self.noise_t = torch.zeros((), device=dev) if noise else None
        self.decay_t = torch.zeros((), device=dev) if self.state.G_ema is not None else None
        self._decay: float | None = None
        opts = (self.state.opt_d, self.state.opt_g)
        self.lr_t = [[torch.tensor(float(g["lr"]), device=dev) for g in o.param_groups] for o in opts]
        self._lr = [[float(g["lr"]) for g in o.param_groups] for o in opts]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: dict[str, Tensor] = {}
        self._capture(warmup)

    def _set_capturable(self, on: bool) -> None:
        """Capture with device step counts and tensor LRs. Afterwards the groups read as eager ones
        (host-float LR, capturable off) so checkpoints load anywhere; only the graph steps Adam."""
        for o, lrs, floats in zip((self.state.opt_d, self.state.opt_g), self.lr_t, self._lr):
            for g, lr_t, lr in zip(o.param_groups, lrs, floats):
                g["capturable"] = on
                g["lr"] = lr_t if on else lr  # the host float itself, not its float32 rounding
            if on:
                for st in o.state.values():
                    if torch.is_tensor(st.get("step")):
                        st["step"] = st["step"].to(self.device, torch.float32)

    def _capture(self, warmup: int) -> None:
        dev, st = self.device, self.state
        self._set_capturable(True)
        snap = snapshot(st)
        cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state(dev)
        try:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    self.iteration(self.noise_t, self.decay_t)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.iteration(self.noise_t, self.decay_t)
            self.graph, self.out = graph, out
        except Exception as e:  # noqa: BLE001 -- a capture-unsafe op: keep training, uncaptured, and say so once
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            warn_once("cuda_graph", f"the capture failed ({type(e).__name__}: {first[:160]}), so the same step "
                                    "runs without the graph")
        torch.cuda.synchronize(dev)
        restore(st, snap)
        torch.set_rng_state(cpu_rng)
        torch.cuda.set_rng_state(cuda_rng, dev)
        self._set_capturable(False)
        if self.graph is None:
            eager_optimizers(st)
        torch.cuda.synchronize(dev)

    def _refresh_inputs(self, noise_std: float | None, ema_decay: float | None) -> None:
        # fill_ with a host scalar is an async kernel: no sync, and skipped when nothing changed
        if self.noise_t is not None and noise_std is not None:
            self.noise_t.fill_(noise_std)
        if self.decay_t is not None and ema_decay is not None and ema_decay != self._decay:
            self.decay_t.fill_(ema_decay)
            self._decay = ema_decay
        for o, lrs, cached in zip((self.state.opt_d, self.state.opt_g), self.lr_t, self._lr):
            for i, (g, lr_t) in enumerate(zip(o.param_groups, lrs)):
                lr = g["lr"]
                if not torch.is_tensor(lr) and lr != cached[i]:
                    lr_t.fill_(lr)
                    cached[i] = lr

    def __call__(self, noise_std: float | None = None, ema_decay: float | None = None) -> dict[str, Tensor]:
        if self.graph is None:
            return super().__call__(noise_std, ema_decay)
        self._refresh_inputs(noise_std, ema_decay)
        self.graph.replay()
        return self.out
