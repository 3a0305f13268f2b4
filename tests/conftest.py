"""Shared fixtures. Real data comes from $FASTGAN_DATA, falling back to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

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


def shared_data_dir() -> Path:
    return Path(os.environ.get("FASTGAN_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder; tests that need it skip with a reason when it is absent."""
    d = shared_data_dir()
    if not (d / "mnist").is_dir():
        pytest.skip(f"offline data not found at {d} (set FASTGAN_DATA to the folder holding mnist/)")
    return d


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Each test runs in its own folder, so default run folders never collide."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)



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
