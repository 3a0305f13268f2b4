"""The randomness of a batch (``Draw``) and what turns uint8 rows into training pixels: the leaf both the
torch loaders (``fastgan.data.loader``) and the DALI loader (``fastgan.data.dali``) build on."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from fastgan.errors import DataError


class Draw(NamedTuple):
    """The randomness of one batch."""

    idx: torch.Tensor  # int64 (B,): dataset rows, uniform with replacement
    flip: torch.Tensor | None  # bool (B,): mirror left-right (None: hflip off)
    shift: torch.Tensor | None  # int64 (2, B): (dy, dx) crop offsets in [0, 2 * pad] (None: crop_pad off)

    def to(self, device: torch.device) -> Draw:
        # non-blocking only towards the GPU: a non-blocking copy to the host may be read before it lands
        return Draw(*(None if t is None else t.to(device, non_blocking=device.type == "cuda") for t in self))


def draw(n: int, batch_size: int, hflip: bool, pad: int, device: torch.device) -> Draw:
    """Indices and augmentation from torch's default generator of ``device`` (checkpointed with the run)."""
    idx = torch.randint(n, (batch_size,), device=device)
    flip = torch.rand(batch_size, device=device) < 0.5 if hflip else None
    shift = torch.randint(2 * pad + 1, (2, batch_size), device=device) if pad else None
    return Draw(idx, flip, shift)


def _reflect(k: torch.Tensor, n: int) -> torch.Tensor:
    """Fold indices in [-(n-1), 2(n-1)] back into [0, n) as reflect padding does (edge pixel not repeated)."""
    return (n - 1) - ((n - 1) - k.abs()).abs()


def augment(x: torch.Tensor, d: Draw, pad: int) -> torch.Tensor:
    """Mirror (where ``d.flip``), then crop back to size from the reflect-padded image at ``d.shift``.

    One gather on the device, any dtype; no host work, so it can be captured in a CUDA graph.
    """
    if d.flip is None and d.shift is None:
        return x
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(b, h)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if d.shift is not None:
        rows = _reflect(rows + (d.shift[0, :, None] - pad), h)
        cols = _reflect(cols + (d.shift[1, :, None] - pad), w)
    if d.flip is not None:
        cols = torch.where(d.flip[:, None], (w - 1) - cols, cols)
    where = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, where).view(b, c, h, w)


def to_unit_range(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 0..255 -> float in [-1, 1]."""
    return x.to(dtype).mul_(2.0 / 255.0).sub_(1.0)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 stack once (bilinear, antialiased when shrinking), staying uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8, device=images.device)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float()
        shrink = x.shape[-1] > size
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def check_pad(pad: int, resolution: int) -> None:
    if not 0 <= pad < resolution:
        raise DataError(f"data.crop_pad={pad} must be below the resolution ({resolution} px): use a few px, e.g. 4")
