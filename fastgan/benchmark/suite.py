"""The train-step benchmark, shared by ``bench/test_bench_train_step.py`` and ``fastgan bench``.

A *case* is a model and loss (DCGAN-28 ... WGAN-GP-64, the DCGAN paper's widths 64 and z 100, no
EMA, on a synthetic uint8 dataset of the right shape resident on the device); a *mode* is how the
step runs (``baseline`` is ``fastgan.benchmark.baseline``, the others are ``FastOptions``).

- images/s: real images through D per second, ``batch * n_critic`` per iteration, over the median
  round (a round is ``per_round`` iterations ended by a device sync).
- TFLOP/s: FLOPs of one iteration counted by ``torch.utils.flop_counter`` on the eager step (forward,
  backward and the penalty's double backward; the baseline counts its own loop) over that time:
  compile, amp and graphs change how fast the same FLOPs run, not how many there are.
- peak memory: CUDA max allocated during the timed rounds; on a CPU the process's max RSS (monotone
  over a session, so only an upper bound for later cases).
"""

from __future__ import annotations

import gc
import importlib.metadata
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from fastgan.config import Config, load_config
from fastgan.data import ImageDataset
from fastgan.devices import device_name
from fastgan.engine.build import resolve_for_dataset, stepper_for
from fastgan.engine.fast import FastOptions, best_options, check_options
from fastgan.errors import ConfigError


@dataclass(frozen=True)
class Case:
    resolution: int
    channels: int
    conditioning: str = "none"
    wgan_gp: bool = False


CASES = {
    "dcgan-28": Case(28, 1),  # MNIST shape
    "dcgan-32": Case(32, 3),  # CIFAR-10 shape
    "dcgan-64": Case(64, 3),  # CelebA 64 px
    "cdcgan-32": Case(32, 1, "concat"),
    "acgan-32": Case(32, 3, "acgan"),
    "wgan-gp-64": Case(64, 3, wgan_gp=True),  # critic without BN, 5 critic steps, Adam 1e-4 (0, 0.9)
}
MODES: dict[str, FastOptions | None] = {
    "baseline": None,
    "eager": FastOptions(),
    "compile": FastOptions(compile=True),
    "amp": FastOptions(amp="bf16"),
    "compile+amp": FastOptions(compile=True, amp="bf16"),
    "graph+amp": FastOptions(cuda_graph=True, amp="bf16"),
    "graph+compile+amp": FastOptions(cuda_graph=True, compile=True, amp="bf16"),
}
NUM_CLASSES = 10
DATASET_SIZE = 8192  # rows of the synthetic dataset (batches are drawn with replacement)


def default_batches(device: torch.device) -> list[int]:
    return [128, 1024] if device.type == "cuda" else [64]


def default_timing(device: torch.device) -> dict[str, int]:
    """Rounds of iterations: short on a CPU (an iteration takes ~0.1-10 s there), many on a GPU."""
    if device.type == "cuda":
        return {"warmup": 3, "rounds": 10, "per_round": 20}
    return {"warmup": 2, "rounds": 5, "per_round": 1}


def modes_for(device: torch.device) -> dict[str, FastOptions | None]:
    """The listed modes, plus ``fast`` where ``--fast`` picks a combination none of them is."""
    modes = dict(MODES)
    best = best_options(device)
    if best not in modes.values():
        modes["fast"] = best
    return modes


def mode_options(mode: str, device: torch.device) -> FastOptions | None:
    return modes_for(device)[mode]


