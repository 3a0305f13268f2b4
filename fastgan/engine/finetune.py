"""Fine-tuning: a NEW run (step 0, fresh optimizers, its own folder) whose G, D and EMA start from another
run's checkpoint (``--init-from CKPT``, ``train.init_from``), and FreezeD (``train.freeze_d=K``).

The new run may train on another dataset at the same resolution and channels, and with another number
of classes: the label layers (the label part of G's input layer, D's label planes, the ACGAN head, a label
embedding) then keep their fresh initialisation, said in one line (with the same classes they are loaded);
every other layer must have the source's shape, or one line names the first that does not. Which layers
depend on the labels is not listed by hand: they are the ones whose shape changes when the model is built
with one class more, and the label entries come last along that axis (labels are concatenated after z and
after the image channels).

FreezeD (Mo et al. 2020, "Freeze the Discriminator"): D's first K blocks (a conv or linear layer and the
norm after it) get ``requires_grad=False``, so no gradient reaches them and Adam never moves them; their
BatchNorm statistics still follow the batches, as in the paper's code.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastgan.config import Config, ModelConfig
from fastgan.engine import checkpoint as ckpt_mod
from fastgan.errors import CheckpointError, ConfigError
from fastgan.models import build_models

# model keys that fix the weights' shapes: a fine-tune takes them from the source run (labels aside)
SHAPE_KEYS = ("arch", "resolution", "z_dim", "g_width", "d_width", "d_norm", "d_mbstd", "label_mode", "embed_dim")


def source_run_dir(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``RUN/checkpoints/step-*.pt``, or ``RUN/best.pt`` beside the run's
    config.json or metrics.jsonl); None for a loose checkpoint file, which belongs to no run."""
    p = Path(checkpoint)
    if p.parent.name == "checkpoints":
        return p.parent.parent
    if any((p.parent / f).is_file() for f in ("config.json", "metrics.jsonl")):
        return p.parent
    return None


def source_model_overrides(checkpoint: str | Path) -> dict[str, Any]:
    """The source run's shape-fixing model settings, as overrides a fine-tune's config starts from."""
    m = ckpt_mod.config_of(ckpt_mod.load_checkpoint(checkpoint)).model
    return {f"model.{k}": getattr(m, k) for k in SHAPE_KEYS}


def check_out(cfg: Config, run_dir: Path) -> None:
    """A fine-tune never writes into the run it starts from (nor into a folder inside it)."""
    if not cfg.train.init_from:
        return
    if not Path(cfg.train.init_from).is_file():
        raise CheckpointError(f"--init-from {cfg.train.init_from} does not exist or is not a file: pass a checkpoint "
                              "of the run to start from (RUN/checkpoints/step-*.pt or RUN/best.pt)")
    src = source_run_dir(cfg.train.init_from)
    out = Path(run_dir).resolve()
    if src is not None and (out == src.resolve() or src.resolve() in out.parents):
        where = "" if out == src.resolve() else "inside "
        raise ConfigError(f"--out {run_dir} is {where}the run folder of --init-from {cfg.train.init_from}: a fine-tune "
                          "starts a new run and never writes into its source; pick another --out")


def _label_axes(m: ModelConfig) -> dict[str, tuple[int, int]]:
    """``{"G.key"/"D.key": (axis, entries before the labels)}`` for every label-dependent tensor of ``m``."""
    k = m.label_classes
    if not k:
        return {}
    shapes = {}
    for tag, a, b in zip("GD", build_models(m), build_models(replace(m, num_classes=k + 1))):
        sa, sb = a.state_dict(), b.state_dict()
        for key, t in sa.items():
            if key in sb and sb[key].shape != t.shape:
                axis = next(i for i, (x, y) in enumerate(zip(t.shape, sb[key].shape)) if x != y)
                shapes[f"{tag}.{key}"] = (axis, t.shape[axis] - k)
    return shapes


