"""Fast ways to run the same training step: torch.compile, autocast, channels-last, one CUDA graph.

A ``Stepper`` runs the loop's unit of work (``n_critic`` D updates, one G update, the
EMA update) with the loss math of ``fastgan.engine.step``; ``FastOptions`` says how.
With no option set it calls the reference ``d_step``/``g_step`` themselves, so the
plain path *is* the reference. The CUDA-graph variant is ``fastgan.engine.graph``.

Differentiability: a compiled module supports first-order backward only (compiled
double backward is unsupported, or silently wrong in some releases), so with
``compile`` the WGAN-GP penalty differentiates the *uncompiled* D twice.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch import nn

from fastgan.config import TrainConfig
from fastgan.devices import device_name
from fastgan.engine.state import TrainState, update_ema
from fastgan.engine.step import StepSpec, d_losses, d_step, g_losses, g_step
from fastgan.errors import ConfigError
from fastgan.fallback import warn_once

Tensor = torch.Tensor

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

@dataclass(frozen=True)
class FastOptions:
    compile: bool = False  # torch.compile G and D (inductor)
    amp: str = "none"  # none | bf16 | fp16 autocast
    channels_last: bool = False  # NHWC weights and activations
    cuda_graph: bool = False  # the whole iteration captured once and replayed

    @classmethod
    def from_config(cls, t: TrainConfig) -> FastOptions:
        return cls(t.compile, t.amp, t.channels_last, t.cuda_graph)

    def describe(self) -> str:
        parts = [name for name, on in (("cuda-graph", self.cuda_graph), ("compile", self.compile)) if on]
        parts += [f"amp {self.amp}"] if self.amp != "none" else []
        parts += ["channels-last"] if self.channels_last else []
        return " + ".join(parts) or "eager fp32"


def compiler_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None."""
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} in this torch"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (inductor needs it for CUDA kernels)"
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler on PATH (inductor builds CPU kernels with g++ or clang++)"
    return None


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


_SLOW_BF16_TOLD: list[bool] = []


def warn_emulated_bf16(device: torch.device) -> None:
    """One stderr line per process: bf16 without hardware support is no fallback (it runs), but the issue measured
    a 10-step run at 363 s against 72 s with --fast on an AVX2 CPU, so the user should hear it before waiting."""
    if not _SLOW_BF16_TOLD:
        _SLOW_BF16_TOLD.append(True)
        print(f"fastgan: warning: --amp bf16 is emulated on this CPU ({device_name(device)}: no AVX512-BF16 or AMX) "
              "and runs many times slower than fp32 (17x measured on AVX2): drop --amp, or use --fast, which picks "
              "bf16 only where the CPU has it", file=sys.stderr)


def best_options(device: torch.device, amp: str = "none") -> FastOptions:
    """What ``--fast`` picks: everything the device supports that measured faster.

    CUDA: compile + bf16 (fp16 where the GPU lacks bf16) + channels-last + one CUDA graph
    (not with fp16: the scaler's skip-step check needs the host). CPU: bf16 autocast where
    the CPU computes bf16 natively (AVX512-BF16 or AMX; emulated bf16 is slower than fp32) and
    channels-last, without compile: on the 2-core AMD EPYC measured (DCGAN-32, batch 64) bf16
    ran 1.6x eager, channels-last +10%, and inductor's CPU training graphs 0.85x eager.
    """
    if device.type == "cuda":
        if amp == "none":
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return FastOptions(compile=compiler_problem(device) is None, amp=amp, channels_last=True,
                           cuda_graph=amp != "fp16")
    if amp == "none" and native_bf16_cpu():
        amp = "bf16"
    return FastOptions(amp=amp, channels_last=True)


def check_options(opts: FastOptions, device: torch.device, loader_kind: str = "device") -> None:
    """Refuse a combination this device cannot run, in one line that says why and what to do."""
    if opts.amp not in AMP_DTYPES:
        raise ConfigError(f"bad value for train.amp: '{opts.amp}' (choose one of none, bf16, fp16)")
    if opts.cuda_graph and device.type != "cuda":
        raise ConfigError(f"--cuda-graph needs a CUDA device but the run is on {device.type}: drop --cuda-graph "
                          "(--fast picks what this device supports)")
    if opts.cuda_graph and opts.amp == "fp16":
        raise ConfigError("--cuda-graph cannot replay the fp16 gradient scaler (its skip-step check reads the host): "
                          "use --amp bf16, or drop --cuda-graph")
    if opts.cuda_graph and loader_kind != "device":
        raise ConfigError(f"--cuda-graph draws batches inside the graph, which the '{loader_kind}' loader cannot: "
                          "use --set data.loader=device")
    if opts.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16 support: use --amp fp16")


