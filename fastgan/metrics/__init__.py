"""GAN metrics: FID (Inception v3 features, float64 statistics, native trace-sqrt),
Inception Score, domain-classifier metrics, and the in-training evaluator.

``compute_fid`` (fastgan.metrics.api) is the library call behind ``fastgan fid``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compute_fid"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: compute_fid pulls in the data sources and checkpoints, which the
    # light submodules (fid, inception_score) and their importers need not pay for.
    if name == "compute_fid":
        from fastgan.metrics.api import compute_fid

        return compute_fid
    raise AttributeError(f"module 'fastgan.metrics' has no attribute '{name}'")