@torch.no_grad()
def _load(tag: str, model: nn.Module, src: dict[str, torch.Tensor], labels: dict[str, tuple[int, int]],
          path: str) -> list[str]:
    """Copy ``src`` into ``model``; label layers get their non-label part. Returns the re-initialised names."""
    def incompatible(name: str, s: torch.Tensor | None, t: torch.Tensor) -> ConfigError:
        have = "is missing" if s is None else f"is {tuple(s.shape)}"
        return ConfigError(
            f"cannot fine-tune from {path}: layer {name} {have} in the checkpoint but {tuple(t.shape)} in this "
            "model (arch, resolution, channels, z_dim, widths, d_norm and d_mbstd must match the source run's)")

    fresh = []
    for key, t in model.state_dict().items():
        name, s = f"{tag}.{key}", src.get(key)
        if name in labels and (s is None or s.shape != t.shape):  # same classes: the label layers are kept
            axis, base = labels[name]
            if s is not None:  # the part before the labels (z, the image channels) must fit and is loaded
                if s.dim() != t.dim() or s.shape[axis] < base or any(
                        x != y for i, (x, y) in enumerate(zip(s.shape, t.shape)) if i != axis):
                    raise incompatible(name, s, t)
                t.narrow(axis, 0, base).copy_(s.narrow(axis, 0, base))
            fresh.append(name)
            continue
        if s is None or s.shape != t.shape:
            raise incompatible(name, s, t)
        t.copy_(s)
    return fresh


def _unlabelled(tag: str, sd: dict[str, torch.Tensor], src_labels: dict[str, tuple[int, int]],
                labels: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The source's label layers that this model lacks, cut to their non-label part (dropped if that is
    empty: an ACGAN head when fine-tuning into a concat model, say)."""
    out = {}
    for k, v in sd.items():
        name = f"{tag}.{k}"
        if name in src_labels and name not in labels:
            axis, base = src_labels[name]
            if base == 0:
                continue
            v = v.narrow(axis, 0, base)
        out[k] = v
    return out


def init_from(state, cfg: Config, path: str | Path) -> str:
    """Load G, D and the EMA of ``path`` into a freshly built ``state``; a one-line account of what happened."""
    ckpt = ckpt_mod.load_checkpoint(path)
    models = ckpt.get("models") or {}
    if not isinstance(models.get("G"), dict) or not isinstance(models.get("D"), dict):
        raise ConfigError(f"--init-from {path} has no G and D weights: pass a checkpoint written by `fastgan train`")
    src_cfg = ckpt_mod.config_of(ckpt)
    labels, src_labels = _label_axes(cfg.model), _label_axes(src_cfg.model)
    fresh = _load("G", state.G, _unlabelled("G", models["G"], src_labels, labels), labels, str(path))
    fresh += _load("D", state.D, _unlabelled("D", models["D"], src_labels, labels), labels, str(path))
    if state.G_ema is not None:
        ema = models.get("G_ema") or models["G"]
        _load("G", state.G_ema, _unlabelled("G", ema, src_labels, labels), labels, str(path))
    line = f"fine-tuning from {path} (step {int(ckpt.get('step', 0))} of {src_cfg.preset}): a new run from step 0"
    if fresh:
        k, k_src = cfg.model.label_classes, src_cfg.model.label_classes
        line += (f"; label layers re-initialised for {k} classes (the source had {k_src or 'none'}): "
                 + ", ".join(fresh))
    return line


def freeze_d(D: nn.Module, k: int) -> int:
    """FreezeD: ``requires_grad=False`` on D's first ``k`` blocks; returns how many blocks D has."""
    blocks: list[list[nn.Parameter]] = []
    for m in D.features:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            blocks.append([])
        if blocks:
            blocks[-1].extend(m.parameters(recurse=False))
    if k > len(blocks):
        raise ConfigError(f"bad value for train.freeze_d: {k} (this D has {len(blocks)} blocks before its head)")
    for p in (p for b in blocks[:k] for p in b):
        p.requires_grad_(False)
    return len(blocks)


def prepare(state, cfg: Config, new_run: bool) -> None:
    """``assemble``'s hook, on a freshly built state: --init-from (a new run only; a resume restores its own
    checkpoint instead) and train.freeze_d (every time, so a resumed fine-tune stays frozen)."""
    if cfg.train.init_from and new_run:
        print(f"fastgan: {init_from(state, cfg, cfg.train.init_from)}", file=sys.stderr)
    if cfg.train.freeze_d:
        freeze_d(state.D, cfg.train.freeze_d)