def resolve_options(t: TrainConfig, device: torch.device, loader_kind: str = "device") -> tuple[FastOptions, str]:
    """The options a run uses, checked for ``device``, and a line saying what they are."""
    opts = FastOptions.from_config(t)
    if t.fast:
        best = best_options(device, t.amp)
        opts = replace(best, compile=best.compile or opts.compile, channels_last=best.channels_last or opts.channels_last,
                       cuda_graph=(best.cuda_graph or opts.cuda_graph) and loader_kind == "device")
        check_options(opts, device, loader_kind)
        line = f"--fast picked {opts.describe()} for {device_name(device)}"
    else:
        check_options(opts, device, loader_kind)
        line = f"step: {opts.describe()}"
    if opts.amp == "bf16" and device.type == "cpu" and not native_bf16_cpu():
        warn_emulated_bf16(device)
    return opts, line


def to_channels_last(state: TrainState) -> None:
    """NHWC parameters (same Parameter objects, so the optimizers keep them) and optimizer state."""
    for m in (state.G, state.D, state.G_ema):
        if m is not None:
            m.to(memory_format=torch.channels_last)
    for opt in (state.opt_g, state.opt_d):
        for st in opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() == 4:
                    st[k] = v.contiguous(memory_format=torch.channels_last)


def eager_optimizers(state: TrainState) -> None:
    """Adam as the uncaptured step runs it: host step counts, capturable off (a CUDA-graph run's
    checkpoint holds device step counts)."""
    for opt in (state.opt_g, state.opt_d):
        for g in opt.param_groups:
            g["capturable"] = False
        for st in opt.state.values():
            if torch.is_tensor(st.get("step")) and st["step"].device.type != "cpu":
                st["step"] = st["step"].cpu()


def compile_module(module: nn.Module) -> nn.Module:
    # Static shapes: the batch never changes, so one specialised graph per module and grad mode.
    return torch.compile(module, dynamic=False)


