"""Checkpoints: one self-describing file per snapshot, written atomically.

A checkpoint is data, never code: it holds only tensors, numbers, strings, lists
and dicts, and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import random
import re
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastgan import __version__
from fastgan.config import RESUMABLE_CHANGES, Config
from fastgan.engine.ckpt_check import check_generator, validate_checkpoint
from fastgan.engine.runfolder import move_aside, write_atomic
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
    """Serialize in memory, then write a temp file in the same folder, fsync it and rename it over ``path``
    (``runfolder.write_atomic``). Serializing first gives the exact size a full disk would have needed and
    keeps torch's zip writer away from a failing file (it reports ENOSPC as "unexpected pos")."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(Path(path), buf.getbuffer())


def _reason(e: BaseException) -> str:
    """The line of a loader's error that says what is wrong, without torch's advice (at most ~120 characters)."""
    if isinstance(e, EOFError):
        return "the file ends early"
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # torch's refusal of a bad opcode is a paragraph of advice; its reason line is the one that helps
    first = next((ln for ln in lines if ln.startswith("Unsupported")), lines[0] if lines else "")
    # the zip reader's reason is followed by advice ("This is an internal miniz error. If you are seeing ...")
    first = re.split(r"\. (?:This is an internal|If you are seeing|In PyTorch)", first)[0].rstrip(".")
    return textwrap.shorten(first, 120, placeholder=" ...") if first else type(e).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a fastgan checkpoint; a clean CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():  # a folder, FIFO or device is never opened
        what = "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}: check the path (run folders keep them in checkpoints/)")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({e.strerror}): check its permissions") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes: truncated or corrupt): use an earlier checkpoint "
                              "of the run")
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip; torch before 1.6 a bare pickle
        raise CheckpointError(f"{path} is not a fastgan checkpoint: it is neither a zip nor a pickle file (another "
                              "kind of file, or truncated or corrupt): pass a checkpoint written by `fastgan train`")
    try:
        with warnings.catch_warnings():  # torch warns about weights_only on refusals: the one line below says it
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the unpickler or zip reader raises on a damaged file
        msg = str(e).strip()
        if "Weights only load failed" in msg and re.search(r"unsupported global", msg, re.IGNORECASE):
            raise CheckpointError(f"{path} is not a fastgan checkpoint: loading it would execute code (it holds "
                                  "pickled Python objects), so fastgan refuses") from None
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({_reason(e)}): use an earlier checkpoint of the run"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fastgan checkpoint: pass a file written by `fastgan train`")
    version = ckpt.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer fastgan (format {version!r:.20}): upgrade fastgan to read it"
        )
    validate_checkpoint(ckpt, path)
    return ckpt


def config_of(ckpt: dict[str, Any]) -> Config:
    return Config.from_dict(ckpt["config"])


def config_differences(a: Config, b: Config, resumable: bool = False) -> list[str]:
    """Keys whose values differ between two configs (``b`` -> ``a``): those a resume may not change, or with
    ``resumable`` those it may (what a resumed run then does differently)."""
    da, db = a.to_dict(), b.to_dict()
    diffs = []
    for sec in ("model", "data", "loss", "optim", "train", "eval"):
        for k in da[sec]:
            key = f"{sec}.{k}"
            if (key in RESUMABLE_CHANGES) == resumable and da[sec][k] != db.get(sec, {}).get(k):
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


def is_readable(path: Path) -> bool:
    try:
        load_checkpoint(path)
        return True
    except CheckpointError:
        return False


def prune_checkpoints(run_dir: Path, keep: int, readable: Callable[[Path], bool] = is_readable) -> list[Path]:
    """Keep the newest ``keep`` readable step checkpoints, delete older ones. An unreadable one never counts as
    kept (else a truncated step-9 would get the fresh step-8 deleted): it is renamed to ``*.corrupt``.
    Returns the renamed files."""
    kept, moved = 0, []
    for p in reversed(list_checkpoints(run_dir)):
        if not readable(p):
            moved.append(move_aside(p))
        elif kept < keep:
            kept += 1
        else:
            p.unlink(missing_ok=True)
    return moved


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
        # load_state_dict brings back the stored learning rates; the state was built from the run's current
        # config, and a resumed run may lower them (the divergence advice): keep the config's.
        for opt, key in ((state.opt_g, "G"), (state.opt_d, "D")):
            lrs = [g["lr"] for g in opt.param_groups]
            opt.load_state_dict(ckpt["optim"][key])
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr
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
    G = G.to(device).eval()
    check_generator(G, path, device)
    return G, cfg, ckpt