def unsupported(mode: str, device: torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` (the one-line refusal of ``fastgan train``), or None."""
    opts = mode_options(mode, device)
    if opts is None:
        return None
    if opts.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        opts = FastOptions(opts.compile, "fp16", opts.channels_last, opts.cuda_graph)
    try:
        check_options(opts, device)
    except ConfigError as e:
        return str(e)
    return None


def case_config(case: str, batch: int, device: torch.device, kernels: str = "torch") -> Config:
    c = CASES[case]
    ov = {"model.resolution": c.resolution, "model.conditioning": c.conditioning, "model.g_width": 64,
          "model.d_width": 64, "model.z_dim": 100, "optim.ema_decay": 0.0, "train.batch_size": batch,
          "train.device": str(device), "data.loader": "device", "model.kernels": kernels}
    if c.wgan_gp:
        ov.update({"model.d_norm": "none", "loss.kind": "wgan-gp", "optim.n_critic": 5, "optim.g_lr": 1e-4,
                   "optim.d_lr": 1e-4, "optim.g_betas": (0.0, 0.9), "optim.d_betas": (0.0, 0.9)})
    return load_config(None, {k: str(v) if not isinstance(v, tuple) else v for k, v in ov.items()})


def synthetic_dataset(case: str) -> ImageDataset:
    c = CASES[case]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (DATASET_SIZE, c.channels, c.resolution, c.resolution), dtype=torch.uint8,
                           generator=gen)
    labels = torch.randint(NUM_CLASSES, (DATASET_SIZE,), generator=gen)
    return ImageDataset(images, labels, NUM_CLASSES, [str(i) for i in range(NUM_CLASSES)], f"synthetic-{case}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One (case, mode, batch): ``iteration()`` runs one training iteration the way the loop would."""

    def __init__(self, case: str, mode: str, batch: int, device: torch.device, kernels: str = "torch") -> None:
        self.case, self.mode, self.batch, self.device = case, mode, batch, device
        cfg = case_config(case, batch, device, kernels)  # model.kernels: the triton modes of bench/gpu_proof.py
        ds = synthetic_dataset(case)
        self.images_per_iteration = batch * cfg.optim.n_critic
        opts = mode_options(mode, device)
        if opts is None:
            from fastgan.benchmark.baseline import BaselineLoop
            self.iteration: Callable[[], None] = BaselineLoop(resolve_for_dataset(cfg, ds), ds, device).step
            return
        if opts.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            opts = FastOptions(opts.compile, "fp16", opts.channels_last, opts.cuda_graph)
        if opts.compile:
            torch._dynamo.reset()  # a fresh model per case: stay clear of dynamo's recompile limit
        self.stepper = stepper_for(cfg, ds, device, opts)
        self.sums: dict[str, torch.Tensor] = {}

        def iteration() -> None:
            out = self.stepper()
            if self.sums:  # the loop's per-step bookkeeping: one fused add into the log sums
                torch._foreach_add_(list(self.sums.values()), [out[k] for k in self.sums])
            else:
                self.sums = {k: v.clone() for k, v in out.items()}

        self.iteration = iteration

    def run(self, iterations: int) -> None:
        for _ in range(iterations):
            self.iteration()
        sync(self.device)


_FLOPS: dict[tuple[str, int, bool], int] = {}


class _NoModuleTracker:
    """Stands in for FlopCounterMode's module tracker: its backward hooks fail inside ``autograd.grad`` of a leaf
    (the WGAN-GP penalty: "A leaf node was passed to _will_engine_execute_node ..."), and only the total is used."""

    parents = frozenset({"Global"})

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that counts every op into the global total without tracking modules, so that a step with
    a gradient penalty (``autograd.grad(create_graph=True)``) can be counted, double backward included."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracker()
    return counter


def iteration_flops(case: str, batch: int, baseline: bool, device: torch.device) -> int:
    """FLOPs of one iteration, counted once per case on the eager step (or the baseline loop)."""
    key = (case, batch, baseline)
    if key not in _FLOPS:
        runner = Runner(case, "baseline" if baseline else "eager", batch, device)
        runner.iteration()  # lazy state (Adam moments) outside the count
        with flop_counter() as counter:
            runner.iteration()
        _FLOPS[key] = int(counter.get_total_flops())
        del runner
        release(device)
    return _FLOPS[key]


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def environment(device: torch.device) -> dict[str, str | int | None]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "python": platform.python_version(), "numpy": version("numpy"), "triton": version("triton"),
        "fastgan": version("fastgan"), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
    }


def record(runner: Runner, round_seconds: list[float], per_round: int, baseline_ips: float | None,
           peak_mib: float | None = None) -> dict:
    """The numbers of one measured case, as stored in the JSON and printed in the table."""
    median = statistics.median(round_seconds)
    ips = runner.images_per_iteration * per_round / median
    peak = peak_memory_mib(runner.device) if peak_mib is None else peak_mib  # before the FLOP count's runner
    flops = iteration_flops(runner.case, runner.batch, runner.mode == "baseline", runner.device)
    return {
        "case": runner.case, "mode": runner.mode, "batch": runner.batch,
        "images_per_s": round(ips, 1), "iteration_ms": round(1000 * median / per_round, 3),
        "best_iteration_ms": round(1000 * min(round_seconds) / per_round, 3),
        "tflops_per_s": round(flops * per_round / median / 1e12, 4), "gflop_per_iteration": round(flops / 1e9, 3),
        "peak_memory_mib": round(peak, 1),
        "speedup_vs_baseline": round(ips / baseline_ips, 2) if baseline_ips else None,
        "rounds": len(round_seconds), "iterations_per_round": per_round,
    }


def time_round(runner: Runner, per_round: int) -> float:
    t0 = time.perf_counter()
    runner.run(per_round)
    return time.perf_counter() - t0


def warm_runner(case: str, mode: str, batch: int, device: torch.device, warmup: int, per_round: int,
                tick: Callable[[], None] = lambda: None) -> tuple[Runner, float]:
    """A runner past compilation, autotuning and capture, and the peak memory its own state and steps took.
    ``tick`` is called after each warm-up round (a progress bar)."""
    base = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    reset_peak(device)
    runner = Runner(case, mode, batch, device)
    for _ in range(warmup):
        runner.run(per_round)
        tick()
    return runner, peak_memory_mib(device) - base


def time_interleaved(runners: list[Runner], rounds: int, per_round: int,
                     tick: Callable[[], None] = lambda: None) -> list[list[float]]:
    """Round r of every runner before round r + 1 of any: load changes on a shared machine (or clock
    changes on a GPU) then hit every mode alike, and the ratios stay fair. ``tick`` after each round."""
    out: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for times, runner in zip(out, runners):
            times.append(time_round(runner, per_round))
            tick()
    return out


def table(rows: list[dict]) -> str:
    """Rows as a fixed-width table: images/s, TFLOP/s, peak memory and the ratio to the baseline."""
    head = f"{'case':<12} {'batch':>5} {'mode':<22} {'images/s':>10} {'TFLOP/s':>8} {'peak MiB':>9} {'x baseline':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['speedup_vs_baseline']:.2f}" if r.get("speedup_vs_baseline") else "-"
        lines.append(f"{r['case']:<12} {r['batch']:>5} {r['mode']:<22} {r['images_per_s']:>10.1f} "
                     f"{r['tflops_per_s']:>8.3f} {r['peak_memory_mib']:>9.0f} {ratio:>10}")
    return "\n".join(lines)
