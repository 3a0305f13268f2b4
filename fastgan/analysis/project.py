"""Projection into latent space: Adam on z (and, for conditional models, on a label mixture) so
that G(z) matches a target image in pixels and in the domain classifier's features. How close it
gets says how much of the real data G can express; a memorising G reconstructs its training
images better than held-out ones.

Several random starts run side by side (as one batch); the best per target is kept."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fastgan.analysis.common import (
    AnalysisError,
    Model,
    domain_classifier,
    g_soft,
    grid,
    protocol,
    pyplot,
    real_splits,
    save_fig,
    show,
    to_uint8,
    to_unit,
    write_json,
)


def read_image(path: str, channels: int, resolution: int) -> torch.Tensor:
    """A picture file as uint8 (1, C, R, R): grey or RGB, centre-cropped square, resized."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "is not a regular file" if p.exists() else "does not exist"
        raise AnalysisError(f"image {p} {what}: pass a PNG/JPEG path or use --index")
    try:
        img = Image.open(p).convert("L" if channels == 1 else "RGB")
    except OSError as e:
        raise AnalysisError(f"{p} is not a readable image ({e}): pass a PNG or JPEG") from None
    s = min(img.size)
    img = img.crop(((img.width - s) // 2, (img.height - s) // 2, (img.width + s) // 2, (img.height + s) // 2))
    a = np.asarray(img.resize((resolution, resolution), Image.BILINEAR))
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def project(model: Model, targets: torch.Tensor, steps: int = 300, restarts: int = 4, lr: float = 0.05,
            feature_weight: float = 0.1, seed: int = 0, net=None, quiet: bool = False) -> dict[str, Any]:
    """Best (z, label weights, image, pixel MSE) per uint8 target (T, C, H, W)."""
    G, dev = model.G, model.device
    K, T, R = model.num_classes, len(targets), restarts
    x = to_unit(targets).to(dev).repeat_interleave(R, 0)  # (T*R, C, H, W), restarts of one target adjacent
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(T * R, model.z_dim, generator=g).to(dev).requires_grad_(True)
    logits = torch.zeros(T * R, K, device=dev, requires_grad=True) if K else None
    opt = torch.optim.Adam([z] + ([logits] if K else []), lr=lr)
    f_target = net(x)[0].detach() if net is not None and feature_weight > 0 else None

    def render() -> torch.Tensor:
        return g_soft(G, z, logits.softmax(1)) if K else G(z, None)

    for _ in tqdm(range(steps), desc="project", unit="step", file=sys.stderr, disable=quiet, mininterval=1.0,
                  dynamic_ncols=True):
        out = render()
        loss = F.mse_loss(out, x, reduction="none").flatten(1).mean(1)
        if f_target is not None:
            loss = loss + feature_weight * F.mse_loss(net(out)[0], f_target, reduction="none").mean(1)
        # keep z on the shell where G was trained (a free z drifts to where G was never asked to draw)
        loss = loss + 1e-3 * (z.norm(dim=1) - model.z_dim**0.5).pow(2)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        out = render()
        mse = ((out.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1).view(T, R)  # in [0, 1] intensity units
        best = mse.argmin(1) + torch.arange(T, device=dev) * R
        return {"images": to_uint8(out[best].float().cpu()), "z": z[best].cpu(), "mse": mse.min(1).values.cpu(),
                "label": None if not K else logits[best].softmax(1).cpu()}


def run(model: Model, out: Path, image: str | None = None, index: list[int] | None = None, steps: int = 300,
        restarts: int = 4, feature_weight: float = 0.1, seed: int = 0, split: str = "test") -> dict[str, Any]:
    cfg = model.require_checkpoint("project")
    if steps < 1 or restarts < 1:
        raise AnalysisError("--steps and --restarts must be at least 1")
    if image:
        targets, names = read_image(image, cfg.model.channels, cfg.model.resolution), [Path(image).name]
    else:
        sp = real_splits(cfg)
        pool = sp.test if split == "test" else sp.train
        index = index or list(range(8))
        bad = [i for i in index if not 0 <= i < len(pool)]
        if bad:
            raise AnalysisError(f"--index {bad[0]} is outside the {split} split (0..{len(pool) - 1})")
        targets, names = pool.images[index], [f"{split}[{i}]" for i in index]
    net = None
    if feature_weight > 0 and (model.ckpt.get("dataset") or {}).get("num_classes"):  # a classifier needs labels
        net, _ = domain_classifier(cfg.data.dataset, model.device)
        net.requires_grad_(False)
    with torch.enable_grad():
        r = project(model, targets, steps, restarts, feature_weight=feature_weight, seed=seed, net=net)
    mse = r["mse"]
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).tolist()
    diff = ((targets.float() - r["images"].float()).abs()).to(torch.uint8)
    tiles = torch.stack([targets, r["images"], 255 - diff], 1).flatten(0, 1)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.4, 0.9 * len(targets) + 0.5))
    show(ax, grid(tiles, 3), "target | G(z*) | |difference| (dark = large)")
    for i, (m, p) in enumerate(zip(mse.tolist(), psnr)):
        ax.text(3 * (targets.shape[3] + 1) + 3, i * (targets.shape[2] + 1) + targets.shape[2] / 2,
                f"{names[i]}  PSNR {p:.1f} dB", fontsize=7, va="center")
    save_fig(fig, out / "project.png", dpi=110)
    rows = [{"target": nm, "mse": round(float(m), 5), "psnr_db": round(p, 2),
             **({"label": int(r["label"][i].argmax()), "label_weight": round(float(r["label"][i].max()), 3)}
                if r["label"] is not None else {})}
            for i, (nm, m, p) in enumerate(zip(names, mse.tolist(), psnr))]
    result = {"analysis": "project",
              "protocol": protocol(model, steps=steps, restarts=restarts, lr=0.05, optimiser="Adam on z (+ label logits)",
                                   loss=f"pixel MSE + {feature_weight} x classifier-feature MSE + 1e-3 (|z| - sqrt(d))^2",
                                   feature_net="domain classifier" if net is not None else None, seed=seed),
              "mean_mse": round(float(mse.mean()), 5), "mean_psnr_db": round(float(np.mean(psnr)), 2),
              "targets": rows, "files": ["project.png"]}
    write_json(out, "project", result)
    return result
