"""Training across processes with torch.distributed, launched by torchrun (one process per GPU, or CPU processes).

Under torchrun (RANK, WORLD_SIZE and LOCAL_RANK in the environment) ``setup`` starts the process group (NCCL for
CUDA tensors, gloo for CPU ones, with a timeout so a dead rank ends the job instead of hanging it) and gives each
process its device. Without torchrun nothing here does anything and a run is the single-process run.

Semantics (README "Distributed training", docs/distributed.md):
- ``train.batch_size`` is the global batch. Every rank draws the whole global batch (indices, augmentation,
  latents, noise) from the same generator state and keeps its slice (``fastgan.shard.Shard``), so all ranks'
  generators stay in step and the ranks' batches together are the single-process batch.
- G and D are wrapped in DDP with buffer synchronisation off: BatchNorm normalises each rank's slice and keeps
  per-rank running statistics, averaged here before evaluation and checkpoints. Gradients are averaged across
  ranks by DDP's backward, the WGAN-GP double-backward terms included (``autograd.grad(create_graph=True)``
  fires no all-reduce; the loss's ``backward`` reduces everything). The G step runs through the bare D, so
  nothing of D's is reduced there.
- Rank 0 alone writes; checkpoints hold every rank's RNG state (``rng_ranks``).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fastgan.engine.checkpoint import rng_state, set_rng_state
from fastgan.errors import ConfigError, FastganError
from fastgan.shard import Shard

TIMEOUT_ENV = "FASTGAN_DIST_TIMEOUT"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 300  # long enough for a checkpoint write or an evaluation on rank 0, short enough to notice


class RanksDiverged(FastganError):
    """The ranks hold different parameters: their updates were not the same (a bug, not a user error)."""


def launched() -> bool:
    """True inside a process started by torchrun."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard() -> Shard:
    """This process's slice of each global draw (the whole for one process)."""
    return Shard.current()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds: use e.g. {DEFAULT_TIMEOUT_S}") from None
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be positive seconds")
    return value


