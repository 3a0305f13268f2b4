"""The ``dali`` loader: NVIDIA DALI decodes the original JPEG/PNG/WebP files or LSUN LMDB bytes for every batch.

Per batch: the rows of a Draw are read as encoded bytes (Python), DALI decodes only the centre square (GPU
"mixed" decode on a GPU, CPU threads otherwise), resizes it (linear, antialiased), mirrors and normalises to
[-1, 1], and hands the batch to torch through DLPack without a copy. The crop geometry is computed exactly as the
Pillow cache does it, so DALI and the cache differ only by decoder and resizer rounding (tests bound it).
DALI is optional: ``pip install 'fastgan[dali]'`` (the nvidia-dali-cuda120 wheel, which also runs CPU-only).
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from fastgan.data.augment import Draw, augment, check_pad, draw
from fastgan.data.base import ImageDataset
from fastgan.data.items import centre_square
from fastgan.errors import DataError

INSTALL = "pip install 'fastgan[dali]' (the nvidia-dali-cuda120 package)"


def dali_available() -> str | None:
    """None when DALI imports, else the one-line reason (also the DALI tests' skip reason)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return f"the dali loader needs NVIDIA DALI, which is not installed: {INSTALL}"
    return None


def _pipeline(batch_size: int, resolution: int, device: torch.device):
    from nvidia.dali import fn, pipeline_def, types

    gpu = device.type == "cuda"

    # Fed one batch at a time and run synchronously: the batch is exactly the Draw's rows.
    @pipeline_def(batch_size=batch_size, num_threads=min(4, os.cpu_count() or 1),
                  device_id=(device.index or 0) if gpu else None, prefetch_queue_depth=1, exec_async=False,
                  exec_pipelined=False)
    def pipe():
        enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
        anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
        shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
        mirror = fn.external_source(name="mirror", dtype=types.INT32, ndim=0)
        img = fn.decoders.image_slice(enc, anchor, shape, axis_names="HW", device="mixed" if gpu else "cpu",
                                      output_type=types.RGB)
        img = fn.resize(img, size=[resolution, resolution], interp_type=types.INTERP_LINEAR, antialias=True)
        return fn.crop_mirror_normalize(img, mirror=mirror, dtype=types.FLOAT, output_layout="CHW",
                                        mean=[127.5] * 3, std=[127.5] * 3)

    p = pipe()
    p.build()
    return p


class DaliLoader:
    """Same interface as the other loaders; draws come from the default CPU generator, as the stream loader's.

    Without a copy, a returned batch lives in DALI's output buffer: it is valid until the next ``batch`` call
    (the training step is done with it by then; clone it to keep it longer).
    """

    kind = "dali"

    def __init__(self, dataset: ImageDataset, resolution: int, device: torch.device, hflip: bool = False,
                 crop_pad: int = 0) -> None:
        reason = dali_available()
        if reason:
            raise DataError(reason)
        if dataset.origin is None:
            raise DataError(f"the dali loader decodes image folders, CelebA and LSUN; dataset '{dataset.name}' is "
                            "already decoded: use --set data.loader=device or stream")
        check_pad(crop_pad, resolution)
        self.src, self.resolution, self.device = dataset.origin, resolution, device
        self.hflip, self.pad, self.n = hflip, crop_pad, len(dataset)
        self.labels = None if dataset.labels is None else dataset.labels.to(device)
        self._pipe, self._capacity = None, 0

    def draw(self, batch_size: int) -> Draw:
        return draw(self.n, batch_size, self.hflip, self.pad, torch.device("cpu"))

    def batch_at(self, d: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = len(d.idx)
        if self._pipe is None or b > self._capacity:
            self._pipe, self._capacity = _pipeline(b, self.resolution, self.device), b
        if self.device.type == "cuda":  # the torch work on the previous batch must be done before DALI reuses it
            torch.cuda.current_stream(self.device).synchronize()
        idx = d.idx.cpu().tolist()
        raws = [self.src.items.read(i) for i in idx]
        anchors, shapes = [], []
        for raw in raws:
            with Image.open(io.BytesIO(raw)) as im:  # reads the header only
                left, top, side = centre_square(im.width, im.height, self.src.crop)
            anchors.append(np.array([top, left], np.int32))
            shapes.append(np.array([side, side], np.int32))
        flips = d.flip.cpu().tolist() if d.flip is not None else [False] * b
        p = self._pipe
        p.feed_input("enc", [np.frombuffer(r, np.uint8) for r in raws])
        p.feed_input("anchor", anchors)
        p.feed_input("shape", shapes)
        p.feed_input("mirror", [np.array(int(f), np.int32) for f in flips])
        (out,) = p.run()
        x = torch.from_dlpack(out.as_tensor())  # DALI's buffer, no copy
        if d.shift is not None:  # the mirror is done; the crop offsets apply to the mirrored image, as on the device
            x = augment(x, Draw(d.idx, None, d.shift.to(x.device)), self.pad)
        y = None if self.labels is None else self.labels[d.idx.to(self.labels.device)]
        return x, y

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.batch_at(self.draw(batch_size))
