from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fastgan.commands._options import add_device, add_quiet, config_help
from fastgan.config import (
    DEFAULT_PRESET,
    PRESETS,
    apply_overrides,
    choices,
    describe_keys,
    load_config,
    load_config_file,
    parse_set_args,
    validate,
)
from fastgan.errors import ConfigError
from fastgan.outputs import check_output_dir

_SHORTCUTS = {"steps": "train.steps", "batch_size": "train.batch_size", "out": "train.out",
              "device": "train.device", "seed": "train.seed", "kernels": "model.kernels",
              "compile": "train.compile", "amp": "train.amp", "channels_last": "train.channels_last",
              "cuda_graph": "train.cuda_graph", "fast": "train.fast", "eval_every": "eval.every",
              "patience": "eval.patience", "init_from": "train.init_from"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a GAN from a preset",
        description="Train a GAN. With no arguments: a conditional DCGAN on scikit-learn's bundled digits.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan train\n  fastgan train mnist-cdcgan --steps 5000 --out runs/mnist\n"
        "  fastgan train fashion-wgan-gp --set optim.n_critic=3 --dry-run\n"
        "  fastgan train --out runs/mnist --resume auto --steps 8000\n"
        "  fastgan train mnist-dcgan --fast            # compile + bf16 + channels-last + CUDA graph on a GPU\n"
        "  fastgan train --config exp.toml --tensorboard\n"
        "  fastgan train mnist-cdcgan --init-from runs/digits-cdcgan/checkpoints/step-0001500.pt --out runs/ft",
    )
    p.add_argument("preset", nargs="?", help=f"preset name (default {DEFAULT_PRESET}; `fastgan presets` lists them)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.g_lr=1e-4 (repeatable)")
    p.add_argument("--steps", type=int, help=config_help("G updates", "train.steps"))
    p.add_argument("--batch-size", type=int, help=config_help("batch size", "train.batch_size"))
    p.add_argument("--out", help=config_help("run folder; \"\" = runs/<preset>", "train.out"))
    add_device(p, "train.device")
    p.add_argument("--seed", type=int, help=config_help("random seed", "train.seed"))
    p.add_argument("--kernels", choices=choices("model.kernels"),
                   help=config_help("BatchNorm+activation and gradient-penalty kernels", "model.kernels"))
    fast = p.add_argument_group("fast paths (same math; every combination runs or is refused with the reason)")
    fast.add_argument("--compile", action="store_true", default=None, help=config_help("torch.compile G and D", "train.compile"))
    fast.add_argument("--amp", nargs="?", const="bf16", choices=choices("train.amp"),
                      help=config_help("autocast: bf16 (the default of a bare --amp) without scaler, fp16 with "
                                       "checkpointed gradient scalers", "train.amp"))
    fast.add_argument("--channels-last", action="store_true", default=None,
                      help=config_help("NHWC weights and activations", "train.channels_last"))
    fast.add_argument("--cuda-graph", action="store_true", default=None,
                      help=config_help("capture the whole iteration as one CUDA graph and replay it; CUDA only",
                                       "train.cuda_graph"))
    fast.add_argument("--fast", action="store_true", default=None,
                      help=config_help("the best of the above that this device supports; prints what it picked",
                                       "train.fast"))
    p.add_argument("--eval-every", type=int, metavar="N",
                   help=config_help("compute FID (and classifier metrics) every N steps, keep best.pt; 0 = off",
                                    "eval.every"))
    p.add_argument("--patience", type=int, metavar="K",
                   help=config_help("stop after K evaluations without improvement; 0 = never", "eval.patience"))
    p.add_argument("--resume", metavar="auto|PATH", help="continue a run from its newest checkpoint or from PATH")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--keys", action="store_true",
                   help="list every config key with its default, allowed values and whether a resume may change it")
    add_quiet(p)
    p.add_argument("--nproc-per-node", type=int, metavar="N",
                   help="train on N processes of this machine (one per GPU): runs `python -m torch.distributed.run "
                   "--standalone --nproc_per_node N -m fastgan train ...`; train.batch_size is the global batch")
    eco = p.add_argument_group("config files, fine-tuning, logging")
    eco.add_argument("--config", metavar="FILE",
                     help="start from a run's config.json or a TOML file with the same sections ([model], [train], "
                     "...); --set and flags still override it")
    eco.add_argument("--init-from", metavar="CKPT",
                     help="fine-tune: a NEW run (step 0, fresh optimizers) from another run's G, D and EMA; the "
                     "model's shape comes from it (train.init_from; see also train.freeze_d)")
    eco.add_argument("--tensorboard", action="store_true",
                     help="also write TensorBoard events to RUN_DIR/tb (train.loggers=jsonl,tensorboard; "
                     "pip install 'fastgan[tensorboard]')")
    p.set_defaults(run=run)


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    ov = parse_set_args(args.sets)
    for attr, key in _SHORTCUTS.items():
        if getattr(args, attr) is not None:
            ov[key] = str(getattr(args, attr))
    if args.tensorboard:
        ov["train.loggers"] = "jsonl,tensorboard"
    return ov


