"""scikit-learn's bundled handwritten digits: 1797 images, 8x8, 17 grey levels. No download."""

from __future__ import annotations

import numpy as np
import torch

from fastgan.data.base import ImageDataset


def load_digits_dataset(split: str = "train") -> ImageDataset:
    """All 1797 digits for ``train``; ``test`` gives the last 20% (the classifier check's hold-out)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    if split == "test":
        cut = int(len(x) * 0.8)
        x, y = x[cut:], y[cut:]
    return ImageDataset(torch.from_numpy(x), torch.from_numpy(y), 10, [str(i) for i in range(10)], "digits")
