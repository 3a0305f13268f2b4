"""Loaders turn a uint8 dataset into training batches in [-1, 1] on the device.

Every loader answers ``batch(B) -> (x, labels | None)``. A batch is decided by a ``Draw`` (row indices, flips,
crop offsets) and made by ``batch_at(draw)``; the loaders share ``augment``, so for the same Draw the device and
stream loaders give bit-identical images. ``device`` keeps the whole uint8 set in device memory and draws on the
device (no host work, no sync: it can run inside a captured CUDA graph); ``stream`` reads rows from a host array or
memory map in DataLoader workers; ``dali`` (fastgan/data/dali.py) decodes the original files with NVIDIA DALI.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fastgan.config import DataConfig
from fastgan.data.base import ImageDataset
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


def _check_pad(pad: int, resolution: int) -> None:
    if not 0 <= pad < resolution:
        raise DataError(f"data.crop_pad={pad} must be below the resolution ({resolution} px): use a few px, e.g. 4")


class DeviceLoader:
    """The whole uint8 dataset resident on the device; batches drawn by index there.

    Sampling is uniform with replacement from torch's default generator of the device, so a batch needs no host
    work and no sync (it can run inside a captured CUDA graph) and the checkpointed RNG state reproduces the batch
    sequence.
    """

    kind = "device"

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device, hflip: bool = False,
                 crop_pad: int = 0) -> None:
        _check_pad(crop_pad, resolution)
        self.device = device
        self.images = resize_uint8(dataset.images.to(device), resolution).contiguous()
        self.labels = dataset.labels.to(device) if dataset.labels is not None else None
        self.hflip, self.pad = hflip, crop_pad
        self.n = len(self.images)

    def draw(self, batch_size: int) -> Draw:
        return draw(self.n, batch_size, self.hflip, self.pad, self.device)

    def batch_at(self, d: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = to_unit_range(augment(self.images[d.idx], d, self.pad))
        return x, (self.labels[d.idx] if self.labels is not None else None)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.batch_at(self.draw(batch_size))


class _Rows(torch.utils.data.Dataset):
    """Item = one batch: the rows a Draw names, read from the host array (RAM or a memory map)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None) -> None:
        self.images, self.labels = images, labels

    def __getitem__(self, d: Draw) -> tuple[torch.Tensor, torch.Tensor | None, Draw]:
        idx = d.idx.numpy()
        y = None if self.labels is None else torch.from_numpy(self.labels[idx])
        return torch.from_numpy(self.images[idx]), y, d


class _Draws(torch.utils.data.Sampler):
    """Endless Draws from torch's default CPU generator, taken in the training process when the DataLoader asks."""

    def __init__(self, n: int, batch_size: int, hflip: bool, pad: int) -> None:
        self.args = (n, batch_size, hflip, pad, torch.device("cpu"))

    def __iter__(self):
        while True:
            yield draw(*self.args)


class StreamLoader:
    """A torch DataLoader over the host copy (workers, pinned memory, non-blocking copies), augmented on the device.

    Draws come from the default CPU generator. With ``workers=0`` they are taken at each ``batch`` call, so a
    resumed run repeats the uninterrupted one exactly; with workers the DataLoader takes them a few batches ahead,
    so runs stay reproducible from the seed but a resume starts a fresh (equally random) stream.
    """

    kind = "stream"

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device, hflip: bool = False,
                 crop_pad: int = 0, workers: int = 2) -> None:
        _check_pad(crop_pad, resolution)
        self.device, self.hflip, self.pad, self.workers = device, hflip, crop_pad, workers
        self.images = resize_uint8(dataset.images.cpu(), resolution).numpy()  # a memory map stays one
        self.labels = None if dataset.labels is None else dataset.labels.cpu().numpy()
        self.n = len(self.images)
        self.rows = _Rows(self.images, self.labels)
        self._it, self._batch_size = None, 0

    def draw(self, batch_size: int) -> Draw:
        return draw(self.n, batch_size, self.hflip, self.pad, torch.device("cpu"))

    def _finish(self, x: torch.Tensor, y: torch.Tensor | None, d: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x.to(self.device, non_blocking=True)
        y = None if y is None else y.to(self.device, non_blocking=True)
        return to_unit_range(augment(x, d.to(self.device), self.pad)), y

    def batch_at(self, d: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._finish(*self.rows[d.to(torch.device("cpu"))])

    def _loader(self, batch_size: int) -> torch.utils.data.DataLoader:
        w = self.workers
        return torch.utils.data.DataLoader(
            self.rows, batch_size=None, sampler=_Draws(self.n, batch_size, self.hflip, self.pad), num_workers=w,
            pin_memory=self.device.type == "cuda", persistent_workers=w > 0, prefetch_factor=2 if w else None,
            generator=torch.Generator().manual_seed(0),  # its worker seeds must not consume the global generator
            # fork shares the memory map with the workers instead of pickling the array
            multiprocessing_context=("fork" if "fork" in mp.get_all_start_methods() else None) if w else None)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._it is None or batch_size != self._batch_size:
            self._it, self._batch_size = iter(self._loader(batch_size)), batch_size
        return self._finish(*next(self._it))


def _free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None  # unknown: assume it fits


def choose_loader(dataset: ImageDataset, resolution: int, device: torch.device, fraction: float) -> str:
    """``auto``: device when the uint8 set at the training resolution fits in ``fraction`` of free memory."""
    need = len(dataset) * dataset.channels * resolution * resolution
    free = _free_bytes(device)
    return "device" if free is None or need <= fraction * free else "stream"


def make_loader(dataset: ImageDataset, cfg: DataConfig, resolution: int, device: torch.device):
    kind = choose_loader(dataset, resolution, device, cfg.device_fraction) if cfg.loader == "auto" else cfg.loader
    if kind == "device":
        return DeviceLoader(dataset, resolution, device, cfg.hflip, cfg.crop_pad)
    if kind == "stream":
        return StreamLoader(dataset, resolution, device, cfg.hflip, cfg.crop_pad, cfg.loader_workers)
    if kind == "dali":
        from fastgan.data.dali import DaliLoader

        return DaliLoader(dataset, resolution, device, cfg.hflip, cfg.crop_pad)
    raise DataError(f"unknown loader '{kind}': use auto, device, stream or dali")
