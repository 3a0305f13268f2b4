"""DCGAN generator and discriminator for 28 px and any power of two from 32 px.

DCGAN rules (Radford et al.): strided convolutions, no pooling, BatchNorm everywhere
except G's output and D's input, ReLU in G, LeakyReLU(0.2) in D, tanh output.
With ``norm="none"`` the discriminator is the WGAN-GP critic; ``norm="spectral"`` is SN-GAN's D (every
weight divided by its largest singular value, one power iteration per training forward; no BatchNorm).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fastgan.models.layers import BatchNormAct, LabelInput, label_planes

LEAK = 0.2


def spatial_plan(resolution: int) -> tuple[int, int]:
    """(size of the first feature map, number of stride-2 stages) for a resolution."""
    if resolution == 28:
        return 7, 2  # 7 -> 14 -> 28
    return 4, int(math.log2(resolution)) - 2  # 4 -> 8 -> ... -> R


def _mult(i: int) -> int:
    return min(2**i, 8)


class Generator(nn.Module):
    def __init__(
        self,
        resolution: int,
        channels: int,
        z_dim: int,
        width: int,
        num_classes: int = 0,
        label_mode: str = "onehot",
        embed_dim: int = 50,
        kernels: str = "torch",
    ) -> None:
        super().__init__()
        self.resolution, self.channels, self.z_dim, self.num_classes = resolution, channels, z_dim, num_classes
        start, stages = spatial_plan(resolution)
        self.label = LabelInput(num_classes, label_mode, embed_dim) if num_classes else None
        in_dim = z_dim + (self.label.dim if self.label else 0)
        chans = [width * _mult(stages - 1 - i) for i in range(stages)]  # widest first
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, chans[0], start, 1, 0, bias=False),
            BatchNormAct(chans[0], 0.0, kernels),
        ]
        for c_in, c_out in itertools.pairwise(chans):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), BatchNormAct(c_out, 0.0, kernels)]
        layers += [nn.ConvTranspose2d(chans[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label is not None:
            z = torch.cat([z, self.label(y, z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """``h`` with one feature map more: ProGAN's minibatch standard deviation (Karras et al. 2018, sec. 3).

    Samples form groups of ``gcd(B, group)`` (sample i with i + B/g, i + 2B/g, ...); the extra map holds,
    for each sample, the mean over features and positions of the standard deviation across its group. A batch
    of near-copies has a small value, so D can tell a collapsed G from real data. Computed in float32 (it
    subtracts close numbers) and returned in ``h``'s dtype.
    """
    b, c, hh, ww = h.shape
    g = math.gcd(b, group)
    y = h.float().reshape(g, -1, c, hh, ww)
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/g,)
    feat = std.repeat(g)[:, None, None, None].expand(b, 1, hh, ww)
    return torch.cat([h, feat.to(h.dtype)], dim=1)


class Discriminator(nn.Module):
    """Returns ``(logit (B,), aux_logits (B, K) or None)``.

    ``conditioning``: ``none``; ``concat`` (one-hot label planes joined to the input);
    ``acgan`` (an auxiliary classifier head beside the real/fake head). ``mbstd``: a minibatch standard
    deviation map joined before the real/fake head (``features`` and the auxiliary head are per sample).
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        width: int,
        num_classes: int = 0,
        conditioning: str = "none",
        norm: str = "batch",
        dropout: float = 0.0,
        kernels: str = "torch",
        mbstd: bool = False,
    ) -> None:
        super().__init__()
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        self.concat = conditioning == "concat"
        self.mbstd = mbstd
        start, stages = spatial_plan(resolution)
        chans = [width * _mult(i) for i in range(stages)]
        in_ch = channels + (num_classes if self.concat else 0)
        sn = spectral_norm if norm == "spectral" else (lambda m: m)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        layers: list[nn.Module] = [sn(nn.Conv2d(in_ch, chans[0], 4, 2, 1)), nn.LeakyReLU(LEAK), *drop]
        for c_in, c_out in itertools.pairwise(chans):
            if norm == "batch":
                layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), BatchNormAct(c_out, LEAK, kernels)]
            else:
                layers += [sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(LEAK)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Conv2d(chans[-1] + int(mbstd), 1, start, 1, 0))
        self.aux = nn.Conv2d(chans[-1], num_classes, start, 1, 0) if conditioning == "acgan" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if self.concat:
            x = torch.cat([x, label_planes(y, self.num_classes, x.shape[-1], x.dtype)], dim=1)
        h = self.features(x)
        logit = self.head(minibatch_stddev(h) if self.mbstd else h).flatten()
        aux = self.aux(h).flatten(1) if self.aux is not None else None
        return logit, aux
