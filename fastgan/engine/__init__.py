"""Train state, steps, the one run-assembly path, the loop and checkpoints.

Names are imported lazily, so ``import fastgan.engine.checkpoint`` does not pull in the loop.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RunResult": "fastgan.engine.loop", "Trainer": "fastgan.engine.loop", "train": "fastgan.engine.loop",
    "TrainState": "fastgan.engine.state", "build_state": "fastgan.engine.state",
    "assemble": "fastgan.engine.build", "load_generator": "fastgan.engine.checkpoint",
    "generate": "fastgan.engine.sampling",
}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605 -- a list, built from the lazy-export table


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fastgan.engine' has no attribute {name!r}")