class Stepper:
    """One training iteration: ``n_critic`` D updates, one G update, the EMA update.

    ``__call__(noise_std, ema_decay)`` takes host floats (None when the run has no
    instance noise / no EMA) and returns the statistics as device tensors; nothing in
    it reads the host, so the loop syncs only when it logs.
    """

    def __init__(self, state: TrainState, spec: StepSpec, loader, n_critic: int = 1,
                 opts: FastOptions = FastOptions(), device: torch.device | None = None,
                 scaler_state: dict | None = None, ddp: Callable[[nn.Module], nn.Module] | None = None) -> None:
        self.state, self.spec, self.loader, self.n_critic, self.opts = state, spec, loader, n_critic, opts
        self.device = device or next(state.G.parameters()).device
        # ddp: wraps a module in DDP under torchrun (fastgan.engine.distributed.wrapper); backward averages gradients
        self.reference = opts == FastOptions() and ddp is None
        eager_optimizers(state)
        if self.device.type == "cuda" and not self.reference:
            torch.backends.cudnn.benchmark = True  # autotuned once, before any capture (static shapes)
        if opts.compile and (why := compiler_problem(self.device)):
            warn_once("compile", f"torch.compile cannot run, so the step runs eager: {why}")
            opts = self.opts = replace(opts, compile=False)
        if opts.channels_last:
            to_channels_last(state)
        # wrapped after channels-last (DDP's buckets take the parameters' layout); compiling a DDP module splits its
        # graphs at the buckets (DDPOptimizer)
        G, D = (ddp(state.G), ddp(state.D)) if ddp else (state.G, state.D)
        self.G, self.D = (compile_module(G), compile_module(D)) if opts.compile else (G, D)
        self.critic = D if opts.compile else None  # the penalty's double backward stays uncompiled
        # the G step goes through the bare D: none of D's gradients are wanted there, so none are all-reduced
        self.D_g = self.D if ddp is None else (compile_module(state.D) if opts.compile else state.D)
        self.amp_dtype = AMP_DTYPES[opts.amp]
        self.g_params = list(state.G.parameters())
        self.scalers = None
        if opts.amp == "fp16":  # one scaler per optimizer: D may step n_critic times per G step
            self.scalers = {k: torch.amp.GradScaler(self.device.type) for k in ("D", "G")}
            if scaler_state:
                for k, s in self.scalers.items():
                    s.load_state_dict(scaler_state[k])

    def scaler_state(self) -> dict | None:
        """The fp16 gradient scalers' state for the checkpoint (None without fp16)."""
        return {k: s.state_dict() for k, s in self.scalers.items()} if self.scalers else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()

    def _apply(self, loss: Tensor, opt: torch.optim.Optimizer, key: str, inputs: list[Tensor] | None) -> None:
        opt.zero_grad(set_to_none=True)
        scaler = self.scalers[key] if self.scalers else None
        if scaler is None:
            loss.backward(inputs=inputs)
            opt.step()
            return
        scaler.scale(loss).backward(inputs=inputs)
        scaler.step(opt)  # skipped when a gradient is inf/NaN; the scale then drops
        scaler.update()

    def d_update(self, real: Tensor, labels: Tensor | None, noise: Tensor | None) -> dict[str, Tensor]:
        if self.reference:
            return d_step(self.state, self.spec, real, labels, noise)
        # real in G's fake's dtype and layout (one copy): D's first conv would cast it anyway under autocast,
        # and one compiled D graph then serves both batches
        nhwc = self.opts.channels_last and real.dim() == 4
        real = real.to(dtype=self.amp_dtype or real.dtype,
                       memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        with self.autocast():
            loss, out = d_losses(self.G, self.D, self.spec, real, labels, noise, self.critic)
        self._apply(loss, self.state.opt_d, "D", None)
        return out

    def g_update(self) -> dict[str, Tensor]:
        if self.reference:
            return g_step(self.state, self.spec, self.device)
        # D frozen: a compiled backward cannot skip D's weight gradients the way eager backward(inputs=) does;
        # afterwards only what was trainable thaws (train.freeze_d keeps D's first blocks frozen)
        trainable = [p for p in self.state.D.parameters() if p.requires_grad]
        self.state.D.requires_grad_(False)
        try:
            with self.autocast():
                loss, out = g_losses(self.G, self.D_g, self.spec, self.device)
            self._apply(loss, self.state.opt_g, "G", self.g_params)
        finally:
            for p in trainable:
                p.requires_grad_(True)
        return out

    def iteration(self, noise: Tensor | None, ema_decay: Tensor | float | None) -> dict[str, Tensor]:
        """The device work of one iteration (what the CUDA graph captures)."""
        d_out: dict[str, Tensor] = {}
        for _ in range(self.n_critic):
            real, labels = self.loader.batch(self.spec.batch_size)
            for k, v in self.d_update(real, labels, noise).items():
                d_out[k] = d_out[k] + v if k in d_out else v
        if self.n_critic > 1:
            d_out = {k: v / self.n_critic for k, v in d_out.items()}
        out = {**d_out, **self.g_update()}
        if self.state.G_ema is not None:
            ema_step(self.state.G_ema, self.state.G, ema_decay)
        return out

    def __call__(self, noise_std: float | None = None, ema_decay: float | None = None) -> dict[str, Tensor]:
        noise = None if noise_std is None else torch.tensor(noise_std, device=self.device)
        return self.iteration(noise, ema_decay)


@torch.no_grad()
def ema_step(ema: nn.Module, model: nn.Module, decay: Tensor | float) -> None:
    """``update_ema`` for a host float (the reference); a device tensor decay for the CUDA graph."""
    if not torch.is_tensor(decay):
        update_ema(ema, model, decay)
        return
    e_params = list(ema.parameters())
    diff = torch._foreach_sub(list(model.parameters()), e_params)
    torch._foreach_mul_(diff, 1.0 - decay)
    torch._foreach_add_(e_params, diff)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)
