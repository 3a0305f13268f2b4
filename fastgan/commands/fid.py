from __future__ import annotations

import argparse
import json
import sys

from fastgan.commands._options import add_device, add_quiet

# Copies of fastgan.metrics' constants, so that parsing and --help never import torch (a test checks they match).
IMPLS = ("auto", "native", "numpy", "torch")  # fastgan.metrics.fid.IMPLS
DIMS = (64, 192, 768, 2048)  # fastgan.metrics.inception.DIMS
CHECKPOINT_SAMPLES = 10000  # fastgan.metrics.sources.CHECKPOINT_SAMPLES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fid",
        help="FID (and Inception Score) of image folders, stats files, dataset splits or checkpoints",
        description="Frechet Inception Distance between A and B, each an image folder, a pytorch-fid compatible "
        ".npz stats file (mu, sigma), a dataset split like mnist:test, or a checkpoint (generates --samples "
        "images). Prints JSON with the value and its protocol (sample counts, resize, weights sha256).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan fid mnist:test fashion-mnist:test --samples 1000\n"
        "  fastgan fid runs/mnist/checkpoints/step-0010000.pt mnist:train --samples 10000\n"
        "  fastgan fid mnist:train --save-stats mnist-train.npz\n  fastgan fid generated/ mnist-train.npz --isc\n"
        "Weights: --weights PATH, else $FASTGAN_DATA/inception/, else the cache (~/.cache/fastgan/inception),\n"
        "else pytorch-fid's release is downloaded (sha256 checked).",
    )
    p.add_argument("a", help="folder | stats.npz | dataset:split | checkpoint.pt")
    p.add_argument("b", nargs="?", help="the second source (omit with --save-stats or --isc)")
    p.add_argument("--samples", type=int, default=0, help="first N images of a folder or dataset (default all); "
                   f"images generated from a checkpoint (default {CHECKPOINT_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="latent seed for checkpoints (default 0)")
    p.add_argument("--dims", type=int, choices=DIMS, help="Inception feature layer (default 2048, or a stats file's)")
    p.add_argument("--isc", action="store_true", help="also the Inception Score of image sources (needs fc weights)")
    p.add_argument("--save-stats", metavar="PATH", help="write A's statistics to PATH (.npz, pytorch-fid compatible)")
    p.add_argument("--weights", help="FID Inception weights (.pth of pytorch-fid, or the .npz copy)")
    p.add_argument("--no-download", action="store_true", help="never download the weights")
    p.add_argument("--batch-size", type=int, default=0,
                   help="network batch size; results do not depend on it (default 250 on a GPU, 50 on a CPU, where "
                   "the progress bar then moves every few seconds)")
    p.add_argument("--impl", choices=IMPLS, default="auto", help="trace-sqrt implementation (default auto)")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, so that parsing and --help never import torch.
    from fastgan.metrics.api import compute_fid

    result = compute_fid(args.a, args.b, samples=args.samples, seed=args.seed, dims=args.dims, isc=args.isc,
                         weights=args.weights, batch_size=args.batch_size, impl=args.impl, device=args.device,
                         quiet=args.quiet, download=not args.no_download, save_stats=args.save_stats)
    from fastgan.engine import distributed

    if not distributed.is_main():  # torchrun: rank 0 reports
        return 0
    if args.save_stats:
        print(f"wrote statistics of {result['protocol']['a']['count']} images to {args.save_stats}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0
