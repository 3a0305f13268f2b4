"""Generating images from a G: fixed grid latents, batched eval-mode generation."""

from __future__ import annotations

import torch

from fastgan.config import Config

FIXED_LATENT_SEED_OFFSET = 12345  # fixed sample-grid latents come from their own generator


def fixed_latents(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The grid's latents and labels: the same at every snapshot and across resumes."""
    gen = torch.Generator().manual_seed(cfg.train.seed + FIXED_LATENT_SEED_OFFSET)
    n = cfg.train.grid_size
    z = torch.randn(n, cfg.model.z_dim, generator=gen).to(device)
    k = cfg.model.label_classes
    y = (torch.arange(n) % k).to(device) if k else None
    return z, y


def grid_columns(cfg: Config) -> int | None:
    k = cfg.model.label_classes
    return k if 2 <= k <= 16 else None  # one class per column


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None, batch: int = 256) -> torch.Tensor:
    """G's images for latents ``z`` (and labels ``y``), in eval mode, ``batch`` at a time."""
    was_training = G.training
    G.eval()
    out = torch.cat([G(z[i : i + batch], None if y is None else y[i : i + batch]) for i in range(0, len(z), batch)])
    G.train(was_training)
    return out
