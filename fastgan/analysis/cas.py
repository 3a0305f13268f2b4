"""Classification accuracy score (seeds 002, 004; Ravuri & Vinyals 2019): train the domain
classifier on generated images labelled by their conditioning, on real images, and on mixes,
and test every one on the real test split. A generator whose class-conditional samples carry the
class gives a classifier that works on real data; mixing shows whether they add to real data.

Every cell trains for the same number of steps, so a small set is not also under-trained."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fastgan.analysis.common import (
    AnalysisError,
    Model,
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
from fastgan.data.augment import resize_uint8

# Seed 002's grid is real {0, 600, 6000, 60000} x generated {0, 6000, 60000} MNIST images
# (--real 0,1%,10%,100% --gen 0,10%,100%); the default is a 5-cell corner of it that a CPU runs
# in about a minute on digits.
DEFAULT_REAL = "0,10%,100%"
DEFAULT_GEN = "0,100%"
BATCH = 64


def parse_sizes(text: str, total: int, what: str, cap: int | None) -> list[int]:
    """'0,1%,10%,100%' or '0,600,6000': shares of ``total`` or counts; a count above ``cap`` is an error."""
    out = []
    for v in (s.strip() for s in text.split(",") if s.strip()):
        try:
            n = round(float(v[:-1]) / 100 * total) if v.endswith("%") else int(v)
        except (ValueError, OverflowError):  # 'x', 'nan%', 'inf%'
            raise AnalysisError(f"{what} takes counts or shares like 0,600,6000 or 0,10%,100%, got '{v}'") from None
        if n < 0:
            raise AnalysisError(f"{what} {v} is negative: give image counts >= 0 or shares like 10%")
        if cap is not None and n > cap:
            raise AnalysisError(f"{what} asks for {n} images but the training split has {cap}: use at most {cap} "
                                "(or shares like 100%)")
        out.append(n)
    if not out:
        raise AnalysisError(f"{what} is empty: give sizes like {DEFAULT_REAL}")
    return sorted(set(out))


def fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, seed: int, device: torch.device,
        batch: int = BATCH, lr: float = 2e-3):
    """The domain classifier (fastgan.metrics.classifier) trained ``steps`` Adam steps on uint8 28 px images."""
    from fastgan.metrics.classifier import DomainClassifier

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(x.shape[1], num_classes).to(device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        order = torch.empty(0, dtype=torch.long)
        model.train()
        for _ in range(steps):
            if len(order) < min(batch, len(x)):
                order = torch.cat([order, torch.randperm(len(x), generator=g)])
            idx, order = order[:batch], order[batch:]
            loss = F.cross_entropy(model(to_unit(x[idx]).to(device), logits=True)[1], y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model, x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(to_unit(x[i : i + batch]).to(device), logits=True)[1].argmax(1).cpu()
                      for i in range(0, len(x), batch)])


def analyse(model: Model, real: list[int], gen: list[int], seeds: int = 2, steps: int = 200, seed: int = 0,
            quiet: bool = False) -> dict[str, Any]:
    cfg = model.require_checkpoint("cas")
    K = model.num_classes
    if K == 0:
        raise AnalysisError("cas needs a conditional generator (labels for its samples): this one is unconditional; "
                            "train a conditional preset such as mnist-cdcgan")
    from fastgan.metrics.classifier import RESOLUTION

    sp = real_splits(cfg)
    xr, yr = resize_uint8(sp.train.images, RESOLUTION), sp.train.labels
    xt, yt = resize_uint8(sp.test.images, RESOLUTION), sp.test.labels
    ng = max(gen)
    yg = torch.arange(ng) % K
    xg = resize_uint8(to_uint8(run_g(model, latents(ng, model.z_dim, seed + 1), yg)), RESOLUTION) if ng else xr[:0]
    cells = [(r, g) for r in real for g in gen if r + g > 0]
    acc = np.full((len(real), len(gen), seeds), np.nan)
    per_class: dict[str, list[list[float]]] = {}
    bar = tqdm(total=len(cells) * seeds, desc="cas", unit="classifier", file=sys.stderr, disable=quiet,
               dynamic_ncols=True)
    with bar:
        for s in range(seeds):
            g = torch.Generator().manual_seed(seed + 1000 * s)
            pr, pg = torch.randperm(len(xr), generator=g), torch.randperm(ng, generator=g)
            for r, gn in cells:
                x = torch.cat([xr[pr[:r]], xg[pg[:gn]]])
                y = torch.cat([yr[pr[:r]], yg[pg[:gn]]])
                pred = predict(fit(x, y, K, steps, seed + s, model.device), xt, model.device)
                acc[real.index(r), gen.index(gn), s] = float((pred == yt).float().mean())
                pc = [float((pred[yt == c] == c).float().mean()) for c in range(K)]
                per_class.setdefault(f"{r}+{gn}", []).append(pc)
                bar.update(1)
    return {"real": real, "gen": gen, "acc": acc, "per_class": per_class, "train_size": len(xr),
            "test_size": len(xt), "classes": K}


def run(model: Model, out: Path, real_text: str = DEFAULT_REAL, gen_text: str = DEFAULT_GEN, seeds: int = 2,
        steps: int = 200, seed: int = 0) -> dict[str, Any]:
    cfg = model.require_checkpoint("cas")
    if seeds < 1 or steps < 1:
        raise AnalysisError("--seeds and --steps must be at least 1")
    n_train = len(real_splits(cfg).train)
    real = parse_sizes(real_text, n_train, "--real", n_train)
    gen = parse_sizes(gen_text, n_train, "--gen", None)
    if max(real) + max(gen) == 0:
        raise AnalysisError(f"--real {real_text} --gen {gen_text} trains no classifier (every cell has 0 images): "
                            f"give a size above 0, e.g. --real {DEFAULT_REAL}")
    r = analyse(model, real, gen, seeds, steps, seed)
    with warnings.catch_warnings():  # the (0 real, 0 generated) cell is empty by design
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(r["acc"], 2), np.nanstd(r["acc"], 2)
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.3]})
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e8e8e8")  # the empty (0 real, 0 generated) cell
    im = a.imshow(np.ma.masked_invalid(mean), cmap=cmap, vmin=0, vmax=1)
    for i in range(len(real)):
        for j in range(len(gen)):
            if not np.isnan(mean[i, j]):
                a.text(j, i, f"{mean[i, j]:.3f}\n±{std[i, j]:.3f}", ha="center", va="center", fontsize=8,
                       color="white" if mean[i, j] < 0.6 else "black")
    a.set_xticks(range(len(gen)), [str(g) for g in gen])
    a.set_yticks(range(len(real)), [str(x) for x in real])
    a.set_xlabel("generated training images")
    a.set_ylabel("real training images")
    a.set_title(f"real-test accuracy (mean ± std, {seeds} seeds)", fontsize=10)
    fig.colorbar(im, ax=a, fraction=0.046)
    best = max(r["per_class"], key=lambda k: np.mean(r["per_class"][k]))
    show_keys = dict.fromkeys([f"{max(real)}+0", f"0+{max(gen)}", best])
    w = 0.8 / len(show_keys)
    for i, key in enumerate(k for k in show_keys if k in r["per_class"]):
        real_n, gen_n = key.split("+")
        vals = np.mean(r["per_class"][key], 0)
        b.bar(np.arange(r["classes"]) + i * w, vals, w, label=f"{real_n} real + {gen_n} generated")
    b.set_xticks(np.arange(r["classes"]) + 0.4 - w / 2, [str(c) for c in range(r["classes"])])
    b.set_ylim(0, 1.05)
    b.set_xlabel("class")
    b.set_title("per-class real-test accuracy", fontsize=10)
    b.legend(fontsize=8, loc="lower center", framealpha=0.9)
    save_fig(fig, out / "cas.png")
    table = [{"real": x, "generated": g, "mean": round(float(mean[i, j]), 4), "std": round(float(std[i, j]), 4),
              "runs": [round(float(v), 4) for v in r["acc"][i, j]]}
             for i, x in enumerate(real) for j, g in enumerate(gen) if not np.isnan(mean[i, j])]
    result = {"analysis": "cas",
              "protocol": protocol(model, seeds=seeds, steps=steps, batch=BATCH, seed=seed, real=real, generated=gen,
                                   train_split=r["train_size"], test_split=r["test_size"],
                                   classifier="fastgan domain classifier (2 conv + 128-d), Adam 2e-3 cosine, 28 px",
                                   generated_labels="the conditioning label, classes in turn"),
              "table": table,
              "per_class": {k: [round(float(v), 4) for v in np.mean(v, 0)] for k, v in r["per_class"].items()},
              "real_only": next((t for t in table if t["real"] == max(real) and t["generated"] == 0), None),
              "generated_only": next((t for t in table if t["real"] == 0 and t["generated"] == max(gen)), None),
              "best": max(table, key=lambda t: t["mean"]), "files": ["cas.png"]}
    write_json(out, "cas", result)
    return result
