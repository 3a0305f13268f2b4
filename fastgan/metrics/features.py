"""Images -> feature statistics (and logits) through a feature network.

A feature network is ``net(x, logits=False) -> (features (B, d), logits (B, K) | None)`` on
float images in [-1, 1] at any size (it resizes to its own input size): the FID Inception
and the domain classifier both are. Networks run in fp32 with TF32 off; statistics are
accumulated in float64 (fid.StatsAccumulator).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

from fastgan.metrics.fid import Stats, StatsAccumulator
from fastgan.progress import Bar

FeatureNet = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1] (pytorch-fid's x/255 then 2x-1, in one step)."""
    return x.float().mul_(2.0 / 255.0).sub_(1.0)


def uint8_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


@contextlib.contextmanager
def exact_fp32(device: torch.device):
    """TF32 off for convolutions and matmuls while features are computed (FID is defined in fp32)."""
    if torch.device(device).type != "cuda":
        yield
        return
    b = torch.backends.cudnn
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with b.flags(enabled=b.enabled, benchmark=b.benchmark, deterministic=b.deterministic, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(prev)


@torch.no_grad()
def extract(nets: dict[str, tuple[FeatureNet, bool]], batches: Iterable[torch.Tensor], device: torch.device,
            total: int | None = None, desc: str = "features", quiet: bool = False, across_ranks: bool = False
            ) -> dict[str, tuple[Stats, torch.Tensor | None]]:
    """Run uint8 (B, C, H, W) batches through each ``name: (net, want_logits)`` once.

    Returns ``name: (stats, logits in input order on the CPU, or None)``. ``across_ranks``: each rank of a
    torch.distributed group passed its share of the images (contiguous, in rank order); every rank gets the
    statistics and logits of all of them (``StatsAccumulator.all_reduce``, logits gathered in rank order).
    """
    accs = {k: StatsAccumulator() for k in nets}
    logits: dict[str, list[torch.Tensor]] = {k: [] for k, (_, want) in nets.items() if want}
    bar = Bar(total=total, desc=desc, unit="img", disable=quiet, mininterval=1.0)
    with exact_fp32(device), bar:
        for xb in batches:
            x = uint8_to_unit(xb.to(device, non_blocking=True))
            for name, (net, want) in nets.items():
                f, lg = net(x, logits=want)
                accs[name].update(f)
                if want:
                    logits[name].append(lg.float().cpu())
            bar.update(len(xb))
    if across_ranks:
        _combine_ranks(accs, logits)
    return {k: (accs[k].result(), torch.cat(logits[k]) if k in logits else None) for k in nets}


def _combine_ranks(accs: dict[str, StatsAccumulator], logits: dict[str, list[torch.Tensor]]) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for acc in accs.values():
        acc.all_reduce()
    for name, parts in logits.items():
        every: list = [None] * dist.get_world_size()
        dist.all_gather_object(every, parts)
        logits[name] = [t for part in every for t in part]
