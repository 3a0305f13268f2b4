"""A rank's part of a global batch: every rank draws the whole global batch from the same generator state and
keeps its own slice, so the ranks' batches together are the single-process batch for the same seed and a run's
data order does not depend on the world size. ``Shard()`` (rank 0 of 1) keeps everything, untouched.

A leaf module (torch only), so the data loaders and the train step can take a ``Shard`` without importing
``torch.distributed`` (``fastgan.engine.distributed`` makes the one for a torchrun process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fastgan.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        """This process's shard in the running torch.distributed group (rank 0 of 1 without one)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def span(self, n: int) -> range:
        """This rank's contiguous part of ``range(n)`` for an ``n`` that need not divide (evaluation samples)."""
        return range(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def local(self, n: int) -> int:
        """This rank's share of a global count ``n`` (which must divide evenly)."""
        if n % self.world:
            raise ConfigError(f"train.batch_size={n} does not split evenly across {self.world} processes: "
                              f"use a multiple of {self.world}")
        return n // self.world

    def take(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's contiguous slice of a globally drawn tensor (``t`` itself for one process)."""
        if self.world == 1:
            return t
        b = self.local(t.shape[dim])
        return t.narrow(dim, self.rank * b, b)

    def take_draw(self, d: Any) -> Any:
        """The slice of a ``Draw`` (idx (B,), flip (B,), shift (2, B): the batch is the last dim of each)."""
        if self.world == 1:
            return d
        return type(d)(*(None if t is None else self.take(t, -1) for t in d))

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """``torch.randn_like(x)`` for this rank's ``x`` out of the global batch's noise."""
        if self.world == 1:
            return torch.randn_like(x)
        return self.take(torch.randn((x.shape[0] * self.world, *x.shape[1:]), dtype=x.dtype, device=x.device))

    def rand(self, n: int, device: torch.device) -> torch.Tensor:
        """``torch.rand(n)`` for this rank's ``n`` samples out of the global batch's draw."""
        return self.take(torch.rand(n * self.world, device=device))


WHOLE = Shard()  # one process: everything, untouched
