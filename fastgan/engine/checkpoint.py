"""Checkpoints: one self-describing file per snapshot, written atomically.

A checkpoint is data, never code: it holds only tensors, numbers, strings, lists
and dicts, and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastgan import __version__
from fastgan.config import RESUMABLE_CHANGES, Config
from fastgan.errors import CheckpointError
from fastgan.models import build_generator

FORMAT = "fastgan.checkpoint"
FORMAT_VERSION = 1
_STEP_RE = re.compile(r"step-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"][: torch.cuda.device_count()])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync it, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is as readable as any file
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a fastgan checkpoint; a clean CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path (run folders keep them in checkpoints/)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({first[:120]}): use an earlier checkpoint of the run"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastgan checkpoint: pass a file written by `fastgan train`")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer fastgan (format {ckpt['format_version']}): upgrade fastgan to read it"
        )
    return ckpt


def config_of(ckpt: dict[str, Any]) -> Config:
    return Config.from_dict(ckpt["config"])


def config_differences(a: Config, b: Config) -> list[str]:
    """Keys whose values differ between two configs, ignoring bookkeeping keys."""
    da, db = a.to_dict(), b.to_dict()
    diffs = []
    for sec in ("model", "data", "loss", "optim", "train", "eval"):
        for k in da[sec]:
            key = f"{sec}.{k}"
            if key not in RESUMABLE_CHANGES and da[sec][k] != db.get(sec, {}).get(k):
                diffs.append(f"{key}: {db.get(sec, {}).get(k)!r} -> {da[sec][k]!r}")
    return diffs


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:07d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for p in list_checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


def make_payload(state, cfg: Config, dataset_info: dict[str, Any], extra: dict[str, Any] | None = None,
                 scaler: dict[str, Any] | None = None) -> dict:
    """``scaler``: the fp16 gradient scalers' state (``Stepper.scaler_state()``), None without fp16."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastgan_version": __version__,
        "config": cfg.to_dict(),
        "dataset": dataset_info,
        "step": state.step,
        "models": {
            "G": state.G.state_dict(),
            "D": state.D.state_dict(),
            "G_ema": state.G_ema.state_dict() if state.G_ema is not None else None,
        },
        "optim": {"G": state.opt_g.state_dict(), "D": state.opt_d.state_dict()},
        "scaler": scaler,
        "rng": rng_state(),
        **(extra or {}),
    }


def describe_load_error(e: Exception) -> str:
    """One line out of load_state_dict's multi-line report: its first concrete problem."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))), lines[0])
    return detail[:160]


def restore_state(state, ckpt: dict[str, Any], path: Path) -> None:
    """Load models and optimizers from a checkpoint into a freshly built state."""
    try:
        state.G.load_state_dict(ckpt["models"]["G"])
        state.D.load_state_dict(ckpt["models"]["D"])
        if state.G_ema is not None:
            state.G_ema.load_state_dict(ckpt["models"]["G_ema"] or ckpt["models"]["G"])
        state.opt_g.load_state_dict(ckpt["optim"]["G"])
        state.opt_d.load_state_dict(ckpt["optim"]["D"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({describe_load_error(e)}): it is from another model"
        ) from None
    state.step = int(ckpt["step"])


def load_generator(path: str | Path, device: torch.device, use_ema: bool = True):
    """(G in eval mode, its config, the checkpoint) from a fastgan checkpoint."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt.get("models"), dict) or not isinstance(ckpt["models"].get("G"), dict):
        raise CheckpointError(f"{path} is a fastgan file without generator weights: pass a checkpoint of `fastgan train`")
    cfg = config_of(ckpt)
    G = build_generator(cfg.model)
    sd = ckpt["models"]["G_ema"] if use_ema and ckpt["models"].get("G_ema") is not None else ckpt["models"]["G"]
    try:
        G.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} holds a generator that does not match its config ({describe_load_error(e)}): "
            "it was altered or comes from another model"
        ) from None
    return G.to(device).eval(), cfg, ckpt
