"""Everything a run trains and checkpoints, built from a resolved config."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from fastgan.config import Config
from fastgan.models import build_models


@dataclass
class TrainState:
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    step: int = 0

    def sampler(self, use_ema: bool = True) -> nn.Module:
        return self.G_ema if (use_ema and self.G_ema is not None) else self.G


def build_state(cfg: Config, device: torch.device) -> TrainState:
    """G, D, EMA copy of G and both Adam optimizers, seeded by ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    G, D = build_models(cfg.model)
    G, D = G.to(device), D.to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.optim.ema_decay > 0 else None
    o = cfg.optim
    # foreach Adam: fewer kernels than the per-parameter loop, same math.
    opt_g = torch.optim.Adam(G.parameters(), lr=o.g_lr, betas=o.g_betas, foreach=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=o.d_lr, betas=o.d_betas, foreach=True)
    return TrainState(G, D, G_ema, opt_g, opt_d)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers copied."""
    e_params, m_params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)
