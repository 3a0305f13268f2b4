"""Memorisation check (seed 002): for generated samples, the nearest training images in pixel L2
and in a feature space; and the distances generated -> train against held-out test -> train.

A model that copies its training set puts its samples closer to training images than unseen real
images are: the memorisation ratio median d(gen, train) / median d(test, train) then drops below 1
(about 0 for copies); a model that generalises sits near or above 1."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fastgan.analysis.common import (
    AnalysisError,
    Model,
    domain_classifier,
    grid,
    latents,
    protocol,
    pyplot,
    real_splits,
    run_g,
    save_fig,
    show,
    to_uint8,
    to_unit,
    write_json,
)

CANDIDATES = 8  # extra approximate neighbours re-ranked by the exact distance


def nearest(queries: torch.Tensor, pool: torch.Tensor, k: int, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest rows of ``pool`` (N, D) to each query (M, D) in L2: (distances, indices), (M, k).

    Candidates come from the fast |q|^2 + |p|^2 - 2 q.p form in float32, which cancels badly near 0;
    their distances are then recomputed from the differences, so an exact copy is at distance 0."""
    if k > len(pool):
        raise AnalysisError(f"k={k} is larger than the {len(pool)} images searched: use --k {len(pool)} or less")
    q, p = queries.float(), pool.float()
    pn = (p * p).sum(1)
    c = min(len(p), k + CANDIDATES)
    dists, idxs = [], []
    for i in range(0, len(q), chunk):
        qb = q[i : i + chunk]
        d2 = (qb * qb).sum(1, keepdim=True) + pn[None] - 2 * qb @ p.T
        cand = d2.topk(c, dim=1, largest=False).indices
        exact = (qb[:, None] - p[cand]).norm(dim=2)
        order = exact.argsort(dim=1)[:, :k]
        dists.append(exact.gather(1, order))
        idxs.append(cand.gather(1, order))
    return torch.cat(dists), torch.cat(idxs)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> flat vectors in [0, 1] (distances then read in pixel-intensity units)."""
    return x.flatten(1).float() / 255.0


@torch.no_grad()
def embed(net, images: torch.Tensor, device: torch.device, batch: int = 100, desc: str = "features") -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", file=sys.stderr, leave=False,
                  mininterval=1.0, dynamic_ncols=True):
        out.append(net(to_unit(images[i : i + batch]).to(device))[0].float().cpu())
    return torch.cat(out)


def feature_net(dataset: str, device: torch.device, kind: str = "auto", classifier: str = ""):
    """(network, description): FID Inception pool3 when its weights are present, else the domain classifier.

    ``auto`` takes Inception on a GPU only: at ~6 GFLOP an image it would make the search minutes
    long on a CPU, where the classifier (~6 MFLOP) does it in seconds."""
    if kind not in ("auto", "inception", "classifier"):
        raise AnalysisError(f"--features must be auto, inception or classifier, got '{kind}'")
    if kind == "inception" or (kind == "auto" and torch.device(device).type == "cuda"):
        from fastgan.metrics.inception import find_weights, load_inception

        try:
            path = find_weights(download=False)
        except Exception:
            if kind == "inception":
                raise
        else:
            net = load_inception(path, 2048, device)
            return net, f"FID Inception pool3 (2048-d, {net.weights_file})"
    net, p = domain_classifier(dataset, device, classifier)
    return net, f"domain classifier penultimate layer ({net.arch['feature_dim']}-d, {p.name})"


def analyse(model: Model, n: int = 256, k: int = 5, seed: int = 0, features: str = "auto",
            feature_pool: int | None = None, test_queries: int = 1000, classifier: str = "") -> dict[str, Any]:
    cfg = model.require_checkpoint("neighbours")  # the training set is named by the checkpoint's config
    sp = real_splits(cfg)
    train, test = sp.train.images, sp.test.images[:test_queries]
    if k > len(train):
        raise AnalysisError(f"--k {k} is larger than the training set ({len(train)} images): use --k {len(train)} or less")
    z = latents(n, model.z_dim, seed)
    y = torch.arange(n) % model.num_classes if model.num_classes else None
    gen = to_uint8(run_g(model, z, y))
    pd_gen, pi_gen = nearest(pixels(gen), pixels(train), k)
    pd_test, _ = nearest(pixels(test), pixels(train), 1)
    net, net_desc = feature_net(cfg.data.dataset, model.device, features, classifier)
    is_inception = net_desc.startswith("FID Inception")
    if feature_pool is None:  # Inception costs ~6 GFLOP an image: on a CPU search a random subset
        feature_pool = 1000 if is_inception and model.device.type == "cpu" else 0
    pool_idx = (torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:feature_pool].sort().values
                if 0 < feature_pool < len(train) else torch.arange(len(train)))
    f_train = embed(net, train[pool_idx], model.device, desc="train features")
    f_gen = embed(net, gen, model.device, desc="generated features")
    f_test = embed(net, test, model.device, desc="test features")
    fd_gen, fi_gen = nearest(f_gen, f_train, min(k, len(pool_idx)))
    fd_test, _ = nearest(f_test, f_train, 1)
    return {"generated": gen, "labels": y, "train": train, "pixel": (pd_gen, pi_gen, pd_test[:, 0]),
            "feature": (fd_gen, pool_idx[fi_gen], fd_test[:, 0]), "feature_space": net_desc,
            "feature_pool": len(pool_idx), "train_size": len(train), "test_queries": len(test)}


def _ratio(gen_d: torch.Tensor, test_d: torch.Tensor) -> float:
    return round(float(gen_d.median() / test_d.median().clamp_min(1e-12)), 4)


def run(model: Model, out: Path, n: int = 256, k: int = 5, seed: int = 0, features: str = "auto",
        feature_pool: int | None = None, rows: int = 8, classifier: str = "") -> dict[str, Any]:
    r = analyse(model, n, k, seed, features, feature_pool, classifier=classifier)
    gen, train = r["generated"], r["train"]
    rows = min(rows, n)
    blank = torch.full_like(gen[:1], 255)
    tiles = []
    for i in range(rows):
        tiles += [gen[i : i + 1], blank, train[r["pixel"][1][i]], blank, train[r["feature"][1][i]]]
    kf = r["feature"][1].shape[1]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.55 * rows + 1.2), gridspec_kw={"width_ratios": [2 + 2 * k, 6]})
    show(axes[0], grid(torch.cat(tiles), 3 + k + kf),
         f"generated | {k} nearest train (pixel L2) | {kf} nearest train ({r['feature_space'].split(' (')[0]})")
    ax = axes[1]
    g, t = r["pixel"][0][:, 0], r["pixel"][2]
    bins = torch.linspace(0, float(torch.cat([g, t]).max()) * 1.05, 40).numpy()
    ax.hist(t.numpy(), bins, alpha=0.6, density=True, label=f"test -> train ({len(t)})")
    ax.hist(g.numpy(), bins, alpha=0.6, density=True, label=f"generated -> train ({len(g)})")
    ratio = _ratio(g, t)
    ax.set_title(f"nearest-train distance (pixel L2); memorisation ratio {ratio:.2f}", fontsize=9)
    ax.set_xlabel("L2 distance in [0, 1] pixel units")
    ax.legend(fontsize=8)
    save_fig(fig, out / "neighbours.png")
    fg, ft = r["feature"][0][:, 0], r["feature"][2]
    result = {
        "analysis": "neighbours",
        "protocol": protocol(model, generated=n, seed=seed, k=k, train_images=r["train_size"],
                             test_queries=r["test_queries"], pixel_space="uint8 at the model resolution, /255, L2",
                             feature_space=r["feature_space"], feature_pool=r["feature_pool"],
                             ratio="median nearest-train distance of generated / of held-out test images"),
        "memorisation_ratio": ratio,
        "memorisation_ratio_features": _ratio(fg, ft),
        "pixel": {"gen_median": round(float(g.median()), 4), "test_median": round(float(t.median()), 4),
                  "gen_min": round(float(g.min()), 4), "test_min": round(float(t.min()), 4),
                  # near-copies: samples closer to a training image than 99% of unseen test images are
                  "near_copies": int((g < t.quantile(0.01)).sum())},
        "features": {"gen_median": round(float(fg.median()), 4), "test_median": round(float(ft.median()), 4)},
        "files": ["neighbours.png"],
    }
    write_json(out, "neighbours", result)
    return result
