"""Real against generated through two networks (seed 002, Fig. 9, 10, 20): the domain classifier's
penultimate features in 2-D (PCA fitted on real and generated together), its confidence on real
test images and on samples, and the discriminator's output on train, test and generated images.

Generated digits that sit apart from the real clusters, or get lower confidence, are what the
classifier can tell apart; a D whose train and test outputs differ has memorised its train split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastgan.analysis.common import (
    Model,
    domain_classifier,
    latents,
    protocol,
    pyplot,
    real_splits,
    run_g,
    save_fig,
    to_uint8,
    to_unit,
    write_json,
)


@torch.no_grad()
def classify(net, images: torch.Tensor, device: torch.device, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, softmax probabilities) of uint8 images."""
    f, p = [], []
    for i in range(0, len(images), batch):
        feats, logits = net(to_unit(images[i : i + batch]).to(device), logits=True)
        f.append(feats.float().cpu())
        p.append(logits.float().softmax(1).cpu())
    return torch.cat(f), torch.cat(p)


@torch.no_grad()
def d_output(D, images: torch.Tensor, labels: torch.Tensor | None, device: torch.device, batch: int = 500):
    """D(x) as a probability: sigmoid of the logit (for wgan-gp critics the raw score)."""
    out = []
    for i in range(0, len(images), batch):
        y = None if labels is None else labels[i : i + batch].to(device)
        out.append(D(to_unit(images[i : i + batch]).to(device), y)[0].float().cpu())
    return torch.cat(out)


def pca2(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def analyse(model: Model, n: int = 1000, seed: int = 0, classifier: str = "") -> dict[str, Any]:
    cfg = model.require_checkpoint("embeddings")
    sp = real_splits(cfg)
    K = model.num_classes
    test, ytest = sp.test.images[:n], sp.test.labels[:n] if sp.test.labels is not None else None
    train = sp.train.images[:n]
    ytrain = sp.train.labels[:n] if sp.train.labels is not None else None
    yg = torch.arange(n) % K if K else None
    gen = to_uint8(run_g(model, latents(n, model.z_dim, seed), yg))
    net, cpath = domain_classifier(cfg.data.dataset, model.device, classifier)
    f_real, p_real = classify(net, test, model.device)
    f_gen, p_gen = classify(net, gen, model.device)
    D = model.discriminator(True)
    needs_y = getattr(D, "concat", False)
    raw = cfg.loss.kind == "wgan-gp"
    d = {name: d_output(D, x, y if needs_y else None, model.device)
         for name, (x, y) in {"train": (train, ytrain), "test": (test, ytest), "generated": (gen, yg)}.items()}
    if not raw:
        d = {k: v.sigmoid() for k, v in d.items()}
    xy = pca2(torch.cat([f_real, f_gen]).numpy())
    return {"xy_real": xy[: len(f_real)], "xy_gen": xy[len(f_real) :], "y_real": ytest, "y_gen": yg,
            "conf_real": p_real.max(1).values, "conf_gen": p_gen.max(1).values,
            "pred_gen": p_gen.argmax(1), "d": d, "d_raw": raw, "classifier": cpath.name, "n": n}


def run(model: Model, out: Path, n: int = 1000, seed: int = 0, classifier: str = "") -> dict[str, Any]:
    r = analyse(model, n, seed, classifier)
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    a = axes[0]
    cmap = plt.get_cmap("tab10")
    for xy, y, marker, src in ((r["xy_real"], r["y_real"], "o", "real test"), (r["xy_gen"], r["y_gen"], "x", "generated")):
        col = [cmap(int(c) % 10) for c in y] if y is not None else "grey"
        a.scatter(xy[:, 0], xy[:, 1], c=col, marker=marker, s=8, alpha=0.6, linewidths=0.8, label=src)
    if r["y_real"] is not None:
        for c in range(int(r["y_real"].max()) + 1):
            pts = r["xy_real"][(r["y_real"] == c).numpy()]
            if len(pts):
                a.annotate(str(c), pts.mean(0), fontsize=11, weight="bold", ha="center", color=cmap(c % 10))
    a.set_title("classifier features, PCA 2-D (o real, x generated; colour = class)", fontsize=9)
    a.legend(fontsize=8)
    bins = np.linspace(0, 1, 26)
    axes[1].hist(r["conf_real"].numpy(), bins, alpha=0.6, density=True, label="real test")
    axes[1].hist(r["conf_gen"].numpy(), bins, alpha=0.6, density=True, label="generated")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("max softmax probability")
    axes[1].set_title("classifier confidence", fontsize=9)
    axes[1].legend(fontsize=8)
    dd = r["d"]
    lo, hi = float(min(v.min() for v in dd.values())), float(max(v.max() for v in dd.values()))
    bins = np.linspace(lo, hi + 1e-6, 31)
    for name, v in dd.items():
        axes[2].hist(v.numpy(), bins, alpha=0.5, density=True, label=f"{name} (mean {float(v.mean()):.3f})")
    axes[2].set_xlabel("critic score" if r["d_raw"] else "D(x) = sigmoid(logit)")
    axes[2].set_title("discriminator output", fontsize=9)
    axes[2].legend(fontsize=8)
    save_fig(fig, out / "embeddings.png")
    agree = None if r["y_gen"] is None else round(float((r["pred_gen"] == r["y_gen"]).float().mean()), 4)
    result = {"analysis": "embeddings",
              "protocol": protocol(model, images_per_source=r["n"], seed=seed, classifier=r["classifier"],
                                   pca="2 components fitted on real test + generated features together",
                                   d_output="raw critic score" if r["d_raw"] else "sigmoid(D logit), eval mode"),
              "confidence": {"real_mean": round(float(r["conf_real"].mean()), 4),
                             "generated_mean": round(float(r["conf_gen"].mean()), 4)},
              "generated_label_agreement": agree,
              "d_output_mean": {k: round(float(v.mean()), 4) for k, v in r["d"].items()},
              "files": ["embeddings.png"]}
    write_json(out, "embeddings", result)
    return result
