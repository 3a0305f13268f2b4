"""Real checkpoints (the `fastgan train` payload) of tiny generators with non-trivial eval-mode numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fastgan.config import Config, apply_overrides
from fastgan.engine.checkpoint import make_payload, save_atomic
from fastgan.engine.state import build_state

CLASS_NAMES = [f"class-{i}" for i in range(10)]


@torch.no_grad()
def _liven(G: nn.Module, seed: int) -> nn.Module:
    """Move G away from its init so a wrong export cannot hide: random BatchNorm affine parameters,
    running statistics calibrated on a batch (as training leaves them), outputs spread over [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
        m.momentum = None  # cumulative average: one batch sets the running stats to its own
    G.train()
    z = torch.randn(64, G.z_dim, generator=g)
    G(z, torch.arange(64) % G.num_classes if G.num_classes else None)
    for m in bns:
        m.momentum = 0.1
    last = [m for m in G.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Linear))][-1]
    last.weight.mul_(20.0)  # DCGAN init (std 0.02) leaves tanh's input near 0
    return G.eval()


def _model_overrides(arch: str, conditioning: str, resolution: int, channels: int, label_mode: str = "onehot") -> dict:
    return {"model.arch": arch, "model.conditioning": conditioning, "model.resolution": resolution,
            "model.channels": channels, "model.num_classes": 10, "model.label_mode": label_mode,
            "model.g_width": 8, "model.d_width": 8, "model.z_dim": 16, "model.embed_dim": 6,
            "optim.ema_decay": 0.99}


def _write_checkpoint(path: Path, overrides: dict, step: int = 1234) -> tuple[Path, nn.Module, nn.Module]:
    """A checkpoint in the format `fastgan train` writes; returns (path, G, G_ema), EMA unlike G."""
    cfg = apply_overrides(Config(preset="test-export"), overrides)
    state = build_state(cfg, torch.device("cpu"))
    _liven(state.G, 1)
    state.G_ema.load_state_dict(state.G.state_dict())
    with torch.no_grad():
        for p in state.G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.1 * p.std().clamp_min(1e-3))
    state.G_ema.eval()
    state.step = step
    m = cfg.model
    info = {"name": "synthetic", "count": 64, "channels": m.channels, "num_classes": m.num_classes,
            "class_names": CLASS_NAMES}
    save_atomic(make_payload(state, cfg, info), path)
    return path, state.G.eval(), state.G_ema


@pytest.fixture(scope="session")
def liven():
    return _liven


@pytest.fixture(scope="session")
def write_checkpoint():
    """write_checkpoint(path, overrides, step=1234) -> (path, G, G_ema)."""
    return _write_checkpoint


@pytest.fixture(scope="session")
def model_overrides():
    """model_overrides(arch, conditioning, resolution, channels, label_mode="onehot") -> --set dict."""
    return _model_overrides


@pytest.fixture(scope="session")
def cond_model(tmp_path_factory):
    """(checkpoint, model.onnx, G_ema): conditional DCGAN 32 px, one-hot labels, dynamic batch."""
    from fastgan.export.onnx_export import export_checkpoint

    d = tmp_path_factory.mktemp("cond")
    ckpt, _, G_ema = _write_checkpoint(d / "step-0001234.pt", _model_overrides("dcgan", "concat", 32, 1))
    export_checkpoint(ckpt, d / "g.onnx")
    return ckpt, d / "g.onnx", G_ema


@pytest.fixture(scope="session")
def uncond_model(tmp_path_factory):
    """(checkpoint, model.onnx, G_ema): unconditional MLP 28 px, static batch 4, no uint8 output."""
    from fastgan.export.onnx_export import export_checkpoint
    from fastgan.export.spec import ExportOptions

    d = tmp_path_factory.mktemp("uncond")
    ckpt, _, G_ema = _write_checkpoint(d / "ck.pt", _model_overrides("mlp", "none", 28, 3))
    export_checkpoint(ckpt, d / "g.onnx", ExportOptions(batch=4, uint8=False, opset=20))
    return ckpt, d / "g.onnx", G_ema
