"""What every analysis shares: loading a model (checkpoint or ONNX), real splits at the model's
resolution, latents from seeds, label mixtures through G, the feature network, figures, JSON."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastgan.config import Config
from fastgan.data import ImageDataset, load_dataset
from fastgan.data.augment import resize_uint8
from fastgan.engine import runfolder
from fastgan.errors import FastganError
from fastgan.images import quantize


class AnalysisError(FastganError):
    """Bad input to an analysis (the CLI prints it as one line, exit 2)."""


@dataclass
class Model:
    """A generator to analyse: ``G(z, y) -> images in [-1, 1]``; D and the config only for checkpoints."""

    G: Any
    z_dim: int
    num_classes: int
    source: Path
    cfg: Config | None = None
    ckpt: dict[str, Any] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def run_dir(self) -> Path:
        p = self.source
        return p.parent.parent if p.parent.name == "checkpoints" else p.parent

    def require_checkpoint(self, analysis: str) -> Config:
        if self.cfg is None:
            raise AnalysisError(f"`analyze {analysis}` needs D or gradients through G, which an ONNX model lacks: "
                                "pass the training checkpoint (.pt) instead")
        return self.cfg

    def discriminator(self, trained: bool = True, seed: int = 0) -> nn.Module:
        """The checkpoint's D (``trained=False``: the same architecture freshly initialised from ``seed``)."""
        from fastgan.models import build_discriminator

        cfg = self.require_checkpoint("dfeatures/embeddings")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            D = build_discriminator(cfg.model)
        if trained:
            D.load_state_dict(self.ckpt["models"]["D"])
        return D.to(self.device).eval().requires_grad_(False)


