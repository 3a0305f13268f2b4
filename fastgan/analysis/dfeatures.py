"""The discriminator as a feature extractor (DCGAN §5.1): every D layer's activations max-pooled
to 4x4, flattened and concatenated, standardised, and a linear L2-SVM (squared hinge) on top,
with C chosen on a held-out part of the labelled set. Test accuracy for n labels per class, next
to two baselines in the same run: raw pixels, and an untrained D of the same architecture (so a
gain is what D learned, not what random convolutions plus an SVM already give).

A conditional D (label planes on its input) is fed all-zero planes: the label is the answer here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastgan.analysis.common import AnalysisError, Model, protocol, pyplot, real_splits, save_fig, to_unit, write_json

POOL = 4  # DCGAN §5.1: each layer's feature map max-pooled to a 4x4 grid
# SVM regularisation; the best on the held-out split is refit on all labels. Thousands of standardised
# features make every training set separable, so small C is where the choice is.
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
HOLDOUT = 0.2  # share of the labelled images kept aside to choose C


@torch.no_grad()
def d_features(D: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """(N, F) float32: the output of every activation in D.features, max-pooled to POOL x POOL."""
    acts: list[torch.Tensor] = []
    layers = [m for m in D.features if isinstance(m, nn.LeakyReLU) or type(m).__name__ == "BatchNormAct"]
    if not layers:
        raise AnalysisError("this discriminator has no convolutional layers (arch=mlp): dfeatures needs arch=dcgan")
    hooks = [m.register_forward_hook(lambda _m, _i, o: acts.append(F.adaptive_max_pool2d(o, POOL).flatten(1)))
             for m in layers]
    out = []
    try:
        for i in range(0, len(images), batch):
            x = to_unit(images[i : i + batch]).to(device)
            if getattr(D, "concat", False):
                x = torch.cat([x, x.new_zeros(len(x), D.num_classes, *x.shape[2:])], 1)
            acts.clear()
            D.features(x)
            out.append(torch.cat(acts, 1).float().cpu())
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out)


def subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of up to ``per_class`` random images of each class (the same draw for every feature set)."""
    g = torch.Generator().manual_seed(seed)
    idx = [torch.nonzero(labels == c).flatten() for c in labels.unique()]
    return torch.cat([i[torch.randperm(len(i), generator=g)[:per_class]] for i in idx]).sort().values


def fit_svm(x: torch.Tensor, y: torch.Tensor, c: float, num_classes: int, max_iter: int = 300) -> torch.Tensor:
    """One-vs-rest linear L2-SVM with the squared hinge: for each class k, minimise
    0.5 |w_k|^2 + C sum_i max(0, 1 - t_ik w_k.[x_i, 1])^2 (t_ik = +1 for class k, else -1).

    This is scikit-learn LinearSVC's objective exactly (its intercept is a regularised constant
    feature too); it is solved here by full-batch L-BFGS on BLAS matmuls, because liblinear took
    minutes per fit on a few thousand 3000-d feature vectors on a 2-core CPU. The K problems are
    independent, so one sum over all of them is minimised at once. Returns W (d + 1, K)."""
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    T = torch.full((len(x), num_classes), -1.0, dtype=x.dtype)
    T[torch.arange(len(x)), y] = 1.0
    W = torch.zeros(X.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * (W * W).sum() + c * (1 - T * (X @ W)).clamp_min(0).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return W.detach()


def svm_predict(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x @ W[:-1] + W[-1]).argmax(1)


def svm_accuracy(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor, seed: int = 0
                 ) -> tuple[float, float]:
    """(test accuracy, chosen C) of a standardised linear L2-SVM with C picked on a held-out split."""
    from sklearn.model_selection import train_test_split

    K = int(max(ytr.max(), yte.max())) + 1

    def fit(x, y, c):
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)  # standardise on the training part only
        W = fit_svm((x - mu) / sd, y, c, K)
        return lambda q: svm_predict(W, (q - mu) / sd)

    a, b = train_test_split(torch.arange(len(ytr)).numpy(), test_size=HOLDOUT, random_state=seed, stratify=ytr.numpy())
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    best = max(C_GRID, key=lambda c: float((fit(xtr[a], ytr[a], c)(xtr[b]) == ytr[b]).float().mean()))
    return float((fit(xtr, ytr, best)(xte) == yte).float().mean()), best


def analyse(model: Model, per_class: list[int | None], seed: int = 0, max_test: int = 10000,
            quiet: bool = False) -> dict[str, Any]:
    cfg = model.require_checkpoint("dfeatures")
    sp = real_splits(cfg)
    if sp.train.labels is None:
        raise AnalysisError(f"dataset '{cfg.data.dataset}' has no labels, so there is nothing to classify")
    ytr, yte = sp.train.labels, sp.test.labels[:max_test]
    xtr_img, xte_img = sp.train.images, sp.test.images[:max_test]
    counts = torch.bincount(ytr)
    # the largest labelled set any setting needs: features are computed once for it
    sets = {n: subset(ytr, n if n else int(counts.max()), seed) for n in per_class}
    need = torch.unique(torch.cat(list(sets.values())))
    trained, untrained = model.discriminator(True), model.discriminator(False, seed)
    feats = {
        "D (trained)": lambda x: d_features(trained, x, model.device),
        "D (untrained)": lambda x: d_features(untrained, x, model.device),
        "pixels": lambda x: x.flatten(1).float(),
    }
    rows = []
    for name, fn in feats.items():
        f_need = fn(xtr_img[need])
        ftr_all = torch.zeros(len(ytr), f_need.shape[1])
        ftr_all[need] = f_need
        fte = fn(xte_img)
        for n, idx in sets.items():
            acc, c = svm_accuracy(ftr_all[idx], ytr[idx], fte, yte, seed)
            if not quiet:
                print(f"dfeatures: {name}, {len(idx)} labels: test accuracy {acc:.4f} (C={c})", file=sys.stderr)
            rows.append({"features": name, "per_class": n or "all", "labels": len(idx), "dims": int(f_need.shape[1]),
                         "test_accuracy": round(acc, 4), "C": c})
    return {"rows": rows, "train_size": len(ytr), "test_size": len(yte)}


def run(model: Model, out: Path, per_class: list[int | None], seed: int = 0, max_test: int = 10000) -> dict[str, Any]:
    r = analyse(model, per_class, seed, max_test)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name in dict.fromkeys(row["features"] for row in r["rows"]):
        pts = [(row["labels"], row["test_accuracy"]) for row in r["rows"] if row["features"] == name]
        ax.plot(*zip(*pts), "o-", label=f"{name} ({next(row['dims'] for row in r['rows'] if row['features'] == name)}-d)")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy")
    ax.set_title("linear SVM on discriminator features", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_fig(fig, out / "dfeatures.png")
    result = {"analysis": "dfeatures",
              "protocol": protocol(model, seed=seed, train_images=r["train_size"], test_images=r["test_size"],
                                   features=f"each D activation max-pooled to {POOL}x{POOL}, concatenated; "
                                   "conditional D fed zero label planes",
                                   classifier="linear L2-SVM, squared hinge, one-vs-rest (LinearSVC's objective, "
                                   "L-BFGS) on standardised features",
                                   C_grid=list(C_GRID), C_choice=f"best on a stratified {HOLDOUT:.0%} hold-out, refit on all",
                                   baselines="raw pixels; untrained D of the same architecture"),
              "results": r["rows"], "files": ["dfeatures.png"]}
    write_json(out, "dfeatures", result)
    return result
