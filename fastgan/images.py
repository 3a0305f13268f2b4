"""Image helpers: [-1, 1] tensors to uint8, grids, PNG and npz output."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from fastgan.engine.runfolder import write_atomic


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the uint8 levels a PNG stores, on x's device and in x's layout: the one float->uint8 rule.

    fp32 whatever x's dtype (bf16 would merge neighbouring levels); round half to even, like numpy, so the
    numpy twin in fastgan/export/runtime.py (which must not import torch) matches it bit for bit.
    Plain out-of-place ops, so the ONNX export traces it into the graph's uint8 output.
    """
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C) numpy, for PNG and npz files."""
    return quantize(x.detach()).cpu().permute(0, 2, 3, 1).numpy()


def grid_width(n: int) -> int:
    """Columns for n images: a divisor of n from ceil(sqrt(n)) up to twice that, so every row is full (64 -> 8,
    70 -> 10, 1000 -> 40); else ceil(sqrt(n)) and a ragged last row (n prime, say)."""
    side = max(1, math.ceil(math.sqrt(n)))
    return next((d for d in range(side, 2 * side + 1) if n % d == 0), side)


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (H', W', C) image, ``nrow`` images per row (default: ``grid_width(n)``).
    With ``nrow`` given, a last row it does not fill is left black."""
    n, h, w, c = images.shape
    nrow = nrow or grid_width(n)
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = images[i]
    return grid


def save_png(grid: np.ndarray, path: Path) -> None:
    from PIL import Image

    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_atomic(path, buf.getbuffer())  # a full disk leaves the previous file, never half a PNG


def save_grid(x: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    save_png(make_grid(to_uint8(x), nrow), path)


def save_npz(x: torch.Tensor, labels: torch.Tensor | None, path: Path) -> None:
    arrays = {"images": to_uint8(x)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(path, buf.getbuffer())


def plot_losses(metrics_path: Path, out: Path) -> None:
    """Loss curves (and D(x), D(G(z))) from metrics.jsonl to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastgan.engine.runfolder import read_jsonl

    keys = ("step", "d_loss", "g_loss", "d_real", "d_fake")  # a cut or hand-edited line is left out, not fatal
    rows = [r for r in read_jsonl(metrics_path)[0] if all(isinstance(r.get(k), (int, float)) for k in keys)]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("d_loss", "g_loss", "gp"):
        if key in rows[0]:
            a.plot(steps, [r.get(key, float("nan")) for r in rows], label=key)
    a.set_xlabel("step")
    a.set_title("losses")
    a.legend()
    for key, name in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        b.plot(steps, [r[key] for r in rows], label=name)
    b.set_xlabel("step")
    b.set_title("discriminator outputs")
    b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(out, buf.getbuffer())