class _OnnxG:
    """An exported generator behind the ``G(z, y)`` torch call the analyses use."""

    def __init__(self, og) -> None:
        self.og = og

    def __call__(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.og.run(z.detach().cpu().numpy().astype(np.float32), None if y is None else y.cpu().numpy())
        return torch.from_numpy(x)


def load_model(path: str | Path, device: torch.device, use_ema: bool = True) -> Model:
    """A checkpoint (``.pt``) or an exported generator (``.onnx``)."""
    path = Path(path)
    if path.is_dir():
        raise AnalysisError(f"model {path} is a folder, not a file: pass a checkpoint (.pt) or an exported .onnx file")
    if path.suffix.lower() == ".onnx":
        try:
            from fastgan.export.runtime import OnnxGenerator
        except ImportError as e:
            raise AnalysisError(f"an .onnx model needs the '{e.name}' package: pip install 'fastgan[onnx]'") from None
        og = OnnxGenerator(path, ["CPUExecutionProvider"] if device.type == "cpu" else None)
        return Model(_OnnxG(og), og.z_dim, og.num_classes, path)
    from fastgan.engine.checkpoint import load_generator

    G, cfg, ckpt = load_generator(path, device, use_ema)
    G.requires_grad_(False)
    return Model(G, cfg.model.z_dim, cfg.model.label_classes, path, cfg, ckpt, device)


def default_out(model: Model, name: str, out: str | None) -> Path:
    from fastgan.outputs import check_output_dir

    d = check_output_dir(Path(out) if out else model.run_dir / "analysis" / name, "--out")  # a file there: one line
    d.mkdir(parents=True, exist_ok=True)
    return d


def latents(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """Standard normal latents from their own generator (never moves the global RNG)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One latent per seed: the first latent ``fastgan sample --seed S`` draws."""
    return torch.cat([latents(1, z_dim, s) for s in seeds])


@torch.no_grad()
def run_g(model: Model, z: torch.Tensor, y: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """G's images (CPU float in [-1, 1]) for latents ``z`` and labels ``y``, ``batch`` at a time."""
    dev = model.device
    out = [model.G(z[i : i + batch].to(dev), None if y is None else y[i : i + batch].to(dev)).float().cpu()
           for i in range(0, len(z), batch)]
    return torch.cat(out)


def g_soft(G: nn.Module, z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """G for a mixture of labels: ``weights`` (B, K) over classes replace the one-hot (or mix the
    embeddings). With one-hot weights this is exactly ``G(z, y)``; it is differentiable in both."""
    lab = G.label
    vec = weights @ lab.embed.weight if lab.embed is not None else weights
    h = torch.cat([z, vec.to(z.dtype)], dim=1)
    out = G.net(h[:, :, None, None]) if _is_conv(G) else G.net(h)
    return out.view(len(z), G.channels, G.resolution, G.resolution)


def _is_conv(G: nn.Module) -> bool:
    return isinstance(G.net[0], nn.ConvTranspose2d)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (N, C, H, W) -> uint8 (N, C, H, W), as if saved as PNG (fastgan.images.quantize)."""
    return quantize(x)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().mul(2.0 / 255.0).sub(1.0)


@dataclass
class Splits:
    train: ImageDataset
    test: ImageDataset


def real_splits(cfg: Config) -> Splits:
    """Train and test splits at the model's resolution, disjoint. The bundled digits' train split is
    all 1797 images and its test split the last 20% of them; here train drops those rows, so that
    test images are unseen (a memorisation check against its own training images would be void)."""
    train = load_dataset(replace(cfg.data, split="train"))
    test = load_dataset(replace(cfg.data, split="test"))
    n, m = len(train), len(test)
    if n > m and torch.equal(train.images[n - m :], test.images):
        train = replace(train, images=train.images[: n - m],
                        labels=None if train.labels is None else train.labels[: n - m])
    r = cfg.model.resolution
    return Splits(*(replace(d, images=resize_uint8(d.images, r)) for d in (train, test)))


def domain_classifier(dataset: str, device: torch.device, path: str = "", cache_dir: str = "", quiet: bool = False):
    """The dataset's domain classifier: ``path``, else the cached one, else trained now and cached."""
    from fastgan.config import DataConfig
    from fastgan.metrics.classifier import default_path, load_classifier, save_classifier, train_classifier

    p = Path(path) if path else default_path(dataset, cache_dir)
    if not p.is_file() and not path:
        print(f"no domain classifier for '{dataset}' yet: training one (cached at {p})", file=sys.stderr)
        model, _ = train_classifier(DataConfig(dataset=dataset), device=device, quiet=quiet)
        save_classifier(model, p)
    return load_classifier(p, device, dataset), p


def parse_ints(text: str | None, what: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AnalysisError(f"{what} must be integers like 3 or 0,4,7, got '{text}'") from None


def check_label(model: Model, labels: list[int], what: str) -> None:
    if not labels:
        return
    if model.num_classes == 0:
        raise AnalysisError(f"{what} asks for labels but this generator is unconditional (no labels): drop {what}")
    bad = [v for v in labels if not 0 <= v < model.num_classes]
    if bad:
        raise AnalysisError(f"label {bad[0]} in {what} is out of range: this model has classes 0..{model.num_classes - 1}")


def protocol(model: Model, **extra: Any) -> dict[str, Any]:
    """What a result depends on: the model file, its step, dataset and any analysis settings."""
    p: dict[str, Any] = {"model": str(model.source), "z_dim": model.z_dim, "num_classes": model.num_classes,
                         "device": str(model.device)}
    if model.ckpt is not None:
        p.update(step=int(model.ckpt["step"]), dataset=model.cfg.data.dataset, resolution=model.cfg.model.resolution,
                 preset=model.cfg.preset)
    return {**p, **extra}


def write_json(out: Path, name: str, payload: dict[str, Any]) -> Path:
    path = out / f"{name}.json"
    runfolder.write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(images: torch.Tensor, nrow: int, pad: int = 1, value: int = 255) -> np.ndarray:
    """uint8 (N, C, H, W) -> (H', W') or (H', W', 3) with ``nrow`` per row and a light gutter."""
    from fastgan.images import make_grid

    g = make_grid(images.permute(0, 2, 3, 1).numpy(), nrow, pad)
    rows = -(-len(images) // nrow)
    h, w = images.shape[2] + pad, images.shape[3] + pad
    for i in range(len(images), rows * nrow):  # empty slots of the last row: background, not black tiles
        r, c = divmod(i, nrow)
        g[r * h : (r + 1) * h + pad, c * w : (c + 1) * w + pad] = value
    g[: pad] = value
    for r in range(rows + 1):
        g[r * (images.shape[2] + pad) : r * (images.shape[2] + pad) + pad] = value
    for c in range(nrow + 1):
        g[:, c * (images.shape[3] + pad) : c * (images.shape[3] + pad) + pad] = value
    return g[..., 0] if g.shape[-1] == 1 else g


def show(ax, img: np.ndarray, title: str = "") -> None:
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def save_fig(fig, path: Path, dpi: int = 90) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    runfolder.write_atomic(Path(path), buf.getbuffer())
    return path
