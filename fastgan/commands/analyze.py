"""`fastgan analyze NAME CHECKPOINT`: what a trained GAN learned (fastgan/analysis/).

Only argparse here at import time: torch and the analyses load when a command runs."""

from __future__ import annotations

import argparse
import json
import sys
import time

from fastgan.commands._options import add_device

EXAMPLES = """Examples:
  fastgan analyze interpolate runs/digits-cdcgan/checkpoints/step-0001500.pt
  fastgan analyze interpolate CKPT --seeds 3,14,15 --labels 1,7
  fastgan analyze pick CKPT                      # numbered sheet for arithmetic
  fastgan analyze arithmetic CKPT --a 3,17,40 --b 5,9 --c 12,61
  fastgan analyze neighbours CKPT --k 5
  fastgan analyze dfeatures CKPT --per-class 10,100,all
  fastgan analyze cas CKPT --real 0,600,6000,60000 --gen 0,6000,60000 --seeds 3
  fastgan analyze embeddings CKPT
  fastgan analyze project CKPT --index 0,1,2     # or --image digit.png
Each writes NAME.json (numbers + protocol) and PNG/GIF files into RUN_DIR/analysis/NAME/ (or --out)."""


def _common(p: argparse.ArgumentParser, onnx: bool) -> None:
    what = "a checkpoint written by fastgan train" + (" (or an exported .onnx generator)" if onnx else "")
    p.add_argument("checkpoint", help=what)
    p.add_argument("--out", help="output folder (default: RUN_DIR/analysis/NAME/)")
    p.add_argument("--seed", type=int, default=0, help="latent / subset seed (default 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its EMA")
    add_device(p)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "analyze", help="what a trained GAN learned: interpolation, arithmetic, neighbours, D features, CAS, ...",
        description="The seed papers' analyses of a trained GAN, each a figure a person can read and a JSON with "
        "the numbers and the protocol.", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    s = p.add_subparsers(dest="analysis", metavar="NAME", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    a = s.add_parser("interpolate", formatter_class=fmt,
                     help="walks between latents (slerp and linear), and between labels with z fixed; PNG + GIF")
    _common(a, True)
    a.add_argument("--k", type=int, default=6, help="random latents (rows); ignored with --seeds")
    a.add_argument("--seeds", help="comma list: one latent per seed (fastgan sample --seed S's first latent)")
    a.add_argument("--steps", type=int, default=10, help="images per walk, endpoints included")
    a.add_argument("--labels", help="A,B: the label walk goes from class A to class B on every row "
                   "(conditional models; default: class r to r+1 on row r)")

    a = s.add_parser("pick", formatter_class=fmt, help="a numbered sheet of samples to choose arithmetic concepts from")
    _common(a, True)
    a.add_argument("-n", type=int, default=64, help="samples on the sheet")

    a = s.add_parser("arithmetic", formatter_class=fmt,
                     help="Y = mean z(A) - mean z(B) + mean z(C) from pick-sheet indices, beside pixel arithmetic")
    _common(a, True)
    for c in "abc":
        a.add_argument(f"--{c}", required=True, help=f"concept {c.upper()}: comma list of pick-sheet indices")
    a.add_argument("-n", type=int, default=None, help="the sheet's size (default: as written by pick, else 64)")
    a.add_argument("--sheet-seed", type=int, default=None, help="the sheet's seed (default: as written by pick, else 0)")
    a.add_argument("--label", type=int, default=None, help="conditional models: label of the result (default: C's)")

    a = s.add_parser("neighbours", formatter_class=fmt,
                     help="nearest training images of samples (pixels, features) and a memorisation ratio")
    _common(a, False)
    a.add_argument("-n", type=int, default=256, help="generated samples")
    a.add_argument("--k", type=int, default=5, help="neighbours per sample")
    a.add_argument("--features", default="auto", help="auto (Inception on a GPU when its weights exist, else the "
                   "domain classifier) | inception | classifier")
    a.add_argument("--feature-pool", type=int, default=None,
                   help="train images searched in feature space (default: all; 1000 for Inception on a CPU)")
    a.add_argument("--classifier", default="", help="domain classifier file (default: the cached one)")

    a = s.add_parser("dfeatures", formatter_class=fmt,
                     help="D as a feature extractor: linear SVM accuracy vs labels, with pixel and untrained-D baselines")
    _common(a, False)
    a.add_argument("--per-class", default="10,100,all", help="labelled images per class, comma list ('all' = every one)")
    a.add_argument("--max-test", type=int, default=10000, help="test images scored")

    a = s.add_parser("cas", formatter_class=fmt,
                     help="classifier trained on generated / real / mixed data, tested on real test images")
    _common(a, False)
    a.add_argument("--real", default="0,10%,100%", help="real training images per cell: counts or shares of the "
                   "train split (seed 002: 0,1%%,10%%,100%%)")
    a.add_argument("--gen", default="0,100%", help="generated training images per cell: counts or shares of the "
                   "train split's size (seed 002: 0,10%%,100%%)")
    a.add_argument("--seeds", type=int, default=2, help="classifiers per cell (mean and spread)")
    a.add_argument("--steps", type=int, default=200, help="Adam steps (batch 64) per classifier")

    a = s.add_parser("embeddings", formatter_class=fmt,
                     help="classifier features (PCA) and confidences, D outputs: real vs generated")
    _common(a, False)
    a.add_argument("-n", type=int, default=1000, help="images per source")
    a.add_argument("--classifier", default="", help="domain classifier file (default: the cached one)")

    a = s.add_parser("project", formatter_class=fmt, help="find z (and label) whose G(z) matches an image")
    _common(a, False)
    a.add_argument("--image", help="a PNG/JPEG to project (default: test-split images)")
    a.add_argument("--index", default="0,1,2,3,4,5,6,7", help="test-split indices to project")
    a.add_argument("--split", default="test", choices=("test", "train"), help="split --index reads")
    a.add_argument("--steps", type=int, default=300, help="Adam steps")
    a.add_argument("--restarts", type=int, default=4, help="random starts per image (the best is kept)")
    a.add_argument("--feature-weight", type=float, default=0.1, help="weight of the classifier-feature loss (0 = pixels only)")
    p.set_defaults(run=run)


def _per_class(text: str) -> list[int | None]:
    from fastgan.analysis.common import AnalysisError

    out: list[int | None] = []
    for v in (s.strip() for s in text.split(",") if s.strip()):
        if v == "all":
            out.append(None)
            continue
        if not v.isdigit() or int(v) < 2:
            raise AnalysisError(f"--per-class takes counts >= 2 or 'all', like 10,100,all; got '{v}'")
        out.append(int(v))
    return out or [None]


# Every count option of every analysis: (attribute, flag, least value). Checked in one place, before the model loads.
MAX_COUNT = 10**8  # above it a count only ends in an overflow or out of memory
COUNTS = {
    "interpolate": (("steps", "--steps", 2),),  # --k: below, only without --seeds
    "pick": (("n", "-n", 1),),
    "arithmetic": (("n", "-n", 1),),
    "neighbours": (("n", "-n", 1), ("k", "--k", 1), ("feature_pool", "--feature-pool", 1)),
    "dfeatures": (("max_test", "--max-test", 1),),
    "cas": (("seeds", "--seeds", 1), ("steps", "--steps", 1)),
    "embeddings": (("n", "-n", 2),),  # a PCA of one point is no picture
    "project": (("steps", "--steps", 1), ("restarts", "--restarts", 1)),
}


def check_args(args: argparse.Namespace) -> None:
    """Counts, seeds and weights of any analysis: one line naming the option and its range (exit 2)."""
    import math

    from fastgan.analysis.common import AnalysisError, parse_ints
    from fastgan.config import MAX_SEED

    counts = list(COUNTS.get(args.analysis, ()))
    if args.analysis == "interpolate" and not args.seeds:
        counts.append(("k", "--k", 2))
    for attr, flag, least in counts:
        v = getattr(args, attr, None)
        if v is not None and not least <= v <= MAX_COUNT:
            raise AnalysisError(f"{flag} {v} is out of range: use {least} .. {MAX_COUNT}")
    seeds = [("--seed", args.seed)]
    if args.analysis == "arithmetic" and args.sheet_seed is not None:
        seeds.append(("--sheet-seed", args.sheet_seed))
    if args.analysis == "interpolate":
        seeds += [("--seeds", s) for s in parse_ints(args.seeds, "--seeds")]
    top = MAX_SEED - 1000 * args.seeds - 1 if args.analysis == "cas" else MAX_SEED  # cas seeds seed + 1000 s + 1
    for flag, v in seeds:
        if not 0 <= v <= top:
            raise AnalysisError(f"{flag} {v} is out of range: use 0 .. {top}" + (" (2**63-1)" if top == MAX_SEED else ""))
    if args.analysis == "project" and not (math.isfinite(args.feature_weight) and args.feature_weight >= 0):
        raise AnalysisError(f"--feature-weight {args.feature_weight} must be a finite number >= 0 (0 = pixels only)")


def run(args: argparse.Namespace) -> int:
    from fastgan.analysis import arithmetic, cas, dfeatures, embeddings, interpolate, neighbours, project
    from fastgan.analysis.common import AnalysisError, check_label, default_out, load_model, parse_ints
    from fastgan.devices import resolve_device

    name = args.analysis
    check_args(args)
    model = load_model(args.checkpoint, resolve_device(args.device), not args.no_ema)
    out = default_out(model, name, args.out)
    t0 = time.perf_counter()
    if name == "interpolate":
        labels = parse_ints(args.labels, "--labels")
        if labels and len(labels) != 2:
            raise AnalysisError(f"--labels takes two classes A,B (the walk's ends), got '{args.labels}'")
        check_label(model, labels, "--labels")
        res = interpolate.run(model, out, args.k, args.steps, parse_ints(args.seeds, "--seeds") or None, args.seed,
                              tuple(labels) if labels else None)
    elif name == "pick":
        res = arithmetic.pick(model, out, args.n, args.seed)
    elif name == "arithmetic":
        res = arithmetic.run(model, out, parse_ints(args.a, "--a"), parse_ints(args.b, "--b"),
                             parse_ints(args.c, "--c"), args.n, args.sheet_seed, args.label)
    elif name == "neighbours":
        res = neighbours.run(model, out, args.n, args.k, args.seed, args.features, args.feature_pool,
                             classifier=args.classifier)
    elif name == "dfeatures":
        res = dfeatures.run(model, out, _per_class(args.per_class), args.seed, args.max_test)
    elif name == "cas":
        res = cas.run(model, out, args.real, args.gen, args.seeds, args.steps, args.seed)
    elif name == "embeddings":
        res = embeddings.run(model, out, args.n, args.seed, args.classifier)
    else:
        res = project.run(model, out, args.image, parse_ints(args.index, "--index"), args.steps, args.restarts,
                          args.feature_weight, args.seed, args.split)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    from fastgan.engine.runfolder import write_text_atomic

    write_text_atomic(out / f"{name}.json", json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k not in ("protocol", "per_class")}))
    print(f"wrote {', '.join(res['files'])} and {name}.json to {out}", file=sys.stderr)
    return 0
