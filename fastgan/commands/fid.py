from __future__ import annotations

import argparse
import json
import sys

from fastgan.config import MAX_SEED, EvalConfig
from fastgan.errors import FastganError
from fastgan.outputs import check_output_file

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
    p.add_argument("--batch-size", type=int, default=EvalConfig.batch_size,
                   help=f"network batch size; results do not depend on it (default {EvalConfig.batch_size})")
    p.add_argument("--impl", choices=IMPLS, default="auto", help="trace-sqrt implementation (default auto)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.b is None and not (args.save_stats or args.isc):
        raise FastganError("give a second source B to compare with, or --save-stats PATH, or --isc")
    if args.samples < 0 or args.batch_size < 1:
        raise FastganError("--samples must be >= 0 and --batch-size >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        raise FastganError(f"--seed {args.seed} is out of range: use 0 .. 2**63-1")
    if args.save_stats:
        check_output_file(args.save_stats, "--save-stats")  # before minutes of feature extraction
    from fastgan.devices import resolve_device
    from fastgan.metrics.features import extract
    from fastgan.metrics.fid import FID, load_stats, resolve_impl, save_stats, stats_to_fid
    from fastgan.metrics.inception import RESIZE, load_inception
    from fastgan.metrics.inception_score import logits_to_is
    from fastgan.metrics.sources import open_source

    device = resolve_device(args.device)
    sources = [open_source(s, args.samples, args.seed, device) for s in (args.a, args.b) if s is not None]
    stats = [load_stats(s.stats_path) if s.kind == "stats" else None for s in sources]
    images = [s for s in sources if s.kind != "stats"]
    if args.save_stats and sources[0].kind == "stats":
        raise FastganError(f"--save-stats needs images for A, but {args.a} is already a stats file")
    if args.isc and not images:
        raise FastganError("--isc needs images (a folder, dataset split or checkpoint), not stats files")
    dims = args.dims or next((st.dim for st in stats if st is not None and st.dim in DIMS), 2048)
    known = [(s.spec, st.dim) for s, st in zip(sources, stats) if st is not None]
    want = args.dims or (dims if images else known[0][1] if known else None)
    bad = next(((spec, d) for spec, d in known if d != want), None)
    if bad:  # features of different layers cannot be compared (and --dims must not be ignored)
        asked = f"--dims {args.dims} asks for d={args.dims}" if args.dims else f"the other side has d={want}"
        raise FastganError(f"stats file {bad[0]} has d={bad[1]} features but {asked}: compare statistics of the "
                           "same Inception layer (drop --dims, or use a stats file of that layer)")
    out: dict = {}
    protocol: dict = {"trace_sqrt": resolve_impl(args.impl), "statistics": "float64 mean and unbiased covariance"}
    if images:
        net = load_inception(args.weights, dims, device, download=not args.no_download)
        if args.isc:
            net.require_logits()
        protocol.update(network="FID Inception v3 (TF 2015-12-05, pytorch-fid layout), fp32", dims=dims,
                        resize=RESIZE, weights=net.weights_file, weights_sha256=net.weights_sha256)
        for i, s in enumerate(sources):
            if s.kind == "stats":
                continue
            res = extract({"net": (net, args.isc)}, s.batches(args.batch_size), device, total=s.count,
                          desc=s.spec, quiet=args.quiet)
            stats[i], logits = res["net"]
            if logits is not None:
                out.setdefault("inception_score", {})["ab"[i]] = logits_to_is(logits)
    for i, s in enumerate(sources):
        if s.kind == "stats":
            s.count = stats[i].n
    if args.save_stats:
        save_stats(args.save_stats, stats[0])
        print(f"wrote statistics of {stats[0].n} images to {args.save_stats}", file=sys.stderr)
    if len(stats) == 2:
        out[FID] = stats_to_fid(stats[0], stats[1], args.impl)
    protocol.update({k: s.describe() for k, s in zip("ab", sources)})
    print(json.dumps({**out, "protocol": protocol}, indent=2))
    return 0
