"""Loaders turn a uint8 dataset into training batches in [-1, 1] on the device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastgan.config import DataConfig
from fastgan.data.base import ImageDataset
from fastgan.errors import DataError


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


class DeviceLoader:
    """The whole uint8 dataset resident on the device; batches drawn by index there.

    Sampling is uniform with replacement from torch's default generator of the
    device, so a batch needs no host work and no sync (it can run inside a captured
    CUDA graph) and the checkpointed RNG state reproduces the batch sequence.
    """

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device, hflip: bool = False) -> None:
        self.device = device
        self.images = resize_uint8(dataset.images.to(device), resolution).contiguous()
        self.labels = dataset.labels.to(device) if dataset.labels is not None else None
        self.hflip = hflip
        self.n = len(self.images)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(self.n, (batch_size,), device=self.device)
        x = to_unit_range(self.images[idx])
        if self.hflip:
            flip = torch.rand(batch_size, 1, 1, 1, device=self.device) < 0.5
            x = torch.where(flip, x.flip(-1), x)
        return x, (self.labels[idx] if self.labels is not None else None)


def make_loader(dataset: ImageDataset, cfg: DataConfig, resolution: int, device: torch.device) -> DeviceLoader:
    if cfg.loader not in ("auto", "device"):
        raise DataError(f"loader '{cfg.loader}' is not available in this build: use auto or device")
    return DeviceLoader(dataset, resolution, device, cfg.hflip)
