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


def test_minibatch_stddev_matches_its_definition():
    from fastgan.models.dcgan import minibatch_stddev

    h = torch.randn(8, 3, 2, 2)
    out = minibatch_stddev(h)  # groups of 4: sample i with i+2, i+4, i+6
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    want = torch.stack([h[i % 2::2].std(0, unbiased=False).mean() for i in range(8)])
    torch.testing.assert_close(out[:, 3, 0, 0], want, atol=1e-5, rtol=1e-5)
    assert (out[:, 3] == out[:, 3, :1, :1]).all()  # one value per sample, broadcast over positions
    copies = minibatch_stddev(h[:1].expand(4, -1, -1, -1))
    assert copies[:, 3].max() < 1e-3 < out[:, 3].min()  # a collapsed batch is told apart from a varied one
    assert minibatch_stddev(torch.randn(6, 2, 3, 3)).shape == (6, 3, 3, 3)  # 6 not divisible by 4: groups of 2
    assert minibatch_stddev(h.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("cond", ["none", "concat", "acgan"])
def test_mbstd_discriminator_sees_the_batch_and_trains(cond):
    cfg = _cfg("dcgan", 28, 1, cond, "batch", d_mbstd=True)
    state = build_state(cfg, torch.device("cpu"))
    D = state.D
    plain = build_models(_cfg("dcgan", 28, 1, cond, "batch").model)[1]
    assert D.head.in_channels == plain.head.in_channels + 1
    D.eval()  # BatchNorm on running statistics: without mbstd each logit depends on its own sample only
    plain.eval()
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    changed = x.clone()
    changed[1] += 1.0
    with torch.no_grad():
        a, aux_a = D(x, y)
        b, aux_b = D(changed, y)
        assert not torch.allclose(a[0], b[0])  # sample 0's logit moved with sample 1 (its group)
        if aux_a is not None:
            torch.testing.assert_close(aux_a[0], aux_b[0])  # the auxiliary classifier stays per sample
        torch.testing.assert_close(plain(x, y)[0][0], plain(changed, y)[0][0])
    D.train()
    before = _snapshot(D)
    labels = torch.randint(10, (4,)) if cond != "none" else None
    out = d_step(state, StepSpec.from_config(cfg), torch.rand(4, 1, 28, 28) * 2 - 1, labels)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert not torch.equal(before["head.weight"], D.head.weight)


def test_mbstd_is_refused_for_the_mlp():
    from fastgan.errors import ConfigError

    m = ModelConfig(arch="mlp", resolution=28, channels=1, num_classes=10, d_mbstd=True)
    with pytest.raises(ConfigError, match="d_mbstd"):
        build_models(m)


@pytest.mark.parametrize("loss", ["ns", "wgan-gp"])
def test_spectral_norm_discriminator(loss):
    cfg = _cfg("dcgan", 28, 1, "concat", "spectral", loss)
    state = build_state(cfg, torch.device("cpu"))
    D = state.D
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, BatchNormAct)) for m in D.modules())
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(hasattr(m, "parametrizations") for m in convs)
    # initialised like every DCGAN weight (the parametrization's original, not a computed copy)
    assert all(abs(float(m.parametrizations.weight.original.detach().std()) - 0.02) < 0.005 for m in convs)
    before = _snapshot(D)
    real, labels = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randint(10, (4,))
    spec = StepSpec.from_config(cfg)
    for _ in range(5):
        out = d_step(state, spec, real, labels)
    assert all(torch.isfinite(v).all() for v in out.values())
    with torch.no_grad():
        for _ in range(100):  # one power iteration per training forward: the estimate catches up with the weights
            D(real, labels)
        for m in convs:  # every effective weight has largest singular value 1
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            assert abs(float(sigma) - 1.0) < 0.03  # unnormalised, these N(0, 0.02) weights have sigma 0.3-0.5
    assert not torch.equal(before["head.parametrizations.weight.original"],
                           D.head.parametrizations.weight.original)
    # the state dict round-trips into a fresh model (checkpoints, resume, fine-tuning)
    fresh = build_models(cfg.model)[1]
    fresh.load_state_dict(D.state_dict())
    D.eval()
    fresh.eval()
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(fresh(x, labels[:3])[0], D(x, labels[:3])[0])


def test_spectral_norm_is_refused_for_the_mlp():
    from fastgan.errors import ConfigError

    with pytest.raises(ConfigError, match="spectral"):
        build_models(ModelConfig(arch="mlp", resolution=28, channels=1, num_classes=10, d_norm="spectral"))
