"""scikit-learn's bundled handwritten digits: 1797 images, 8x8, 17 grey levels. No download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fastgan.data.base import ImageDataset


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) in 0..16, labels), read from scikit-learn's bundled csv without importing scikit-learn:
    `import sklearn.datasets` pulls in scipy.stats, 1-5 s of the default run's start (measured, 2-core EPYC)."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():  # another scikit-learn layout: its public loader
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    rows = np.loadtxt(csv, delimiter=",")  # what load_digits reads: 64 pixels then the label per row
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1]


def load_digits_dataset(split: str = "train") -> ImageDataset:
    """All 1797 digits for ``train``; ``test`` gives the last 20% (the classifier check's hold-out)."""
    images, target = _digits()
    x = np.rint(images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = target.astype(np.int64)
    if split == "test":
        cut = int(len(x) * 0.8)
        x, y = x[cut:], y[cut:]
    return ImageDataset(torch.from_numpy(x), torch.from_numpy(y), 10, [str(i) for i in range(10)], "digits")
