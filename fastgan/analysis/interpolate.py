"""Latent interpolation (DCGAN §6.1, seeds 003/004): walks between latents, linear and spherical,
and for conditional models between labels with z fixed.

Slerp is the default for Gaussian z: a linear midpoint of two independent N(0, I) latents has norm
about sqrt(d/2), far inside the shell of radius sqrt(d) where G saw its training latents; slerp
keeps the norm (White 2016, "Sampling generative networks")."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from fastgan.analysis.common import (
    AnalysisError,
    Model,
    g_soft,
    grid,
    latents,
    protocol,
    pyplot,
    run_g,
    save_fig,
    seed_latents,
    show,
    to_uint8,
    write_json,
)
from fastgan.engine import runfolder


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, d) endpoints and (T,) fractions -> (B, T, d)."""
    t = t.to(a.dtype)[None, :, None]
    return a[:, None] * (1 - t) + b[:, None] * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation on the great circle through a and b, the norm lerped along it
    (exactly a at t=0 and b at t=1). Falls back to lerp where a and b are (anti)parallel."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    cos = ((a / na) * (b / nb)).sum(1).clamp(-1, 1)
    omega = torch.arccos(cos)[:, None, None]
    so = torch.sin(omega)
    t = t.to(a.dtype)[None, :, None]
    safe = so.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / torch.where(safe, so, 1), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / torch.where(safe, so, 1), t)
    # the unit-direction slerp, rescaled by the lerped norm (equal norms: plain slerp)
    u = wa * (a / na)[:, None] + wb * (b / nb)[:, None]
    u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return u * (na[:, None] * (1 - t) + nb[:, None] * t)


def interpolate(model: Model, k: int = 6, steps: int = 10, seeds: list[int] | None = None, seed: int = 0,
                labels: tuple[int, int] | None = None) -> dict[str, Any]:
    """Images (uint8, rows x steps) for each walk and the latent norms along them.

    Rows join latent i to latent i+1 (the last to the first). Conditional models keep each row's
    label fixed (row index mod classes) for the latent walks, and add a label walk: z fixed per row,
    the one-hot mixed from ``labels[0]`` to ``labels[1]`` (default: class r to class r+1 on row r)."""
    z = seed_latents(seeds, model.z_dim) if seeds else latents(k, model.z_dim, seed)
    if len(z) < 2:
        raise AnalysisError("interpolation needs at least 2 latents: give --k 2 or more, or two --seeds")
    if steps < 2:
        raise AnalysisError(f"--steps must be at least 2 (both endpoints), got {steps}")
    K = model.num_classes
    if labels is not None and K == 0:
        raise AnalysisError("--labels asks for a label interpolation but this generator is unconditional "
                            "(no labels): drop --labels")
    n = len(z)
    a, b = z, z.roll(-1, 0)
    t = torch.linspace(0, 1, steps)
    y_rows = torch.arange(n) % K if K else None
    y = y_rows.repeat_interleave(steps) if K else None
    out: dict[str, Any] = {"t": t.tolist(), "z": z, "labels_per_row": None if y_rows is None else y_rows.tolist()}
    for name, fn in (("slerp", slerp), ("linear", lerp)):
        zz = fn(a, b, t)
        out[name] = to_uint8(run_g(model, zz.reshape(-1, model.z_dim), y))
        out[f"{name}_norms"] = zz.norm(dim=2)  # (rows, steps)
    if K:
        if not hasattr(model.G, "net"):
            out["label_walk_skipped"] = "an ONNX generator takes integer labels only: label mixing needs the checkpoint"
        else:
            la = torch.full((n,), labels[0]) if labels else torch.arange(n) % K
            lb = torch.full((n,), labels[1]) if labels else (torch.arange(n) + 1) % K
            w = lerp(torch.eye(K)[la], torch.eye(K)[lb], t).reshape(-1, K)
            zz = z.repeat_interleave(steps, 0)
            with torch.no_grad():
                imgs = torch.cat([g_soft(model.G, zz[i : i + 256].to(model.device), w[i : i + 256].to(model.device))
                                  .float().cpu() for i in range(0, len(zz), 256)])
            out["labels"] = to_uint8(imgs)
            out["label_pairs"] = list(zip(la.tolist(), lb.tolist()))
    return out


def write_gif(frames: list, path: Path, ms: int = 120) -> Path:
    """Frames (uint8 H x W [x 3]) as a looping GIF that plays forth and back (Pillow)."""
    from PIL import Image

    seq = frames + frames[-2:0:-1]
    imgs = [Image.fromarray(f).resize((f.shape[1] * 3, f.shape[0] * 3), Image.NEAREST) for f in seq]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=ms, loop=0)
    runfolder.write_atomic(Path(path), buf.getbuffer())
    return path


def run(model: Model, out: Path, k: int = 6, steps: int = 10, seeds: list[int] | None = None, seed: int = 0,
        labels: tuple[int, int] | None = None) -> dict[str, Any]:
    r = interpolate(model, k, steps, seeds, seed, labels)
    d = model.z_dim
    panels = [("slerp", "spherical (slerp): z_i -> z_i+1"), ("linear", "linear: z_i -> z_i+1")]
    if "labels" in r:
        panels.append(("labels", "labels mixed, z fixed: " + ", ".join(f"{p}->{q}" for p, q in r["label_pairs"][:4])
                       + ("..." if len(r["label_pairs"]) > 4 else "")))
    plt = pyplot()
    w = min(12, steps * 0.9)
    fig, axes = plt.subplots(len(panels), 1, figsize=(w, len(panels) * (w * len(r["z"]) / steps + 0.35)), squeeze=False)
    axes = axes[:, 0]
    for ax, (key, title) in zip(axes, panels):
        show(ax, grid(r[key], steps), title)
    save_fig(fig, out / "interpolate.png")
    n = len(r["z"])
    frames = [grid(r["slerp"].view(n, steps, *r["slerp"].shape[1:])[:, j], n) for j in range(steps)]
    write_gif(frames, out / "interpolate.gif")
    mid = steps // 2
    result = {
        "analysis": "interpolate",
        "protocol": protocol(model, latents=n, steps=steps, seeds=seeds, seed=None if seeds else seed,
                             rows="latent i -> latent i+1 (last -> first)", labels_per_row=r["labels_per_row"],
                             label_walk=r.get("label_pairs"), label_walk_skipped=r.get("label_walk_skipped")),
        "sqrt_d": d**0.5,
        # the norm argument for slerp in numbers: a linear walk sags towards the origin mid-way
        "mid_norm_slerp": round(float(r["slerp_norms"][:, mid].mean()), 4),
        "mid_norm_linear": round(float(r["linear_norms"][:, mid].mean()), 4),
        "files": ["interpolate.png", "interpolate.gif"],
    }
    write_json(out, "interpolate", result)
    return result