def resolve_config(args: argparse.Namespace):
    """Preset + overrides; when resuming without a preset, the checkpoint's own config + overrides.
    Lowest to highest: preset, the model shape of --init-from's run, --config FILE, --set, flags."""
    file = load_config_file(args.config) if args.config else None
    ov = {**(file.overrides if file else {}), **_overrides(args)}
    if args.init_from and args.resume:
        raise ConfigError("--init-from starts a new run and --resume continues one: drop one of them")
    if args.resume and args.preset is None:
        # torch is imported only when there is a checkpoint to read
        from fastgan.engine import checkpoint as ckpt_mod
        from fastgan.engine.loop import find_resume

        if args.resume == "auto":
            out = ov.get("train.out") or str(Path("runs") / DEFAULT_PRESET)
            path = find_resume("auto", Path(out))
        else:
            path = find_resume(args.resume, Path())
        if path is not None:
            cfg = apply_overrides(ckpt_mod.config_of(ckpt_mod.load_checkpoint(path)), ov)
            validate(cfg)
            return cfg
    if args.init_from:
        from fastgan.engine.finetune import source_model_overrides

        ov = {**source_model_overrides(args.init_from), **ov}
    try:
        return load_config(args.preset or (file.preset if file else None), ov)
    except ConfigError as e:
        raise file.annotate(e) if file else e from None


def run(args: argparse.Namespace) -> int:
    if args.keys:
        print("\n".join(describe_keys()))
        return 0
    if args.preset is not None and args.preset not in PRESETS:
        load_config(args.preset)  # raises the one-line error
    cfg = resolve_config(args)
    if args.dry_run:
        from fastgan.engine.preview import resolved  # channels, classes and run folder as the run would fill them

        print(resolved(cfg, args.resume).to_json())
        return 0
    from fastgan.engine.loop import run_dir_of_checkpoint

    # a bad --out costs one line, not a run; without --out a resumed checkpoint's own run folder is written
    resumed = args.resume and args.resume != "auto"
    check_output_dir(cfg.train.out or (run_dir_of_checkpoint(Path(args.resume)) if resumed else "runs"),
                     "the run folder (--out)")
    if cfg.data.cache_dir:  # caches and reference statistics are written there, maybe minutes in
        check_output_dir(cfg.data.cache_dir, "data.cache_dir")
    from fastgan.engine import distributed

    if args.nproc_per_node is not None:
        return distributed.launch(cfg, args.nproc_per_node, args.resume, args.quiet)
    from fastgan.engine.loop import train  # torch only now: --help and --keys stay fast
    from fastgan.engine.runfolder import TrainingStopped

    try:
        result = train(cfg, resume=args.resume, quiet=args.quiet)
    except TrainingStopped as e:  # SIGTERM/SIGINT: checkpoint saved; 143/130 as a shell reports the signal
        print(f"fastgan: {e}", file=sys.stderr)
        return e.exit_code
    m = result.last_metrics
    summary = {"run_dir": str(result.run_dir), "step": result.step, "seconds": round(result.seconds, 1),
               "checkpoint": str(result.checkpoint), **{k: m[k] for k in ("d_loss", "g_loss") if k in m}}
    if distributed.is_main():  # torchrun: one summary, from rank 0
        print(json.dumps(summary))
    return 0
