"""`fastgan data`: list the sources, download the ones with official links, prepare decoded caches."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from fastgan.config import DataConfig
from fastgan.errors import DataError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "data", help="list, download and prepare datasets",
        description="List the data sources, download the ones with official links (checksummed, resumable), "
                    "or decode one into a memory-mappable cache.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan data list\n  fastgan data download cifar10 --root data/cifar10\n"
               "  fastgan data prepare celeba --root data/celeba --crop 0.7 --resolution 64 --out prepared/celeba64\n"
               "  fastgan data prepare photos/ --resolution 64 --out prepared/photos\n"
               "  fastgan train --set data.dataset=prepared --set data.root=prepared/photos --set model.resolution=64")
    p.set_defaults(run=lambda a: p.print_help() or 2)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))

    v = verbs.add_parser("list", help="the data sources and whether they download")
    v.set_defaults(run=run_list)

    v = verbs.add_parser("download", help="fetch a dataset's official files, checksummed",
                         description="Fetch a dataset's official files into --root (default: its folder under "
                                     "$FASTGAN_DATA or ./data). Resumes a partial download; a file is renamed into "
                                     "place only after its MD5 matches.")
    v.add_argument("name", help="mnist | fashion-mnist | emnist (any emnist-* split) | cifar10 | cifar100")
    v.add_argument("--root", default="", help="folder for the files (then train with --set data.root=DIR)")
    v.add_argument("--mirror", default="", help="base URL to fetch the files from instead ($FASTGAN_MIRROR)")
    v.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(run=run_download)

    d = DataConfig()
    v = verbs.add_parser("prepare", help="decode, crop and resize a source once into a memory-mappable cache",
                         description="Decode, crop and resize a source once into OUT/images.npy (uint8 N,C,R,R), "
                                     "OUT/labels.npy and OUT/manifest.json. Unreadable images are skipped and "
                                     "counted. Train from it with --set data.dataset=prepared --set data.root=OUT.")
    v.add_argument("source", help="a dataset name (celeba, lsun-church, imagenet32, cifar10, ...) or a folder of "
                                  "images")
    v.add_argument("--resolution", type=int, required=True, help="output side in px")
    v.add_argument("--out", required=True, help="output folder")
    v.add_argument("--root", default="", help="the source's folder (data.root)")
    v.add_argument("--split", default=d.split, help=f"train | test (default {d.split})")
    v.add_argument("--crop", type=float, default=d.crop, help="centre square crop, fraction of the shorter side "
                                                             f"(default {d.crop})")
    v.add_argument("--class-folders", action="store_true", help="image folder: sub-folders become class labels")
    v.add_argument("--attribute", default="", help="CelebA attribute to keep as a 0/1 label, e.g. Smiling")
    v.add_argument("--categories", default="", help="lsun: comma list of categories, label = position")
    v.add_argument("--workers", type=int, default=d.prepare_workers, help="decode processes (0 = one per core)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(run=run_prepare)


def run_list(args: argparse.Namespace) -> int:
    from fastgan.data import SOURCES
    from fastgan.data.cache import DECODED
    from fastgan.data.download import ALIASES, DOWNLOADS

    for name in sorted(SOURCES):
        how = "download" if name in DOWNLOADS or name in ALIASES else ""
        kind = "decoded, cached" if name in DECODED else {"digits": "bundled", "prepared": "memory-mapped"}.get(
            name, "arrays")
        print(f"{name:<22} {kind:<16} {how}".rstrip())
    return 0


def run_download(args: argparse.Namespace) -> int:
    from fastgan.data.download import download

    folder = download(args.name, args.root, args.mirror, args.timeout, args.quiet)
    print(f"{args.name}: files verified in {folder}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from fastgan.data import SOURCES
    from fastgan.data.registry import prepare_source

    name, root = args.source, args.root
    if name not in SOURCES:
        if not Path(name).is_dir():
            raise DataError(f"'{name}' is neither a data source nor a folder: `fastgan data list` names the sources")
        name, root = "folder", name
    if args.resolution < 8:
        raise DataError(f"--resolution {args.resolution} is too small: use 8 px or more (e.g. 64)")
    if not 0.0 < args.crop <= 1.0:
        raise DataError(f"--crop {args.crop} must be in (0, 1]: a fraction of the shorter side")
    cfg = replace(DataConfig(), dataset=name, root=root, split=args.split, crop=args.crop,
                  class_folders=args.class_folders, attribute=args.attribute, categories=args.categories,
                  prepare_workers=args.workers, cache_resolution=args.resolution)
    m = prepare_source(cfg, args.resolution, Path(args.out), args.quiet)
    print(json.dumps({k: m[k] for k in ("source", "resolution", "channels", "count", "skipped", "num_classes",
                                         "sha256")} | {"out": args.out}))
    return 0
