from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from fastgan.catalog import SOURCES
from fastgan.commands._options import add_device, add_quiet
from fastgan.config import DataConfig, EvalConfig
from fastgan.errors import ConfigError

# fastgan.metrics.classifier.ClassifierConfig's defaults, so that --help never imports torch (a test checks them).
_C = argparse.Namespace(epochs=3, batch_size=128, lr=2e-3, seed=0)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classifier",
        help="train a domain classifier (classifier-FID, classifier-IS, label accuracy)",
        description="A small CNN per dataset. Once trained, the in-training evaluator (eval.every) adds its "
        "metrics: classifier_fid (penultimate features), classifier_is, and for conditional models the "
        "accuracy on samples generated for each label.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan classifier train --data mnist\n"
        "  fastgan classifier eval runs/mnist-cdcgan/checkpoints/step-0010000.pt --samples 5000",
    )
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = s.add_parser("train", help="train and save a classifier for a dataset")
    t.add_argument("--data", required=True, help=f"dataset: {', '.join(sorted(SOURCES))}")
    t.add_argument("--root", default="", help="dataset folder (default: $FASTGAN_DATA/<dataset>)")
    t.add_argument("--out", help="where to save it (default: the cache, where training finds it)")
    t.add_argument("--epochs", type=int, default=_C.epochs, help=f"passes over the train split (default {_C.epochs})")
    t.add_argument("--batch-size", type=int, default=_C.batch_size, help=f"default {_C.batch_size}")
    t.add_argument("--lr", type=float, default=_C.lr, help=f"Adam peak learning rate (default {_C.lr})")
    t.add_argument("--seed", type=int, default=_C.seed, help=f"default {_C.seed}")
    add_device(t)
    add_quiet(t)
    t.set_defaults(run=run_train)
    e = s.add_parser("eval", help="classifier metrics of a checkpoint's samples")
    e.add_argument("checkpoint", help="a checkpoint written by fastgan train")
    e.add_argument("--classifier", default="", help="classifier file (default: the cached one for the dataset)")
    e.add_argument("--samples", type=int, default=EvalConfig.samples, help=f"default {EvalConfig.samples}")
    add_device(e)
    e.set_defaults(run=run_eval)


def run_train(args: argparse.Namespace) -> int:
    if args.epochs < 1 or args.batch_size < 1 or not 0 < args.lr < float("inf"):
        raise ConfigError(f"--epochs and --batch-size must be >= 1 and --lr a finite number > 0 (default {_C.lr}), got "
                          f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr}")
    from fastgan.devices import resolve_device
    from fastgan.metrics.classifier import ClassifierConfig, default_path, save_classifier, train_classifier

    cfg = ClassifierConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    from fastgan.metrics.classifier import RESOLUTION

    # decoded sources (folder, celeba, ...) are cached at a resolution: the classifier's own input size
    data = DataConfig(dataset=args.data, root=args.root, cache_resolution=RESOLUTION)
    model, report = train_classifier(data, cfg, resolve_device(args.device), quiet=args.quiet)
    out = Path(args.out) if args.out else default_path(report["dataset"])
    save_classifier(model, out)
    print(json.dumps({**report, "path": str(out)}))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from fastgan.data import load_dataset
    from fastgan.devices import resolve_device
    from fastgan.engine.checkpoint import load_generator
    from fastgan.metrics.inception_score import SPLITS
    from fastgan.metrics.training import make_evaluator

    if not SPLITS <= args.samples <= 10**7:  # named as --samples here, not as the config's eval.samples
        raise ConfigError(f"--samples {args.samples} is out of range: use {SPLITS} .. 10000000 (the Inception Score "
                          f"takes {SPLITS} splits)")
    device = resolve_device(args.device)
    G, cfg, _ = load_generator(args.checkpoint, device)
    cfg = replace(cfg, eval=replace(cfg.eval, inception=False, samples=args.samples, classifier=args.classifier))
    ds = load_dataset(cfg.data)
    evaluate = make_evaluator(cfg, ds, device)  # a bad classifier is named before anything is printed
    print(f"classifier metrics on {args.samples} samples of {args.checkpoint}", file=sys.stderr)
    print(json.dumps(evaluate(G)))
    return 0
