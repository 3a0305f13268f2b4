"""What ``fastgan fid`` measures: an image folder, a .npz stats file, a dataset split
(``mnist:test``) or a checkpoint (N generated samples). Image sources yield uint8
(B, C, H, W) batches and describe themselves for the JSON protocol."""

from __future__ import annotations

import io
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastgan.config import DataConfig
from fastgan.data import SOURCES, load_dataset
from fastgan.data.items import list_images, read_regular, to_rgb
from fastgan.data.loader import _free_bytes
from fastgan.engine.checkpoint import load_generator
from fastgan.errors import FastganError
from fastgan.images import quantize

FID_CACHE_RESOLUTION = 64  # px of the decoded cache a dataset split like folder:test is read from
CHECKPOINT_SAMPLES = 10000  # generated images when --samples is not given (FID depends on it: it is reported)
IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")  # pytorch-fid's


@dataclass
class Source:
    kind: str  # folder | stats | dataset | checkpoint
    spec: str
    count: int = 0
    batches: Callable[[int], Iterator[torch.Tensor]] | None = None  # batch_size -> uint8 batches
    stats_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"source": self.spec, "kind": self.kind, "count": self.count, **self.info}


def _folder(path: Path, limit: int) -> Source:
    from PIL import Image

    names, skipped = list_images(path, IMAGE_EXTENSIONS)  # links once per real path, special files never opened
    files, sizes = [], []
    for name in names:
        if limit and len(files) == limit:
            break
        try:
            with Image.open(io.BytesIO(read_regular(path / name))) as im:
                im.load()  # the full decode: a truncated file is skipped here, not halfway through the features
                sizes.append(im.size)
            files.append(path / name)
        except Exception as e:  # noqa: BLE001 - whatever Pillow raises on a damaged file: skipped and counted, like prepare does
            skipped.append((name, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    if len(files) < 2:
        why = f" ({len(skipped)} other entries skipped, first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise FastganError(f"image folder {path} holds {len(files)} images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                           f"{why}; FID needs at least 2")
    info: dict[str, Any] = {}
    if skipped:
        info["skipped"] = len(skipped)
        info["skipped_items"] = [f"{n} ({why})" for n, why in skipped[:20]]
        print(f"warning: skipped {len(skipped)} entries of {path} that are not readable images (first: "
              f"{skipped[0][0]}: {skipped[0][1]})", file=sys.stderr)
    by_size = Counter(sizes)
    if len(by_size) > 1:
        (w, h), n = by_size.most_common(1)[0]
        info["mixed_sizes"] = {f"{a}x{b}": c for (a, b), c in by_size.most_common()}
        print(f"note: {path} holds images of {len(by_size)} sizes ({len(files) - n} are not {w}x{h}); each is "
              "resized to the network's input on its own, as pytorch-fid does one image at a time", file=sys.stderr)
    order = sorted(range(len(files)), key=lambda i: sizes[i])  # same-size runs batch together

    def batches(bs: int) -> Iterator[torch.Tensor]:
        run: list[np.ndarray] = []
        for j, i in enumerate(order):
            with Image.open(files[i]) as im:
                run.append(np.asarray(to_rgb(im)))  # the conversion prepare uses (16-bit grey, alpha, CMYK...)
            last = j + 1 == len(order) or sizes[order[j + 1]] != sizes[i]
            if len(run) == bs or last:
                yield torch.from_numpy(np.stack(run)).permute(0, 3, 1, 2).contiguous()
                run = []

    return Source("folder", str(path), len(files), batches, info=info)


def _dataset(spec: str, limit: int) -> Source:
    from fastgan.config import SPLITS

    name, split = spec.split(":", 1)
    if name == "folder":  # it has no default root, and fid has no --set data.root
        raise FastganError(f"{spec} names no folder: pass the image folder itself as the source, e.g. "
                           "`fastgan fid path/to/images B`")
    if split not in SPLITS:  # never a silent fallback to the train split
        raise FastganError(f"unknown split '{split}' in {spec}: use {' or '.join(f'{name}:{s}' for s in SPLITS)}")
    # decoded sources (folder, celeba, lsun, imagenet) are cached at a resolution: FID's is the DCGAN presets' 64 px
    ds = load_dataset(DataConfig(dataset=name, split=split, cache_resolution=FID_CACHE_RESOLUTION))
    images = ds.images[:limit] if limit else ds.images
    if len(images) < 2:
        raise FastganError(f"{spec} has {len(images)} images; FID needs at least 2")
    return Source("dataset", spec, len(images), lambda bs: iter(images.split(bs)),
                  info={"resolution": ds.resolution, "first": len(images)})


def _checkpoint(path: Path, n: int, seed: int, device: torch.device) -> Source:
    G, cfg, ckpt = load_generator(path, device)
    k = cfg.model.label_classes
    need, free = n * (cfg.model.z_dim * 4 + 8), _free_bytes(torch.device("cpu"))  # the latents are drawn at once
    if free is not None and need > free:  # past free memory the kernel kills the process without a word
        raise FastganError(f"--samples {n} needs {need / 2**30:.1f} GiB of latents but {free / 2**30:.1f} GiB are "
                           "free: ask for fewer samples")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cfg.model.z_dim, generator=gen)
    y = torch.arange(n) % k if k else None

    @torch.no_grad()
    def batches(bs: int) -> Iterator[torch.Tensor]:
        for i in range(0, n, bs):
            yb = None if y is None else y[i : i + bs].to(device)
            yield quantize(G(z[i : i + bs].to(device), yb)).cpu()

    return Source("checkpoint", str(path), n, batches,
                  info={"step": ckpt["step"], "seed": seed, "labels": "balanced" if k else "none",
                        "resolution": cfg.model.resolution, "quantized": "uint8"})


def open_source(spec: str, samples: int, seed: int, device: torch.device) -> Source:
    """``samples``: the first N images of a folder or dataset (0 = all), or N generated from a checkpoint
    (0 = CHECKPOINT_SAMPLES)."""
    p = Path(spec)
    if p.suffix.lower() == ".npz":
        if not p.is_file():  # a FIFO or device is never opened
            raise FastganError(f"stats file {p} {'is not a regular file' if p.exists() else 'does not exist'}")
        return Source("stats", spec, stats_path=p)
    if p.is_dir():
        return _folder(p, samples)
    if p.is_file() and p.suffix.lower() in (".pt", ".pth"):
        return _checkpoint(p, samples or CHECKPOINT_SAMPLES, seed, device)
    if ":" in spec and spec.split(":", 1)[0] in SOURCES:
        return _dataset(spec, samples)
    raise FastganError(
        f"'{spec}' is not an image folder, a .npz stats file, a checkpoint (.pt) or a dataset split like mnist:test "
        f"(datasets: {', '.join(sorted(SOURCES))})"
    )
