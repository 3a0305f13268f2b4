"""Malformed checkpoints, made from one real one: keys dropped at every level, types swapped, tensor shapes and
dtypes changed, files truncated at random offsets, random bytes. Each goes through `sample`, `export`, `fid` and
`train --resume` in-process; every one must end in exit 2 and exactly one line `fastgan: error: ...`.

Some edits are not damage, by design, and are left out: a config key that is missing takes its default (so
checkpoints of older versions load), the optional keys (fastgan_version, format_version, dataset, scaler, best)
may be absent, an Adam state may lack the entry of a parameter that never stepped, and torch fills in Adam's
flags. The quick version runs 32 cases; the `slow` one 300 of the ~1700 variants through all four commands
(`load_checkpoint` validates every variant the same way whichever command asks, and a script that fed all of them
to ``load_generator`` found no exception other than a CheckpointError).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastgan.cli import main

TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16", "--batch-size", "16",
        "--set", "train.grid_size=20", "--set", "optim.ema_decay=0.9", "--quiet"]
COMMANDS = ("sample", "export", "fid", "train")
OPTIONAL = {"fastgan_version", "format_version", "dataset", "scaler", "best"}
NULLABLE = {("dataset",), ("scaler",), ("best",), ("best", "value"), ("best", "step")}
FLAGS = {"amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay"}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, dict, Path]:
    """(checkpoint path, its payload, a folder of 4 images) — a real 2-step run of the tiny digits model."""
    from PIL import Image

    base = tmp_path_factory.mktemp("fuzz")
    assert main(["train", "--steps", "2", "--out", str(base / "run"), *TINY]) == 0
    pics = base / "pics"
    pics.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(pics / f"{i}.png")
    path = base / "run" / "checkpoints" / "step-0000002.pt"
    return path, torch.load(path, weights_only=True), pics


# -- variants ------------------------------------------------------------------------------------------

def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts (and lists of dicts, like Adam's param_groups)."""
    out = []
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        items = list(enumerate(obj))
    else:
        return out
    for k, v in items:
        out.append((*prefix, k))
        out += paths(v, (*prefix, k))
    return out


def get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def droppable(p: tuple) -> bool:
    if p[0] in OPTIONAL or (p[0] == "config" and len(p) > 2) or p == ("config", "preset"):
        return False
    if len(p) == 4 and p[0] == "optim" and p[2] == "state":
        return False  # a parameter that never stepped has no Adam state
    return not (p[0] == "optim" and p[-1] in FLAGS)


def swaps(value: Any, p: tuple) -> list[Any]:
    """Values of other types than ``value`` (never a harmless one: None where None is allowed, str for str)."""
    out = [torch.zeros(3), {"x": 1}, [1, "a"], "oops", None]
    if isinstance(value, str):
        out.remove("oops")
    if isinstance(value, dict):
        out.remove({"x": 1})
    if isinstance(value, list):
        out.remove([1, "a"])
    if p in NULLABLE or (p[0] == "optim" and p[-1] in FLAGS) or value is None:
        out.remove(None)
    return out


def other_shape(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros((t.shape[0] + 1, *t.shape[1:]) if t.dim() else (2,), dtype=t.dtype)


def other_dtype(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int64) if t.is_floating_point() else t.to(torch.float32)


def variants(payload: dict, raw: bytes, rng: random.Random) -> list[tuple[str, Any]]:
    """(description, payload dict or raw bytes) for every kind of damage."""
    out: list[tuple[str, Any]] = []
    for p in paths(payload):
        v = get(payload, p)
        if droppable(p):
            out.append((f"drop {p}", ("drop", p, None)))
        for s in swaps(v, p):
            out.append((f"swap {p} -> {type(s).__name__}", ("set", p, s)))
        if isinstance(v, torch.Tensor):
            out.append((f"shape {p}", ("set", p, other_shape(v))))
            out.append((f"dtype {p}", ("set", p, other_dtype(v))))
    for _ in range(40):
        cut = rng.randrange(0, len(raw))
        out.append((f"truncated at {cut} of {len(raw)}", raw[:cut]))
    for n in (0, 1, 7, 512, 65536):
        out.append((f"{n} random bytes", rng.randbytes(n)))
    return out


def materialise(payload: dict, change: Any, dest: Path) -> Path:
    if isinstance(change, bytes):
        dest.write_bytes(change)
        return dest
    op, p, value = change
    c = copy.deepcopy(payload)
    parent = get(c, p[:-1])
    if op == "drop":
        del parent[p[-1]]
    else:
        parent[p[-1]] = value
    torch.save(c, dest)
    return dest


def argv(cmd: str, path: Path, tmp: Path, pics: Path) -> list[str]:
    a = {"sample": ["sample", path, "--out", tmp / "s.png", "-n", 10],
         "export": ["export", path, "--onnx", tmp / "g.onnx"],
         "fid": ["fid", path, pics, "--samples", 4, "--no-download", "--quiet"],  # fails before Inception loads
         "train": ["train", "--resume", path, "--steps", 4, "--out", tmp / "resumed", "--quiet"]}[cmd]
    return [str(x) for x in a]


def run_case(capsys, real, tmp_path: Path, name: str, change: Any, cmd: str) -> str | None:
    """None when the case behaved; else what went wrong."""
    _, payload, pics = real
    path = materialise(payload, change, tmp_path / "bad.pt")
    rc = main(argv(cmd, path, tmp_path, pics))
    err = capsys.readouterr().err
    ok = rc == 2 and err.startswith("fastgan: error: ") and err.count("\n") == 1 and "internal error" not in err
    written = [p.name for p in (tmp_path / "s.png", tmp_path / "g.onnx", tmp_path / "resumed") if p.exists()]
    if ok and not written:
        return None
    return f"{cmd} | {name}: rc={rc} wrote={written} stderr={err[-300:]!r}"


def cases(real, n: int, seed: int, every_command: bool = False) -> list[tuple[str, Any, str]]:
    ckpt, payload, _ = real
    rng = random.Random(seed)
    vs = variants(payload, ckpt.read_bytes(), rng)
    commands = [c for c in COMMANDS if c != "export" or _onnx()]
    picked = rng.sample(vs, n)
    if every_command:
        return [(name, ch, c) for name, ch in picked for c in commands]
    return [(name, ch, commands[i % len(commands)]) for i, (name, ch) in enumerate(picked)]


def _onnx() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def test_fuzz_quick(real, tmp_path, capsys):
    failures = [f for name, ch, cmd in cases(real, 32, seed=11) if (f := run_case(capsys, real, tmp_path, name, ch, cmd))]
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_fuzz_300_variants_through_every_command(real, tmp_path, capsys):
    picked = cases(real, 300, seed=12, every_command=True)
    failures = [f for name, ch, cmd in picked if (f := run_case(capsys, real, tmp_path, name, ch, cmd))]
    assert not failures, f"{len(failures)} of {len(picked)} cases failed:\n" + "\n".join(failures[:40])


def test_the_variants_cover_every_kind_of_damage(real):
    """A guard on the generator itself: the fuzz would pass vacuously if it made few or harmless variants."""
    path, payload, _ = real
    vs = variants(payload, path.read_bytes(), random.Random(0))
    kinds = {name.split(" ")[0] for name, _ in vs}
    assert {"drop", "swap", "shape", "dtype", "truncated"} <= kinds and len(vs) > 300, (kinds, len(vs))
    assert any(name.startswith("drop ('models', 'G',") for name, _ in vs)
    assert any(name.startswith("shape ('optim', 'D', 'state'") for name, _ in vs)
