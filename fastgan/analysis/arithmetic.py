"""Vector arithmetic on z (DCGAN §6.3): ``pick`` writes a numbered sheet of samples; ``arithmetic``
takes concepts A, B, C as lists of sheet indices, averages each concept's latents (single samples
are unstable, the paper averages three), and shows G(mean A - mean B + mean C) with 8 neighbours
(uniform noise of +-0.25 on z) beside the same arithmetic on pixels, which only superimposes images."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from fastgan.analysis.common import (
    AnalysisError,
    Model,
    grid,
    latents,
    protocol,
    pyplot,
    run_g,
    save_fig,
    show,
    to_uint8,
    write_json,
)

NOISE = 0.25  # half-width of the uniform noise on the result's latent (DCGAN paper Fig. 7)


def sheet(model: Model, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The pick sheet's latents and labels: deterministic in (n, seed), so indices stay valid."""
    z = latents(n, model.z_dim, seed)
    y = torch.arange(n) % model.num_classes if model.num_classes else None
    return z, y


def pick(model: Model, out: Path, n: int = 64, seed: int = 0) -> dict[str, Any]:
    if n < 1:
        raise AnalysisError(f"-n must be at least 1, got {n}")
    z, y = sheet(model, n, seed)
    imgs = to_uint8(run_g(model, z, y))
    cols = min(n, 10 if model.num_classes == 10 else 8)
    g = grid(imgs, cols, pad=12)
    plt = pyplot()
    h, w = imgs.shape[2], imgs.shape[3]
    fig, ax = plt.subplots(figsize=(cols * 0.9, (-(-n // cols)) * 0.95))
    show(ax, g, f"pick sheet: seed {seed}" + (" (label = column)" if model.num_classes == cols else ""))
    for i in range(n):
        r, c = divmod(i, cols)
        ax.text(12 + c * (w + 12), 12 + r * (h + 12) - 1, str(i), fontsize=7, color="crimson", va="bottom")
    save_fig(fig, out / "pick.png", dpi=110)
    result = {"analysis": "pick", "protocol": protocol(model, n=n, seed=seed),
              "labels": None if y is None else y.tolist(), "files": ["pick.png"],
              "usage": "fastgan analyze arithmetic CKPT --a I,J --b K --c L (indices from pick.png)"}
    write_json(out, "pick", result)
    return result


def combine(model: Model, a: list[int], b: list[int], c: list[int], n: int = 64, seed: int = 0,
            label: int | None = None, noise_seed: int = 0) -> dict[str, Any]:
    """Y = mean z(A) - mean z(B) + mean z(C) on the sheet (n, seed); images of Y, its 8 noisy
    neighbours, each concept's mean-z image, and the pixel-space counterpart."""
    for name, idx in (("--a", a), ("--b", b), ("--c", c)):
        if not idx:
            raise AnalysisError(f"{name} is empty: give sheet indices like 3,17,40 (see `fastgan analyze pick`)")
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise AnalysisError(f"index {bad[0]} in {name} is outside the pick sheet (0..{n - 1}): use indices "
                                f"printed on pick.png (or pass the sheet's -n and --seed)")
    z, y = sheet(model, n, seed)
    K = model.num_classes
    if K:
        if label is None:  # C carries what is added back: its most common label
            label = int(torch.mode(y[c]).values)
        if not 0 <= label < K:
            raise AnalysisError(f"--label {label} is out of range: this model has classes 0..{K - 1}")
    elif label is not None:
        raise AnalysisError("--label given but this generator is unconditional: drop --label")
    means = {k: z[idx].mean(0) for k, idx in (("A", a), ("B", b), ("C", c))}
    Y = means["A"] - means["B"] + means["C"]
    gen = torch.Generator().manual_seed(noise_seed)
    noisy = Y + (torch.rand(8, model.z_dim, generator=gen) * 2 - 1) * NOISE
    zz = torch.cat([Y[None], noisy, torch.stack([means["A"], means["B"], means["C"]])])
    # the result and its neighbours carry ``label``; each concept's mean is drawn with its own label
    yy = torch.cat([torch.full((9,), label), torch.stack([torch.mode(y[i]).values for i in (a, b, c)])]) if K else None
    imgs = run_g(model, zz, yy)
    sheet_imgs = run_g(model, z, y)
    pix = {k: sheet_imgs[idx].mean(0) for k, idx in (("A", a), ("B", b), ("C", c))}
    pixel_result = (pix["A"] - pix["B"] + pix["C"]).clamp(-1, 1)
    return {"result": imgs[0], "neighbours": imgs[1:9], "concepts": imgs[9:], "label": label,
            "pixel_concepts": torch.stack([pix["A"], pix["B"], pix["C"]]), "pixel_result": pixel_result,
            "z_result": Y, "exemplars": {k: to_uint8(sheet_imgs[idx]) for k, idx in (("A", a), ("B", b), ("C", c))}}


def _sheet_protocol(path: Path, model: Model | None = None) -> dict[str, int]:
    """The n and seed of the contact sheet `analyze pick` drew (its pick.json), or 64 and 0 without one. A sheet
    drawn by another model (another checkpoint, z size or label count) is refused: its indices mean nothing here."""
    if not path.is_file():
        return {"n": 64, "seed": 0}
    try:
        proto = json.loads(path.read_bytes().decode("utf-8", errors="replace"))["protocol"]
        n, seed = proto["n"], proto["seed"]
        if not (isinstance(n, int) and n > 0 and isinstance(seed, int)) or not isinstance(proto, dict):
            raise ValueError
        drawn_by = proto.get("model")
        if drawn_by is not None and not isinstance(drawn_by, str):
            raise ValueError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise AnalysisError(f"{path} is not a readable contact-sheet record (cut or edited): run "
                           "`fastgan analyze pick CKPT` again, or pass -n and --sheet-seed") from None
    if model is not None:
        other = [f"{k} {proto[k]} vs {v}" for k, v in (("z_dim", model.z_dim), ("num_classes", model.num_classes))
                 if k in proto and proto[k] != v]
        if drawn_by is not None and os.path.realpath(drawn_by) != os.path.realpath(model.source):
            other.insert(0, f"model {drawn_by} vs {model.source}")
        if other:
            raise AnalysisError(f"{path} records a sheet drawn by another model ({'; '.join(other)}): its indices "
                                f"do not pick the same images; run `fastgan analyze pick {model.source} --out "
                                f"{path.parent}` first, or pass -n and --sheet-seed")
    return {"n": n, "seed": seed}


def run(model: Model, out: Path, a: list[int], b: list[int], c: list[int], n: int | None = None,
        seed: int | None = None, label: int | None = None) -> dict[str, Any]:
    """``n``, ``seed``: the sheet's; by default those of the pick.json beside ``out``, else 64 and 0."""
    sheet_json = out.parent / "pick" / "pick.json"
    saved = _sheet_protocol(sheet_json, model) if n is None or seed is None else {}
    n = saved["n"] if n is None else n
    seed = saved["seed"] if seed is None else seed
    r = combine(model, a, b, c, n, seed, label)
    plt = pyplot()
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1, 1, 1, 1, 2.6]})
    for j, (name, sign) in enumerate((("A", ""), ("B", "- "), ("C", "+ "))):
        show(axes[0, j], _img(u(r["concepts"][j])), f"{sign}mean z({name})")
        show(axes[1, j], _img(u(r["pixel_concepts"][j])), f"{sign}mean pixels({name})")
    show(axes[0, 3], _img(u(r["result"])), "= G(Y)" if r["label"] is None else f"= G(Y), label {r['label']}")
    show(axes[1, 3], _img(u(r["pixel_result"])), "= pixel A-B+C")
    nine = torch.cat([r["neighbours"][:4], r["result"][None], r["neighbours"][4:]])
    show(axes[0, 4], grid(u(nine), 3), f"Y (centre) and Y + U(±{NOISE}) noise")
    ex = torch.cat([r["exemplars"][k] for k in "ABC"])
    show(axes[1, 4], grid(ex, max(len(v) for v in r["exemplars"].values()) if len(ex) > 9 else len(ex)),
         "  ".join(f"{k}={','.join(map(str, v))}" for k, v in (("A", a), ("B", b), ("C", c))))
    save_fig(fig, out / "arithmetic.png")
    result = {"analysis": "arithmetic",
              "protocol": protocol(model, sheet_n=n, sheet_seed=seed, a=a, b=b, c=c, label=r["label"],
                                   noise=f"uniform ±{NOISE} on each z coordinate, 8 draws (seed 0)",
                                   formula="Y = mean z(A) - mean z(B) + mean z(C)"),
              "norm_Y": round(float(r["z_result"].norm()), 4), "sqrt_d": model.z_dim**0.5,
              "files": ["arithmetic.png"]}
    write_json(out, "arithmetic", result)
    return result


def u(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] image or stack -> uint8 stack."""
    return to_uint8(x if x.dim() == 4 else x[None])


def _img(x: torch.Tensor):
    """uint8 (1, C, H, W) -> what imshow takes."""
    return x[0, 0].numpy() if x.shape[1] == 1 else x[0].permute(1, 2, 0).numpy()
