"""BatchNorm folding on its own: folded module vs the unfolded one in eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastgan.config import ModelConfig
from fastgan.export.fold import fold_batchnorm
from fastgan.models import build_discriminator, build_generator
from fastgan.models.layers import BatchNormAct


def _random_bn(bn: nn.modules.batchnorm._BatchNorm, g: torch.Generator) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 3 + 0.01)


def _no_batchnorm(m: nn.Module) -> bool:
    return not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())


# (layer, BatchNorm after it, input shape): every foldable layer, with and without a bias of its own.
CASES = {
    "convT-nobias-relu": (lambda: nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=False), lambda: BatchNormAct(5, 0.0), (3, 6, 4, 4)),
    "convT-bias": (lambda: nn.ConvTranspose2d(6, 5, 3, 1, 0, bias=True), lambda: nn.BatchNorm2d(5), (3, 6, 5, 5)),
    "conv-leaky": (lambda: nn.Conv2d(4, 7, 4, 2, 1, bias=False), lambda: BatchNormAct(7, 0.2), (3, 4, 8, 8)),
    "conv-bias": (lambda: nn.Conv2d(4, 7, 3, 1, 1, bias=True), lambda: nn.BatchNorm2d(7), (3, 4, 6, 6)),
    "linear-bn1d": (lambda: nn.Linear(9, 11, bias=False), lambda: nn.BatchNorm1d(11), (5, 9)),
    "linear-bias": (lambda: nn.Linear(9, 11, bias=True), lambda: nn.BatchNorm1d(11), (5, 9)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fold_single_layer_matches_eval_module(case):
    make_layer, make_bn, shape = CASES[case]
    g = torch.Generator().manual_seed(3)
    layer, bn = make_layer(), make_bn()
    with torch.no_grad():
        layer.weight.normal_(0, 0.3, generator=g)
        if layer.bias is not None:
            layer.bias.normal_(0, 1.0, generator=g)
    _random_bn(bn, g)
    ref = nn.Sequential(layer, bn).eval()
    folded = fold_batchnorm(ref)
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        want, got = ref(x), folded(x)
    assert _no_batchnorm(folded)
    assert want.abs().max() > 0.5  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ref.modules())  # input left unfolded


@pytest.mark.parametrize("arch,res,label_mode", [("dcgan", 28, "onehot"), ("dcgan", 64, "embed"), ("mlp", 32, "onehot")])
def test_fold_generator_matches_eval_generator(arch, res, label_mode, liven):
    m = ModelConfig(arch=arch, resolution=res, channels=3, num_classes=10, conditioning="concat", g_width=8,
                    z_dim=16, label_mode=label_mode, embed_dim=6)
    G = liven(build_generator(m), 0)
    folded = fold_batchnorm(G)
    z, y = torch.randn(8, 16), torch.arange(8)
    with torch.no_grad():
        want, got = G(z, y), folded(z, y)
    assert _no_batchnorm(folded)
    assert want.std() > 0.1
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_fold_discriminator_conv_path():
    m = ModelConfig(resolution=32, channels=1, d_width=8)
    D = build_discriminator(m)
    g = torch.Generator().manual_seed(1)
    for bn in (x for x in D.modules() if isinstance(x, nn.BatchNorm2d)):
        _random_bn(bn, g)
    D.eval()
    x = torch.randn(4, 1, 32, 32, generator=g)
    with torch.no_grad():
        want, got = D(x)[0], fold_batchnorm(D)(x)[0]
    assert _no_batchnorm(fold_batchnorm(D))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

