from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from fastgan.commands._options import add_device
from fastgan.config import MAX_SEED
from fastgan.errors import ConfigError
from fastgan.outputs import check_output_file

if TYPE_CHECKING:
    import torch


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate images from a checkpoint",
        description="Generate images from a checkpoint into a grid PNG or an .npz (uint8 NHWC 'images', 'labels').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan sample runs/digits-cdcgan/checkpoints/step-0001500.pt --out grid.png\n"
        "  fastgan sample CKPT --labels 3 -n 64 --out threes.npz\n  fastgan sample --onnx digits.onnx --out grid.png",
    )
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by fastgan train (or use --onnx)")
    p.add_argument("--onnx", metavar="MODEL.onnx", help="sample a model written by `fastgan export` through "
                   "onnxruntime (best provider: TensorRT, CUDA, CPU; --device cpu forces CPU) instead of a checkpoint")
    p.add_argument("--out", default="samples.png", help="output .png (grid) or .npz (default samples.png)")
    p.add_argument("-n", "--num", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--labels", help="conditional models: one label, or a comma list cycled over the images "
                   "(default: every class in turn)")
    p.add_argument("--seed", type=int, default=0, help="latent seed (default 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its EMA")
    add_device(p)
    p.set_defaults(run=run)


def parse_labels(text: str | None, n: int, num_classes: int) -> torch.Tensor | None:
    import torch

    if num_classes == 0:
        if text:
            raise ConfigError("--labels given but this generator is unconditional: drop --labels")
        return None
    if not text:
        return torch.arange(n) % num_classes
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--labels must be integers like 3 or 0,1,2, got '{text}'") from None
    if not vals:
        raise ConfigError(f"--labels '{text}' names no label: give integers like 3 or 0,1,2")
    bad = [v for v in vals if not 0 <= v < num_classes]
    if bad:
        raise ConfigError(f"label {bad[0]} is out of range: this model has classes 0..{num_classes - 1}")
    return torch.tensor(vals)[torch.arange(n) % len(vals)]


def _sample_onnx(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(images, labels, classes) from an exported model; the latents are the checkpoint path's (same seed)."""
    if args.no_ema:
        raise ConfigError("--no-ema has no effect on an ONNX model: export the raw G with `fastgan export --no-ema`")
    try:
        from fastgan.export.runtime import OnnxGenerator
    except ImportError as e:
        raise ConfigError(f"--onnx needs the '{e.name}' package: pip install 'fastgan[onnx]'") from None
    import numpy as np
    import torch

    og = OnnxGenerator(args.onnx, ["CPUExecutionProvider"] if args.device == "cpu" else None)
    n = grid_count(args, og.num_classes)
    y = parse_labels(args.labels, n, og.num_classes)
    print(f"onnxruntime provider: {og.provider}", file=sys.stderr)
    check_memory(n, SimpleNamespace(z_dim=og.z_dim, channels=og.channels, resolution=og.resolution),
                 torch.device("cpu"))  # the images come back to the host
    z = torch.randn(n, og.z_dim, generator=torch.Generator().manual_seed(args.seed))
    parts = []
    for i in range(0, n, ONNX_BATCH):  # in batches: the activations of a whole -n at once need far more than the images
        try:
            parts.append(og.run(z[i:i + ONNX_BATCH].numpy(), None if y is None else y[i:i + ONNX_BATCH].numpy()))
        except Exception as e:  # onnxruntime raises its own pybind types
            if "allocat" in str(e).lower():
                raise ConfigError(f"onnxruntime ran out of memory generating -n {n}: ask for fewer (several runs with "
                                  "different --seed give more), or free memory") from None
            raise
    return torch.from_numpy(np.concatenate(parts)), y, og.num_classes


ONNX_BATCH = 1024  # images per onnxruntime call


def grid_columns(args: argparse.Namespace, num_classes: int) -> int | None:
    """One class per column when a PNG shows every class in turn (and the classes fit a row)."""
    png = Path(args.out).suffix.lower() == ".png"
    return num_classes if png and 2 <= num_classes <= 16 and not args.labels else None


def grid_count(args: argparse.Namespace, num_classes: int) -> int:
    """-n, rounded up to whole rows of classes for a class-per-column PNG (64 digits -> 70): no ragged last row."""
    cols = grid_columns(args, num_classes)
    if not cols or args.num % cols == 0:
        return args.num
    n = -(-args.num // cols) * cols
    print(f"-n {args.num} rounded up to {n}: {n // cols} full rows of the {cols} classes", file=sys.stderr)
    return n


def check_memory(n: int, m, device) -> None:
    """Refuse an -n whose images cannot fit: past free memory the kernel kills the process without a word."""
    from fastgan.data.loader import _free_bytes

    need = n * (m.z_dim * 4 + m.channels * m.resolution**2 * 13)  # float32 latents; float32 images, uint8 copy, grid
    free = _free_bytes(device)
    if free is not None and need > free:
        raise ConfigError(f"-n {n} needs about {need / 2**30:.1f} GiB for its images but {free / 2**30:.1f} GiB are "
                          "free: ask for fewer (several runs with different --seed give more)")


def run(args: argparse.Namespace) -> int:
    if args.num < 1:
        raise ConfigError(f"-n must be at least 1, got {args.num}")
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise ConfigError(f"--out must end in .png or .npz, got '{out}'")
    if (args.checkpoint is None) == (args.onnx is None):
        raise ConfigError("give a checkpoint or --onnx MODEL.onnx (exactly one of them)")
    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed} is out of range: use 0 .. 2**63-1")
    check_output_file(out)
    import torch  # after the argument checks: a bad option fails at once

    from fastgan.devices import resolve_device
    from fastgan.engine.checkpoint import load_generator
    from fastgan.engine.sampling import generate
    from fastgan.images import make_grid, save_npz, save_png, to_uint8

    if args.onnx:
        x, y, k = _sample_onnx(args)
    else:
        device = resolve_device(args.device)
        G, cfg, _ = load_generator(args.checkpoint, device, not args.no_ema)
        k = cfg.model.label_classes
        n = grid_count(args, k)
        check_memory(n, cfg.model, device)
        y = parse_labels(args.labels, n, k)
        gen = torch.Generator().manual_seed(args.seed)
        z = torch.randn(n, cfg.model.z_dim, generator=gen)
        x = generate(G, z.to(device), None if y is None else y.to(device))
    if out.suffix.lower() == ".npz":
        save_npz(x, y, out)
    else:
        save_png(make_grid(to_uint8(x), grid_columns(args, k)), out)
    print(f"wrote {len(x)} images to {out}", file=sys.stderr)
    return 0
