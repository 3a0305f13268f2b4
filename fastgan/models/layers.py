"""Building blocks shared by the generator and discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from fastgan.errors import ConfigError


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm2d followed by LeakyReLU (``negative_slope=0`` gives ReLU).

    One module for the pair, so a fused kernel can replace both at once and the
    state dict stays that of a plain ``BatchNorm2d`` (BN folding for export reads it).
    ``impl`` selects the implementation: ``torch`` (``BatchNorm2d`` then the activation) or the fused
    op of fastgan/kernels/bn_leaky_relu.py, ``triton`` or ``auto`` (Triton on CUDA, torch on the CPU).
    """

    def __init__(self, num_features: int, negative_slope: float = 0.0, impl: str = "torch") -> None:
        super().__init__(num_features)
        self.negative_slope = float(negative_slope)
        self.impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "torch":
            y = super().forward(x)
            if self.negative_slope == 0.0:
                return F.relu(y)
            return F.leaky_relu(y, self.negative_slope)
        return self._fused(x)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """The fused op (fastgan/kernels/bn_leaky_relu.py) with BatchNorm2d's own bookkeeping."""
        from fastgan.kernels.bn_leaky_relu import bn_leaky_relu  # lazy: importing Triton fixes its mode

        self._check_input_dim(x)
        if self.momentum is None:
            raise ConfigError("BatchNormAct: momentum=None (cumulative average) needs model.kernels=torch")
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        batch_stats = self.training or not self.track_running_stats
        return bn_leaky_relu(x, self.weight, self.bias, self.running_mean, self.running_var, batch_stats,
                             self.momentum, self.eps, self.negative_slope, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}, impl={self.impl}"


def label_planes(y: torch.Tensor, num_classes: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot labels broadcast to (B, K, size, size): the conditional DCGAN's D input planes."""
    onehot = F.one_hot(y, num_classes).to(dtype)
    return onehot[:, :, None, None].expand(-1, -1, size, size)


class LabelInput(nn.Module):
    """Maps integer labels to the vector concatenated to z: one-hot or a learned embedding."""

    def __init__(self, num_classes: int, mode: str, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.mode = mode
        self.embed = nn.Embedding(num_classes, embed_dim) if mode == "embed" else None
        self.dim = embed_dim if mode == "embed" else num_classes

    def forward(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.embed is not None:
            return self.embed(y).to(dtype)
        return F.one_hot(y, self.num_classes).to(dtype)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: weights N(0, 0.02), BatchNorm gamma N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            # a spectrally normalised weight is computed from its parametrization's original
            nn.init.normal_(m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight")
                            else m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