def setup(device: torch.device) -> torch.device:
    """Start the process group once (under torchrun) and return this rank's device: ``cuda:LOCAL_RANK`` for a
    CUDA run, ``device`` itself otherwise. Without torchrun: ``device``, and nothing else happens."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not active():
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
        atexit.register(destroy)
    return device


def destroy() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def main_first(build: Callable[[], Any]) -> Any:
    """``build()`` on rank 0, then on the other ranks (what it caches on disk, e.g. reference statistics, is
    written once and read by the others)."""
    if not active():
        return build()
    out = build() if is_main() else None
    barrier()
    return out if is_main() else build()


@contextlib.contextmanager
def main_only(make: Callable[[], Any]):
    """``make()`` (a context manager, e.g. the run folder's lock) entered on rank 0; None on the other ranks."""
    if not is_main():
        yield None
        return
    with make() as value:
        yield value


def agreed_stop(signum: int | None, boundary: bool) -> int | None:
    """The stop signal the ranks agree on: any rank's, taken at a step boundary all ranks share (``boundary``),
    so they all save the same step; a single process stops at once."""
    if not active():
        return signum
    if not boundary:
        return None
    flag = torch.tensor([signum or 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) or None


def my_batches(batches: Iterable[Any], count: int, batch_size: int) -> Iterator[Any]:
    """This rank's contiguous run of ``batches`` (``count`` items in batches of ``batch_size``), so that what the
    ranks gather back in rank order is in input order; all of them for one process."""
    if not active():
        yield from batches
        return
    mine = shard().span(-(-count // batch_size))
    for i, b in enumerate(batches):
        if i >= mine.stop:
            return
        if i >= mine.start:
            yield b


def check_world(batch_size: int, device: torch.device, sync_bn: bool) -> None:
    """Refuse, in one line, what this world cannot run (before anything is built)."""
    shard().local(batch_size)  # raises when the global batch does not split evenly
    if sync_bn and device.type != "cuda":
        raise ConfigError("model.sync_bn=true needs CUDA devices (torch's SyncBatchNorm runs on GPUs only): "
                          "drop it on the CPU")


def check_graph(cuda_graph: bool) -> None:
    if cuda_graph and active():
        raise ConfigError("--cuda-graph is not supported with torchrun yet (capturing DDP's NCCL all-reduces is "
                          "unproven here): drop --cuda-graph, or train on one process")


# -- models -----------------------------------------------------------------


class SyncBatchNormAct(nn.SyncBatchNorm):
    """``BatchNormAct`` with statistics over the global batch: same state dict, so checkpoints stay loadable
    without it."""

    def __init__(self, num_features: int, negative_slope: float) -> None:
        super().__init__(num_features)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.relu(y) if self.negative_slope == 0.0 else F.leaky_relu(y, self.negative_slope)


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Every BatchNorm (``BatchNormAct`` keeping its activation) as SyncBatchNorm, sharing the same Parameter and
    buffer tensors (the optimizers and EMA keep working on them)."""
    from fastgan.models.layers import BatchNormAct

    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = (SyncBatchNormAct(child.num_features, child.negative_slope) if isinstance(child, BatchNormAct)
                   else nn.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats))
            new.eps, new.momentum = child.eps, child.momentum
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_bn(child)
    return module


def _ddp(module: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    # buffers stay per rank: broadcasting them before each forward breaks two forwards before one backward
    # with BatchNorm in several releases (pytorch #22095); they are averaged before evaluation and checkpoints
    # (torch >= 2.13 spells it forward_sync_buffers and deprecates broadcast_buffers)
    new = "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
    kw: dict[str, Any] = {"forward_sync_buffers" if new else "broadcast_buffers": False}
    if device.type == "cuda":
        kw["device_ids"] = [device.index]
    return DDP(module, **kw)


def wrapper(state, device: torch.device, sync_bn: bool = False) -> Callable[[nn.Module], nn.Module] | None:
    """What wraps G and D in DDP for the Stepper (after it has put them channels-last), or None without a
    process group (the single-process path). With ``sync_bn`` the BatchNorms become SyncBatchNorm here, in place.
    ``state.G``/``state.D`` stay the bare modules: checkpoints, EMA and sampling use those."""
    if not active():
        return None
    if sync_bn:
        convert_sync_bn(state.G)
        convert_sync_bn(state.D)
    return lambda module: _ddp(module, device)


# -- collectives the loop uses ------------------------------------------------


def mean(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The average over ranks of each scalar (the logged losses), in one all-reduce."""
    if not active() or not values:
        return values
    flat = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(flat)
    flat /= world()
    return dict(zip(values, flat))


@torch.no_grad()
def average_buffers(*modules: nn.Module | None) -> None:
    """BatchNorm running statistics (every floating buffer) averaged over ranks, in place."""
    if not active():
        return
    bufs = [b for m in modules if m is not None for b in m.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1).float() for b in bufs])
    dist.all_reduce(flat)
    flat /= world()
    i = 0
    for b in bufs:
        b.copy_(flat[i : i + b.numel()].view_as(b))
        i += b.numel()


@torch.no_grad()
def check_consistent(named: dict[str, nn.Module | None], step: int) -> None:
    """All ranks hold the same parameters: each parameter's float64 checksum is compared (max - min over ranks);
    a drift raises ``RanksDiverged`` on every rank, naming the first parameter that differs."""
    if not active():
        return
    names, sums = [], []
    for prefix, m in named.items():
        if m is None:
            continue
        for n, p in m.named_parameters():
            names.append(f"{prefix}.{n}")
            # sum and a position-weighted sum: a swap or a one-ulp change both show up in float64
            x = p.detach().double().reshape(-1)
            w = torch.arange(1, x.numel() + 1, device=x.device, dtype=torch.float64) / x.numel()
            sums.append(torch.stack([x.sum(), (x * w).sum()]))
    local = torch.stack(sums)
    hi, lo = local.clone(), local.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    bad = (hi != lo).any(1).nonzero().flatten().tolist()
    if bad:
        raise RanksDiverged(f"the {world()} processes hold different parameters at step {step} (first: "
                            f"{names[bad[0]]}, {len(bad)} in all): their updates diverged, so no checkpoint was "
                            "written; set FASTGAN_DEBUG=1 and report it")


def before_checkpoint(state) -> None:
    """Averaged BatchNorm statistics and the parameter check (every rank calls it)."""
    average_buffers(state.G, state.D, state.G_ema)
    check_consistent({"G": state.G, "D": state.D, "G_ema": state.G_ema}, state.step)


# -- RNG state in checkpoints ---------------------------------------------------


def _own_rng() -> dict[str, Any]:
    s = rng_state()
    s["cuda_device"] = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return s


def rng_extra() -> dict[str, Any]:
    """``{"rng_ranks": [rank 0's RNG state, rank 1's, ...]}`` for the checkpoint (gathered on every rank), or {}
    for a single process (its ``rng`` entry says it all)."""
    if not active():
        return {}
    states: list[Any] = [None] * world()
    dist.all_gather_object(states, _own_rng())
    return {"rng_ranks": states}


def restore_rng(ckpt: dict[str, Any]) -> None:
    """Each rank restores its own state when the checkpoint was written by as many ranks; else every rank takes
    rank 0's (all ranks' generators are in step, so this continues the same global stream)."""
    ranks = ckpt.get("rng_ranks")
    if not active():
        set_rng_state(ckpt["rng"])  # the single-process path, untouched
        return
    s = ranks[rank()] if ranks and len(ranks) == world() else (ranks[0] if ranks else ckpt["rng"])
    set_rng_state(s)
    if s["cuda"] and torch.cuda.is_available():  # the writer's device stream onto this rank's device
        src = int(s.get("cuda_device", 0))
        if src < len(s["cuda"]):
            torch.cuda.set_rng_state(s["cuda"][src], torch.cuda.current_device())


# -- fastgan train --nproc-per-node -------------------------------------------------


def launch(cfg, nproc: int, resume: str | None = None, quiet: bool = False) -> int:
    """Train ``cfg`` on ``nproc`` processes of this machine with torchrun itself
    (``python -m torch.distributed.run --standalone --nproc_per_node N -m fastgan train --config <cfg.json>``);
    returns torchrun's exit code (non-zero when any rank failed)."""
    if launched():
        raise ConfigError("--nproc-per-node starts torchrun, but this process already runs under torchrun: drop it")
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be at least 1, got {nproc}")
    Shard(0, nproc).local(cfg.train.batch_size)  # one line here rather than one per rank and torchrun's report
    with tempfile.TemporaryDirectory(prefix="fastgan-launch-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(cfg.to_json() + "\n")  # the resolved config: every rank trains exactly this
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "fastgan", "train", "--config", str(path)]
        cmd += (["--resume", resume] if resume else []) + (["--quiet"] if quiet else [])
        return subprocess.call(cmd)
