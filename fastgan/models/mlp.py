"""Dense (MLP) conditional GAN of Mirza & Osindero: the baseline architecture."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastgan.models.layers import LabelInput

LEAK = 0.2


class MLPGenerator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int, width: int, num_classes: int = 0,
                 label_mode: str = "onehot", embed_dim: int = 50) -> None:
        super().__init__()
        self.resolution, self.channels, self.z_dim, self.num_classes = resolution, channels, z_dim, num_classes
        self.label = LabelInput(num_classes, label_mode, embed_dim) if num_classes else None
        in_dim = z_dim + (self.label.dim if self.label else 0)
        h1, h2 = 4 * width, 8 * width
        self.net = nn.Sequential(
            nn.Linear(in_dim, h1, bias=False), nn.BatchNorm1d(h1), nn.ReLU(),
            nn.Linear(h1, h2, bias=False), nn.BatchNorm1d(h2), nn.ReLU(),
            nn.Linear(h2, channels * resolution * resolution), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label is not None:
            z = torch.cat([z, self.label(y, z.dtype)], dim=1)
        return self.net(z).view(-1, self.channels, self.resolution, self.resolution)


class MLPDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int, num_classes: int = 0,
                 conditioning: str = "none", dropout: float = 0.0) -> None:
        super().__init__()
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        self.concat = conditioning == "concat"
        in_dim = channels * resolution * resolution + (num_classes if self.concat else 0)
        h1, h2 = 8 * width, 4 * width
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.features = nn.Sequential(
            nn.Linear(in_dim, h1), nn.LeakyReLU(LEAK), *drop, nn.Linear(h1, h2), nn.LeakyReLU(LEAK), *drop
        )
        self.head = nn.Linear(h2, 1)
        self.aux = nn.Linear(h2, num_classes) if conditioning == "acgan" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        h = x.flatten(1)
        if self.concat:
            h = torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], dim=1)
        h = self.features(h)
        return self.head(h).flatten(), (self.aux(h) if self.aux is not None else None)
