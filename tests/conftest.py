"""Shared fixtures. Real data comes from $FASTGAN_DATA, falling back to ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def _import_triton_interpreted() -> None:
    """Without CUDA, make Triton's once-per-process mode the interpreter (tests/kernels runs the kernels
    on CPU tensors with it). This must happen before anything imports torch._dynamo, which imports
    triton.language; the variable itself is restored at once, so no other test sees it."""
    prev = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    except ImportError:
        pass  # the triton extra is optional: tests/kernels skips
    finally:
        if prev is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = prev


if not torch.cuda.is_available():
    _import_triton_interpreted()


def pytest_collection_modifyitems(items):
    """`pytest -m gpu` (bench/gpu_proof.py) selects every test that needs or exercises a CUDA device: those
    marked gpu, those skipped without one (the skip reason names CUDA or a GPU) and the Triton kernel tests."""
    for item in items:
        reasons = " ".join(str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
        if "CUDA" in reasons or "GPU" in reasons or item.nodeid.startswith("tests/kernels/"):
            item.add_marker(pytest.mark.gpu)


def shared_data_dir() -> Path:
    return Path(os.environ.get("FASTGAN_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder; tests that need it skip with a reason when it is absent."""
    d = shared_data_dir()
    if not (d / "mnist").is_dir():
        pytest.skip(f"offline data not found at {d} (set FASTGAN_DATA to the folder holding mnist/)")
    return d


# The tests' tiny model: a digits run of a few steps takes seconds on a 2-core CPU.
TINY = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
        "train.grid_size": "20"}


@pytest.fixture(scope="session")
def tiny() -> Mapping[str, str]:
    """The tiny model as ``--set`` overrides, read-only (``{**tiny, ...}`` to extend it); session-scoped so
    session fixtures that train a run can use it too."""
    return MappingProxyType(TINY)


@pytest.fixture(scope="session")
def tiny_argv() -> tuple[str, ...]:
    """The tiny model as ``fastgan train`` arguments."""
    return tuple(a for k, v in TINY.items() for a in ("--set", f"{k}={v}"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_argv) -> Path:
    """A finished 2-step `fastgan train` run of the tiny conditional digits model, one per test module (tests that
    change it copy it first); its checkpoint is ``tiny_run / "checkpoints" / "step-0000002.pt"``."""
    from fastgan.cli import main

    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--steps", "2", "--out", str(out), "--quiet", *tiny_argv]) == 0
    return out


@pytest.fixture
def pics(tmp_path) -> Path:
    """An image folder of four random 32 px RGB PNGs."""
    from PIL import Image

    d = tmp_path / "pics"
    d.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def flat_tensors(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in nested dicts / lists / modules, keyed by its path (a checkpoint, a state_dict)."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return {k: t for key, v in items for k, t in flat_tensors(v, f"{prefix}.{key}" if prefix else str(key)).items()}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference over matching tensors, relative to the reference ``b``'s scale (1e-3 floor)."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) / max(float(b[k].float().abs().max()), 1e-3)
               for k in b if b[k].numel())


@pytest.fixture(scope="session")
def weight_diff():
    """Weight comparisons: ``weight_diff.flat(obj)``, ``.max_rel_diff(a, b)``, ``.mismatched(a, b)``."""

    class Weights:
        flat = staticmethod(flat_tensors)
        max_rel_diff = staticmethod(max_rel_diff)

        @staticmethod
        def mismatched(a, b) -> list[str]:
            """Keys whose tensors differ in any bit (resume and replay exactness)."""
            fa, fb = flat_tensors(a), flat_tensors(b)
            assert fa.keys() == fb.keys(), sorted(set(fa) ^ set(fb))
            return [k for k in fa if not torch.equal(fa[k], fb[k])]

    return Weights


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Each test runs in its own folder, so default run folders never collide, from the same seed, and sees
    every fast path's fallback warning afresh (warn-once state would otherwise depend on the test order)."""
    from fastgan import fallback

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    fallback.reset()



# -- are a conditional digits generator's samples the digits they were asked for? ------------
# A scikit-learn SVM trained on the bundled 8x8 digits labels generated samples, downsampled
# to 8x8 by area averaging; the score is the fraction labelled as the class asked for.


def digit_svm():
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    d = load_digits()
    return SVC(gamma=0.001, C=10.0).fit(d.data, d.target)


@torch.no_grad()
def _conditional_accuracy(G: torch.nn.Module, per_class: int = 50, seed: int = 1) -> float:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(per_class)
    z = torch.randn(len(y), G.z_dim, generator=gen)
    was = G.training
    G.eval()
    x = G(z, y)
    G.train(was)
    x8 = F.adaptive_avg_pool2d(x.float(), 8)  # area downsampling to the digits' 8x8
    feats = ((x8.clamp(-1, 1) + 1) * 8.0).flatten(1).numpy()  # [-1, 1] -> the digits' 0..16 scale
    pred = digit_svm().predict(feats)
    return float((pred == y.numpy()).mean())


@pytest.fixture(scope="session")
def digit_accuracy():
    return _conditional_accuracy
