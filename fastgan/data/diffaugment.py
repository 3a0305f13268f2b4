"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random policy is applied to every image D sees, real and fake, in D's step and in G's
step, so D never learns the augmentation itself and G's gradient flows back through it. Each op
is plain differentiable torch on the device: random draws come from torch's default generator
(graph-safe on CUDA, checkpointed with the run), shapes are static and nothing branches on a tensor
value, so it runs eager, compiled or inside the captured CUDA graph alike.

The ops draw the same random numbers in the same order as the authors' reference
(github.com/mit-han-lab/data-efficient-gans, ``DiffAugment_pytorch.py``), so for one seed both give
the same images (tests/ecosystem/test_diffaugment.py compares them). Translation and cutout are
written as a gather and a comparison mask instead of the reference's meshgrid indexing and
scatter, which are the same values without building index grids per call.

Differentiability: first order w.r.t. the images (gather/mask/affine ops); the random draws
carry no gradient.

Distributed runs pass their ``Shard`` (fastgan.shard): each rank draws the global batch's
parameters and keeps its slice, so the ranks together augment as one process would.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fastgan.config import DIFFAUGMENT_OPS, comma_list

Tensor = torch.Tensor
Shard = Any  # fastgan.shard.Shard (duck-typed: ``world`` and ``take``), None for one process

TRANSLATION_RATIO = 0.125  # max shift, as a fraction of the side (reference default: 1/8)
CUTOUT_RATIO = 0.5  # side of the cut-out square, as a fraction of the image side (reference default)


def _rand(x: Tensor, shard: Shard) -> Tensor:
    """One uniform [0, 1) number per image of ``x``, shaped (B, 1, 1, 1)."""
    world = shard.world if shard is not None else 1
    t = torch.rand(x.size(0) * world, 1, 1, 1, dtype=x.dtype, device=x.device)
    return shard.take(t) if world > 1 else t


def _randint(low: int, high: int, x: Tensor, shard: Shard) -> Tensor:
    """One integer in [low, high) per image of ``x``, shaped (B, 1, 1)."""
    world = shard.world if shard is not None else 1
    t = torch.randint(low, high, size=[x.size(0) * world, 1, 1], device=x.device)
    return shard.take(t) if world > 1 else t


def brightness(x: Tensor, shard: Shard = None) -> Tensor:
    return x + (_rand(x, shard) - 0.5)


def saturation(x: Tensor, shard: Shard = None) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)  # grey images: x == mean, so this is the identity
    return (x - mean) * (_rand(x, shard) * 2) + mean


def contrast(x: Tensor, shard: Shard = None) -> Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, shard) + 0.5) + mean


def translation(x: Tensor, shard: Shard = None, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image by up to ``ratio`` of its side, filling with zeros (mid grey in [-1, 1])."""
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sh, sh + 1, x, shard)
    tx = _randint(-sw, sw + 1, x, shard)
    # source pixel in the 1-px zero-padded image; clamping onto the padding gives the zero fill
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp(0, w + 1)
    index = (rows * (w + 2) + cols).view(b, 1, h * w).expand(b, c, h * w)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.flatten(2).gather(2, index).view(b, c, h, w)


def cutout(x: Tensor, shard: Shard = None, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero a square of side ``ratio`` of the image at a random centre (clipped at the border)."""
    _, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - sh % 2), x, shard)
    ox = _randint(0, w + (1 - sw % 2), x, shard)
    top, left = oy - sh // 2, ox - sw // 2
    r = torch.arange(h, device=x.device).view(1, h, 1)
    col = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (r >= top) & (r < top + sh) & (col >= left) & (col < left + sw)
    return x * (~inside).to(x.dtype).unsqueeze(1)


OPS = {"translation": (translation,), "cutout": (cutout,), "color": (brightness, saturation, contrast)}
assert tuple(OPS) == DIFFAUGMENT_OPS  # the names data.diffaugment accepts (checked in fastgan.config)


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ("translation", "cutout"); ConfigError naming an unknown op."""
    return comma_list("data.diffaugment", policy, DIFFAUGMENT_OPS)


def diff_augment(x: Tensor, policy: str, shard: Shard = None) -> Tensor:
    """``x`` (N, C, H, W) through every op of ``policy`` in order; ``""`` returns ``x`` itself."""
    for name in parse_policy(policy) if policy else ():
        for op in OPS[name]:
            x = op(x, shard)
    return x
