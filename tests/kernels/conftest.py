"""Kernel tests: Triton's CPU interpreter without a GPU, the compiled kernels on a CUDA machine.

Triton chooses interpreter or compiler once per process, when ``triton.language`` is first imported
(see fastgan/kernels/runtime.py), and ``import torch._dynamo`` imports it too. So without CUDA the root
tests/conftest.py, loaded before any test module is collected, sets TRITON_INTERPRET=1, imports
triton.language and restores the variable at once; ``_interpret`` sets it again around each test of
this folder only. Tests elsewhere never see the
variable (nor do their subprocesses) and behave as if this file had not run: without the variable a CPU
tensor asked for ``impl="triton"`` falls back to torch, loudly, as it would anyway. On a CUDA machine
nothing is set and the same tests run the compiled kernels on the GPU.
"""

from __future__ import annotations

import pytest
import torch

ON_GPU = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread, so OpenMP does not spin against a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def device() -> torch.device:
    """Where the kernels run; a test needing them fails with the reason when they cannot run."""
    pytest.importorskip("triton", reason="the triton extra is not installed (pip install 'fastgan[triton]')")
    from fastgan.kernels import runtime

    dev = torch.device("cuda" if ON_GPU else "cpu")
    reason = runtime.why_not(dev.type, torch.float32, 1, (torch.float32,))
    if reason is not None:
        pytest.fail(f"the Triton kernels cannot run in this process: {reason}")
    return dev


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which fallbacks already warned, so a test can see its one warning."""
    from fastgan import fallback

    monkeypatch.setattr(fallback, "_WARNED", set())
