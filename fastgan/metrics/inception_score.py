"""Inception Score from logits, as torch-fidelity computes it.

IS = exp(E_x KL(p(y|x) || p(y))), per split of the samples; mean and (population) std
over ``splits`` splits, after one fixed shuffle (RandomState(2020)), in float64. With the
FID Inception the input is the 1008-way ``logits_unbiased`` (fc without bias); the domain
classifier's logits work the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from fastgan.errors import FastganError

IS_MEAN = "inception_score_mean"  # result keys (torch-fidelity's names)
IS_STD = "inception_score_std"
SPLITS = 10  # torch-fidelity and the original TF code
SHUFFLE_SEED = 2020  # torch-fidelity's rng_seed


def logits_to_is(logits: torch.Tensor, splits: int = SPLITS, shuffle: bool = True) -> dict[str, float]:
    n = len(logits)
    if logits.dim() != 2 or n < splits:
        raise FastganError(f"Inception Score needs at least {splits} samples (one per split), got {n}")
    if shuffle:
        logits = logits[torch.from_numpy(np.random.RandomState(SHUFFLE_SEED).permutation(n))]
    logits = logits.double()
    p, log_p = logits.softmax(1), logits.log_softmax(1)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        q = p[lo:hi].mean(0, keepdim=True)
        kl = (p[lo:hi] * (log_p[lo:hi] - q.log())).sum(1).mean()
        scores.append(float(kl.exp()))
    return {IS_MEAN: float(np.mean(scores)), IS_STD: float(np.std(scores))}
