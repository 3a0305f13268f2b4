"""Fold eval-mode BatchNorm into the layer before it (Conv2d, ConvTranspose2d, Linear).

Exporters and runtimes fuse Conv+BatchNormalization but not ConvTranspose+BatchNormalization,
so a DCGAN generator would ship one BatchNormalization node per layer; folding removes them.
The reference is the unfolded module in eval mode: ``fold_batchnorm(G)(z) == G.eval()(z)``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastgan.models.layers import BatchNormAct

_FOLDABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _can_fold(layer: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(layer, _FOLDABLE)
        and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d))
        and bn.running_mean is not None  # without running stats eval BN uses batch stats: not a constant affine map
        and getattr(layer, "groups", 1) == 1
        and layer.weight.shape[1 if isinstance(layer, nn.ConvTranspose2d) else 0] == bn.num_features
    )


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Scale ``layer``'s output channels and set its bias so that layer' = bn(layer) in eval mode."""
    w = layer.weight.double()
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    # ConvTranspose2d stores (in, out, kh, kw); Conv2d and Linear store out channels first.
    axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    shape = [1] * w.dim()
    shape[axis] = -1
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(shift)
    layer.weight.copy_((w * scale.view(shape)).to(layer.weight.dtype))
    layer.bias = nn.Parameter((bias * scale + shift).to(layer.weight.dtype))


def _after_fold(bn: nn.Module) -> nn.Module:
    """What stays of a BatchNorm once folded: its activation for BatchNormAct, nothing otherwise."""
    if isinstance(bn, BatchNormAct):
        return nn.ReLU() if bn.negative_slope == 0.0 else nn.LeakyReLU(bn.negative_slope)
    return nn.Identity()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a foldable layer
    inside an ``nn.Sequential`` merged into it; the input module is left untouched."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if _can_fold(seq[i], seq[i + 1]):
                fold_into(seq[i], seq[i + 1])
                seq[i + 1] = _after_fold(seq[i + 1])
    return model
