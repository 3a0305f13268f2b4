"""``fastgan train --dry-run``: the config the run would use, with the values the run fills in (channels, classes,
run folder) resolved the way the run resolves them, without building models or loading images where avoidable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from fastgan import catalog
from fastgan.config import Config
from fastgan.engine.build import resolve_for_dataset
from fastgan.engine.loop import _default_out, find_resume, run_dir_of_checkpoint


def run_dir(cfg: Config, resume: str | None) -> Path:
    """The folder ``fastgan.engine.loop.train`` would write to (tests/test_first_hour.py checks they agree)."""
    if cfg.train.out:
        return Path(cfg.train.out)
    if resume and resume != "auto":
        return run_dir_of_checkpoint(find_resume(resume, Path()))
    return Path("runs") / cfg.preset if resume else _default_out(cfg.preset)


def dataset_shape(cfg: Config):
    """What resolve_for_dataset reads of a dataset: from the catalogue when the name fixes it (digits, MNIST,
    CIFAR...: no images loaded), else from the loaded dataset (folders, LSUN categories, prepared sets)."""
    shape = catalog.fixed_shape(cfg.data.dataset, cfg.data)
    if shape is None:
        from fastgan.data import load_dataset

        return load_dataset(cfg.data)
    channels, classes = shape
    return SimpleNamespace(name=cfg.data.dataset, channels=channels, num_classes=classes,
                           labels=None if classes == 0 else True)


def resolved(cfg: Config, resume: str | None = None) -> Config:
    cfg = resolve_for_dataset(cfg, dataset_shape(cfg))
    return replace(cfg, train=replace(cfg.train, out=str(run_dir(cfg, resume))))
