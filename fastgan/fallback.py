"""The one fallback mechanism: a fast path that cannot run says so once, and the reference runs.

Every fast path (``compile``, ``cuda_graph``, the Triton kernels, the native FID trace-sqrt) reports a
fallback through ``warn_once(path, reason)``, which emits a ``FallbackWarning`` naming the path. (A loader
named in the config that cannot run, such as ``dali`` without NVIDIA DALI, is a user error instead: it
changes what the run reads, not only how fast; ``auto`` never picks it.) Turn them into errors with ``warnings.simplefilter("error", fastgan.FallbackWarning)``
or pytest's ``-W error::fastgan.fallback.FallbackWarning``.
"""

from __future__ import annotations

import warnings

_WARNED: set[tuple[str, str]] = set()


class FallbackWarning(RuntimeWarning):
    """A fast path was asked for (or picked automatically) but cannot run here: its reference runs instead."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"fastgan: {path} falls back: {reason}")
        self.path, self.reason = path, reason


def warn_once(path: str, reason: str, category: type[FallbackWarning] = FallbackWarning, stacklevel: int = 3) -> None:
    """Emit ``category(path, reason)`` the first time this (path, reason) pair is seen in the process."""
    if (path, reason) in _WARNED:
        return
    _WARNED.add((path, reason))
    warnings.warn(category(path, reason), stacklevel=stacklevel)


def reset() -> None:
    """Forget which fallbacks were reported (tests that check the warning itself)."""
    _WARNED.clear()
