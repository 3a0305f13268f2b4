"""The one way to assemble a run: resolved config, state, loader, step spec, step options and stepper.

The trainer, ``fastgan bench`` and the tests all call ``assemble``, so what is benchmarked and tested is
what trains. With a checkpoint it also checks the config against the stored one and restores the state
and every RNG before the fast paths (channels-last, compilation, graph capture) touch it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fastgan.config import Config
from fastgan.data import ImageDataset, make_loader
from fastgan.engine import checkpoint as ckpt_mod
from fastgan.engine import distributed, finetune
from fastgan.engine.fast import FastOptions, Stepper, check_options, resolve_options
from fastgan.engine.graph import GraphStepper
from fastgan.engine.state import TrainState, build_state
from fastgan.engine.step import StepSpec
from fastgan.errors import ConfigError


def resolve_for_dataset(cfg: Config, ds: ImageDataset) -> Config:
    """Fill channels and num_classes from the dataset; refuse settings it cannot satisfy."""
    m = cfg.model
    if m.channels and m.channels != ds.channels:
        raise ConfigError(f"model.channels={m.channels} but dataset '{ds.name}' has {ds.channels}-channel images")
    if m.conditioning != "none" and ds.labels is None:
        raise ConfigError(
            f"conditioning '{m.conditioning}' needs labels but dataset '{ds.name}' has none: "
            "use --set model.conditioning=none"
        )
    if m.conditioning != "none" and not m.num_classes and ds.num_classes < 2:
        names = f" ({', '.join(map(str, ds.class_names))})" if ds.class_names else ""
        raise ConfigError(f"conditioning '{m.conditioning}' needs at least 2 classes but dataset '{ds.name}' has "
                          f"{ds.num_classes}{names}: add classes, or use --set model.conditioning=none")
    k = m.num_classes or ds.num_classes
    if m.num_classes and m.num_classes != ds.num_classes:
        raise ConfigError(f"model.num_classes={m.num_classes} but dataset '{ds.name}' has {ds.num_classes} classes")
    return replace(cfg, model=replace(m, channels=ds.channels, num_classes=k))


def build_stepper(cfg: Config, state: TrainState, spec: StepSpec, loader, opts: FastOptions,
                  device: torch.device, scaler_state: dict | None = None, ddp=None) -> Stepper:
    """The stepper for ``opts`` (checked with ``check_options``) on a built, possibly restored, state;
    ``ddp``: what wraps G and D in DDP in a torchrun process (``distributed.wrapper``)."""
    args = (state, spec, loader, cfg.optim.n_critic, opts, device, scaler_state)
    if opts.cuda_graph:
        return GraphStepper(*args, noise=cfg.loss.instance_noise > 0)
    return Stepper(*args, ddp=ddp)


@dataclass
class Assembled:
    """A run's moving parts, built from one config."""

    cfg: Config  # resolved for the dataset (channels, num_classes filled in)
    dataset: ImageDataset
    device: torch.device
    state: TrainState
    loader: Any
    spec: StepSpec
    options: FastOptions
    stepper: Stepper
    options_line: str  # what the step runs with, in words (printed by --fast)


def assemble(cfg: Config, dataset: ImageDataset, device: torch.device, checkpoint: dict[str, Any] | None = None,
             checkpoint_path: Path | str | None = None, options: FastOptions | None = None) -> Assembled:
    """Build everything a run needs. ``checkpoint``: a loaded checkpoint to continue (its config must agree on
    every key that is not resumable). ``options``: how the step runs; None = from ``cfg.train`` (``--fast``
    included)."""
    cfg = resolve_for_dataset(cfg, dataset)
    if checkpoint is not None:
        diffs = ckpt_mod.config_differences(cfg, ckpt_mod.config_of(checkpoint))
        if diffs:
            raise ConfigError(
                f"cannot resume {checkpoint_path} with a different config ({'; '.join(diffs)}): "
                "drop those overrides or start a new run with --out"
            )
    # under torchrun: this process's slice of every global draw (the whole for one process)
    shard = distributed.shard()
    distributed.check_world(cfg.train.batch_size, device, cfg.model.sync_bn)
    state = build_state(cfg, device)
    finetune.prepare(state, cfg, new_run=checkpoint is None)  # --init-from CKPT, train.freeze_d
    loader = make_loader(dataset, cfg.data, cfg.model.resolution, device, shard)
    spec = replace(StepSpec.from_config(cfg), shard=shard)
    if checkpoint is not None:
        ckpt_mod.restore_state(state, checkpoint, checkpoint_path)
        distributed.restore_rng(checkpoint)
    kind = getattr(loader, "kind", "device")
    if options is None:
        options, line = resolve_options(cfg.train, device, kind)
        if distributed.active() and options.cuda_graph and cfg.train.fast and not cfg.train.cuda_graph:
            options = replace(options, cuda_graph=False)
            line = f"--fast picked {options.describe()} (no CUDA graph under torchrun yet)"
    else:
        check_options(options, device, kind)
        line = f"step: {options.describe()}"
    distributed.check_graph(options.cuda_graph)
    # after the restore: DDP (which broadcasts rank 0's weights), channels-last, compilation and graph capture
    # work on the loaded state
    ddp = distributed.wrapper(state, device, cfg.model.sync_bn)
    stepper = build_stepper(cfg, state, spec, loader, options, device,
                            checkpoint.get("scaler") if checkpoint is not None else None, ddp)
    return Assembled(cfg, dataset, device, state, loader, spec, options, stepper, line)


def stepper_for(cfg: Config, dataset: ImageDataset, device: torch.device,
                options: FastOptions | None = None) -> Stepper:
    """A fresh state seeded by ``train.seed`` and its stepper: ``assemble(...).stepper``."""
    return assemble(cfg, dataset, device, options=options if options is not None else FastOptions.from_config(cfg.train)).stepper
