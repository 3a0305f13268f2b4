"""Loaders turn a uint8 dataset into training batches in [-1, 1] on the device.

Every loader answers ``batch(B) -> (x, labels | None)``. A batch is decided by a ``Draw`` (row indices, flips,
crop offsets) and made by ``batch_at(draw)``; the loaders share ``augment``, so for the same Draw the device and
stream loaders give bit-identical images. ``device`` keeps the whole uint8 set in device memory and draws on the
device (no host work, no sync: it can run inside a captured CUDA graph); ``stream`` reads rows from a host array or
memory map in DataLoader workers; ``dali`` (fastgan/data/dali.py) decodes the original files with NVIDIA DALI.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import torch

from fastgan.config import DataConfig
from fastgan.data.augment import Draw, augment, check_pad, draw, resize_uint8, to_unit_range
from fastgan.data.base import ImageDataset
from fastgan.errors import DataError
from fastgan.shard import WHOLE, Shard

__all__ = ["DeviceLoader", "Draw", "StreamLoader", "augment", "choose_loader", "draw", "make_loader", "resize_uint8",
           "to_unit_range"]


class DeviceLoader:
    """The whole uint8 dataset resident on the device; batches drawn by index there.

    Sampling is uniform with replacement from torch's default generator of the device, so a batch needs no host
    work and no sync (it can run inside a captured CUDA graph) and the checkpointed RNG state reproduces the batch
    sequence. ``batch(B)`` draws the global batch B and returns this process's ``shard`` of it.
    """

    kind = "device"

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device, hflip: bool = False,
                 crop_pad: int = 0, shard: Shard = WHOLE) -> None:
        check_pad(crop_pad, resolution)
        self.device, self.shard = device, shard
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
        return self.batch_at(self.shard.take_draw(self.draw(batch_size)))


class _Rows(torch.utils.data.Dataset):
    """Item = one batch: the rows a Draw names, read from the host array (RAM or a memory map)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None) -> None:
        self.images, self.labels = images, labels

    def __getitem__(self, d: Draw) -> tuple[torch.Tensor, torch.Tensor | None, Draw]:
        idx = d.idx.numpy()
        y = None if self.labels is None else torch.from_numpy(self.labels[idx])
        return torch.from_numpy(self.images[idx]), y, d


class _Draws(torch.utils.data.Sampler):
    """Endless Draws from torch's default CPU generator, taken in the training process when the DataLoader asks
    (the global batch's, sliced to this process's shard: only its rows are read)."""

    def __init__(self, n: int, batch_size: int, hflip: bool, pad: int, shard: Shard = WHOLE) -> None:
        self.args = (n, batch_size, hflip, pad, torch.device("cpu"))
        self.shard = shard

    def __iter__(self):
        while True:
            yield self.shard.take_draw(draw(*self.args))


class StreamLoader:
    """A torch DataLoader over the host copy (workers, pinned memory, non-blocking copies), augmented on the device.

    Draws come from the default CPU generator. With ``workers=0`` they are taken at each ``batch`` call, so a
    resumed run repeats the uninterrupted one exactly; with workers the DataLoader takes them a few batches ahead,
    so runs stay reproducible from the seed but a resume starts a fresh (equally random) stream.
    """

    kind = "stream"

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device, hflip: bool = False,
                 crop_pad: int = 0, workers: int = 2, shard: Shard = WHOLE) -> None:
        check_pad(crop_pad, resolution)
        self.device, self.hflip, self.pad, self.workers, self.shard = device, hflip, crop_pad, workers, shard
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
            self.rows, batch_size=None, sampler=_Draws(self.n, batch_size, self.hflip, self.pad, self.shard),
            num_workers=w,
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


def make_loader(dataset: ImageDataset, cfg: DataConfig, resolution: int, device: torch.device,
                shard: Shard = WHOLE):
    """``shard``: this process's slice of each global batch (``fastgan.engine.distributed``)."""
    kind = choose_loader(dataset, resolution, device, cfg.device_fraction) if cfg.loader == "auto" else cfg.loader
    if kind == "device":
        return DeviceLoader(dataset, resolution, device, cfg.hflip, cfg.crop_pad, shard)
    if kind == "stream":
        return StreamLoader(dataset, resolution, device, cfg.hflip, cfg.crop_pad, cfg.loader_workers, shard)
    if kind == "dali" and shard.world > 1:
        raise DataError("data.loader=dali does not split batches across processes yet: use "
                        "--set data.loader=device or stream with torchrun")
    if kind == "dali":
        from fastgan.data.dali import DaliLoader

        return DaliLoader(dataset, resolution, device, cfg.hflip, cfg.crop_pad)
    raise DataError(f"unknown loader '{kind}': use auto, device, stream or dali")
