"""What the Triton kernels share: the import, the interpreter mode, the dispatch rule and loud fallback.

Triton fixes its mode once per process, when ``triton.language`` is first imported: with
``TRITON_INTERPRET=1`` set then, its ``@jit`` library functions (``tl.sum``, ``tl.zeros``) are built for the
CPU interpreter, otherwise for a GPU compiler. (``import torch._dynamo`` imports it too.) So kernels here
are built for whichever mode that import chose (``jit``), and CPU tensors run interpreted only when that
mode is the interpreter AND ``TRITON_INTERPRET=1`` is set now. fastgan's models and losses import the
kernel modules inside the functions that use them, so importing fastgan never imports Triton.
"""

from __future__ import annotations

import functools
import os

import torch

from fastgan import fallback
from fastgan.fallback import FallbackWarning

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # the `triton` extra is optional: everything falls back to the torch references
    triton = tl = InterpretedFunction = None

IMPLS = ("auto", "triton", "torch")
MAX_NUMEL = 2**31 - 1  # kernels index with int32


class KernelFallbackWarning(FallbackWarning):
    """A Triton path was asked for (or picked by ``auto`` on CUDA) but cannot run: the torch reference runs."""


def language_interpreted() -> bool:
    """True when ``triton.language`` was imported in interpreter mode (see the module docstring)."""
    return tl is not None and isinstance(tl.zeros, InterpretedFunction)


def env_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def jit(fn):
    """``triton.jit`` for the mode ``triton.language`` runs in (not the env var at decoration time)."""
    if triton is None:
        return fn  # never launched: dispatch falls back first
    return InterpretedFunction(fn) if language_interpreted() else triton.jit(fn)


def acc_dtype(dtype: torch.dtype):
    """Accumulation dtype inside a kernel: fp64 for fp64 tensors (gradcheck), fp32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def num_programs_target(device: torch.device) -> int:
    """Programs a reduction aims for: a few waves on a GPU; 4 in the interpreter so tests cover the split."""
    if device.type != "cuda":
        return 4
    return _gpu_programs(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def _gpu_programs(index: int) -> int:
    return 4 * torch.cuda.get_device_properties(index).multi_processor_count


def why_not(device_type: str, dtype: torch.dtype, numel: int, dtypes: tuple[torch.dtype, ...]) -> str | None:
    """The reason the Triton path cannot run on such a tensor, or None when it can."""
    if triton is None:
        return "Triton is not installed (pip install 'fastgan[triton]')"
    if dtype not in dtypes:
        return f"dtype {dtype} is not supported (supported: {', '.join(map(str, dtypes))})"
    if numel > MAX_NUMEL:
        return f"{numel} elements exceed int32 indexing"
    if device_type == "cuda":
        if language_interpreted():
            return "this process imported Triton in interpreter mode (TRITON_INTERPRET=1), so no GPU kernels"
        return None
    if device_type != "cpu":
        return f"device type {device_type} is not supported"
    if not env_interpret():
        return "the tensors are on the CPU and TRITON_INTERPRET=1 is not set (Triton needs a GPU otherwise)"
    if not language_interpreted():
        return "TRITON_INTERPRET=1 was set after triton.language was imported; set it before importing Triton"
    return None


def warn_once(op: str, reason: str) -> None:
    fallback.warn_once(f"kernels.{op} (Triton)", f"using the torch reference: {reason}", KernelFallbackWarning,
                       stacklevel=5)


# Evaluated at trace time under torch.compile (a constant of static facts), so dispatch adds no graph break.
@torch.compiler.assume_constant_result
def _decide(op: str, impl: str, device_type: str, dtype: torch.dtype, numel: int, dtypes: tuple) -> bool:
    if impl == "torch" or (impl == "auto" and device_type != "cuda"):
        return False
    reason = why_not(device_type, dtype, numel, dtypes)
    if reason is not None:
        warn_once(op, reason)
        return False
    return True


def use_triton(op: str, impl: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    """The dispatch rule of every kernel: ``torch`` never, ``auto`` on CUDA only, ``triton`` wherever it can run.

    ``auto`` picks torch on the CPU (the interpreter is a test tool, not a fast path). Where the Triton path
    was asked for but cannot run, the torch reference runs and a ``KernelFallbackWarning`` says why, once.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    return _decide(op, impl, t.device.type, t.dtype, t.numel(), dtypes)
