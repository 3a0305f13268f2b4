"""`fastgan data`: list the sources, download the ones with official links, prepare decoded caches."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from fastgan.commands._options import add_quiet
from fastgan.config import DataConfig
from fastgan.errors import DataError
from fastgan.outputs import check_output_dir


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
    add_quiet(v)
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
    add_quiet(v)
    v.set_defaults(run=run_prepare)

    v = verbs.add_parser("verify", help="check a prepared folder against the full sha256 in its manifest",
                         description="Recompute the sha256 of DIR/images.npy (and labels.npy) and compare it with "
                                     "DIR/manifest.json. Every load already checks the size and a sampled hash; this "
                                     "reads every byte. Exit 0: OK; exit 2: changed since `fastgan data prepare`.")
    v.add_argument("folder", help="a folder written by `fastgan data prepare`")
    v.set_defaults(run=run_verify)


def run_list(args: argparse.Namespace) -> int:
    from fastgan import catalog  # light: `data list` never imports torch
    from fastgan.paths import data_home

    home = data_home()
    why = "$FASTGAN_DATA" if os.environ.get("FASTGAN_DATA") else "$FASTGAN_DATA is unset, so ./data"
    print(f"Data sources. Files are looked for in {home.resolve()} ({why}), one folder per dataset below;\n"
          "--set data.root=DIR (train) or --root DIR (data download, classifier train) points elsewhere.\n")
    rows = [("NAME", "HERE", "FOLDER", "CH", "CLASSES", "GET")]
    for name, e in sorted(catalog.SOURCES.items()):
        folder = catalog.where(name)
        here = "yes" if catalog.present(name) else "no" if folder else "-"
        shown = str(folder) if folder else "(bundled)" if e.get == catalog.BUNDLED else "data.root=DIR"
        get = e.get + (", decoded once and cached" if e.decoded else "")
        rows.append((name, here, shown, str(e.channels or "?"), str(e.classes or "?"), get))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    print("\nNAME     the value of data.dataset (and of `fastgan data download NAME`)\n"
          "HERE     yes: its folder exists and is not empty\n"
          "FOLDER   where its files are read from (`fastgan data download` puts them there)\n"
          "CH       image channels\n"
          "CLASSES  labels; '?': the files or data.attribute, data.categories, data.class_folders decide\n"
          "GET      download: `fastgan data download NAME` (checksummed); manual: no checksummed public link,\n"
          "         training without it says where to get it; your files: a folder you name with data.root")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from fastgan.data.download import download

    folder = download(args.name, args.root, args.mirror, args.timeout, args.quiet)
    print(f"{args.name}: files verified in {folder}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from fastgan.data import SOURCES
    from fastgan.data.prepare import check_resolution
    from fastgan.data.registry import prepare_source

    name, root = args.source, args.root
    if name not in SOURCES:
        if not Path(name).is_dir():
            raise DataError(f"'{name}' is neither a data source nor a folder: `fastgan data list` names the sources")
        name, root = "folder", name
    check_resolution(args.resolution)
    check_output_dir(args.out)
    if not 0.0 < args.crop <= 1.0:
        raise DataError(f"--crop {args.crop} must be in (0, 1]: a fraction of the shorter side")
    cfg = replace(DataConfig(), dataset=name, root=root, split=args.split, crop=args.crop,
                  class_folders=args.class_folders, attribute=args.attribute, categories=args.categories,
                  prepare_workers=args.workers, cache_resolution=args.resolution)
    m = prepare_source(cfg, args.resolution, Path(args.out), args.quiet)
    print(json.dumps({k: m[k] for k in ("source", "resolution", "channels", "count", "skipped", "num_classes",
                                         "sha256")} | {"out": args.out}))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from fastgan.data.prepare import verify_prepared

    problems = verify_prepared(Path(args.folder))
    if problems:
        raise DataError(f"{'; '.join(problems)}: the folder changed since it was prepared, run `fastgan data "
                        f"prepare` again into {args.folder}")
    print(f"OK {args.folder}: images.npy matches the sha256 in manifest.json")
    return 0
