"""Every (architecture, resolution, channels, conditioning, D norm) builds, has the right
shapes, and one training step changes every parameter with finite losses."""

from __future__ import annotations

import itertools

import pytest
import torch

from fastgan.config import Config, LossConfig, ModelConfig, OptimConfig, TrainConfig, validate
from fastgan.engine.state import build_state
from fastgan.engine.step import StepSpec, d_step, g_step
from fastgan.models import build_models
from fastgan.models.layers import BatchNormAct

RESOLUTIONS = (28, 32, 64, 128)
COMBOS = [
    (arch, res, ch, cond, norm)
    for arch, res, ch, cond, norm in itertools.product(
        ("dcgan", "mlp"), RESOLUTIONS, (1, 3), ("none", "concat", "acgan"), ("batch", "none")
    )
    if not (arch == "mlp" and norm == "none")  # the MLP D has no norm layers either way
]


def _cfg(arch, res, ch, cond, norm, loss="ns", **model_kw) -> Config:
    m = ModelConfig(arch=arch, resolution=res, channels=ch, num_classes=10, conditioning=cond, d_norm=norm,
                    g_width=8, d_width=8, z_dim=16, **model_kw)
    cfg = Config(model=m, loss=LossConfig(kind=loss), train=TrainConfig(batch_size=4),
                 optim=OptimConfig(ema_decay=0.9))
    validate(cfg)
    return cfg


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("arch,res,ch,cond,norm", COMBOS, ids=lambda v: str(v))
def test_build_shapes_and_one_step(arch, res, ch, cond, norm):
    loss = "wgan-gp" if norm == "none" else "ns"
    cfg = _cfg(arch, res, ch, cond, norm, loss)
    state = build_state(cfg, torch.device("cpu"))
    spec = StepSpec.from_config(cfg)
    G, D = state.G, state.D
    z = torch.randn(4, 16)
    y = torch.tensor([0, 3, 7, 9]) if cond != "none" else None
    x = G(z, y)
    assert x.shape == (4, ch, res, res)
    assert x.abs().max() <= 1.0  # tanh output
    logit, aux = D(x, y)
    assert logit.shape == (4,)
    assert (aux is not None) == (cond == "acgan")
    if aux is not None:
        assert aux.shape == (4, 10)

    g0, d0 = _snapshot(G), _snapshot(D)
    real = torch.rand(4, ch, res, res) * 2 - 1
    labels = torch.randint(10, (4,)) if cond != "none" else None
    out = {**d_step(state, spec, real, labels), **g_step(state, spec, torch.device("cpu"))}
    for k, v in out.items():
        assert torch.isfinite(v).all(), k
    unchanged = [n for n, p in G.named_parameters() if torch.equal(p, g0[n])]
    unchanged += [n for n, p in D.named_parameters() if torch.equal(p, d0[n])]
    if loss == "wgan-gp":  # E[D(fake)] - E[D(real)] and the penalty are blind to a constant offset
        unchanged.remove("head.bias")
    assert not unchanged, f"parameters not updated: {unchanged}"
    if loss == "wgan-gp":
        assert out["gp"] > 0


def test_dcgan_conventions():
    """BN nowhere in G's output or D's input layer, ReLU in G, LeakyReLU(0.2) in D, N(0, 0.02) init."""
    G, D = build_models(ModelConfig(resolution=64, channels=3, num_classes=10))
    g_layers, d_layers = list(G.net), list(D.features)
    assert isinstance(g_layers[-1], torch.nn.Tanh) and isinstance(g_layers[-2], torch.nn.ConvTranspose2d)
    assert isinstance(d_layers[0], torch.nn.Conv2d) and isinstance(d_layers[1], torch.nn.LeakyReLU)
    assert all(m.negative_slope == 0.0 for m in G.modules() if isinstance(m, BatchNormAct))
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, BatchNormAct))
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for m in D.modules())
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.001
    # The DCGAN-64 generator of the PyTorch example (ngf 64, nz 100) has 3,576,704 parameters.
    assert sum(p.numel() for p in G.parameters()) == 3_576_704


def test_critic_has_no_batchnorm():
    _, D = build_models(ModelConfig(resolution=32, channels=1, d_norm="none"))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in D.modules())


def test_embedded_labels_and_dropout():
    m = ModelConfig(resolution=32, channels=1, num_classes=10, conditioning="concat", label_mode="embed",
                    embed_dim=12, d_dropout=0.3, g_width=8, d_width=8)
    G, D = build_models(m)
    assert G.label.embed.weight.shape == (10, 12)
    assert any(isinstance(mod, torch.nn.Dropout) for mod in D.modules())
    x = G(torch.randn(3, 100), torch.tensor([1, 2, 3]))
    assert x.shape == (3, 1, 32, 32)
    # Different labels give different images for the same z.
    z = torch.randn(1, 100).expand(2, -1)
    G.eval()
    a, b = G(z, torch.tensor([1, 2]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("bad", [16, 48, 100])
def test_bad_resolution_refused(bad):
    from fastgan.errors import ConfigError

    with pytest.raises(ConfigError, match="model.resolution"):
        validate(Config(model=ModelConfig(resolution=bad)))
