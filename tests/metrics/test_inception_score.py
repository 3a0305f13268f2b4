"""Inception Score against an independent numpy version of torch-fidelity's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgan.errors import FastganError
from fastgan.metrics.inception_score import IS_MEAN, IS_STD, logits_to_is


def numpy_is(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    logits = logits[np.random.RandomState(2020).permutation(len(logits))].astype(np.float64)
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    scores = []
    n = len(p)
    for i in range(splits):
        pp = p[i * n // splits : (i + 1) * n // splits]
        kl = (pp * (np.log(pp) - np.log(pp.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize("n,k", [(100, 1008), (57, 10), (1000, 26)])
def test_matches_independent_formula(n, k):
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(n)) * 3
    got = logits_to_is(logits)
    mean, std = numpy_is(logits.numpy())
    assert got[IS_MEAN] == pytest.approx(mean, rel=1e-10)
    assert got[IS_STD] == pytest.approx(std, rel=1e-8, abs=1e-12)


def test_limits():
    assert logits_to_is(torch.zeros(50, 10))[IS_MEAN] == pytest.approx(1.0)  # no information: IS = 1
    confident = torch.full((1000, 10), -30.0)
    confident[torch.arange(1000), torch.arange(1000) % 10] = 30.0  # sure and balanced: IS = number of classes
    assert logits_to_is(confident, shuffle=False)[IS_MEAN] == pytest.approx(10.0, rel=1e-6)  # each split balanced


def test_too_few_samples():
    with pytest.raises(FastganError, match="at least 10 samples"):
        logits_to_is(torch.zeros(9, 10))
