"""The data contract: a source yields uint8 images (N, C, H, W) and int64 labels or none."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastgan.errors import DataError
from fastgan.outputs import not_a_folder


def check_data_folder(root: Path, name: str, how: str) -> Path:
    """``root`` when it is a folder; else one DataError: what it is instead (a file, a broken symlink), or that it
    does not exist and ``how`` to get the data."""
    if root.is_dir():
        return root
    if os.path.lexists(root):
        raise DataError(f"data folder {root} for '{name}' is {not_a_folder(root)}: move it away, or point "
                        "--set data.root=DIR (or $FASTGAN_DATA) at the folder holding the data")
    raise DataError(f"data folder {root} for '{name}' does not exist: {how}")


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 (N, C, H, W), 0..255
    labels: torch.Tensor | None  # int64 (N,) in [0, num_classes), or None
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    name: str = ""
    origin: Any = None  # decoded sources: the ItemSource the images came from, in row order (the dali loader reads it)

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise DataError(
                f"dataset '{self.name}' gave images of dtype {x.dtype} and shape {tuple(x.shape)}; "
                "a source must give uint8 (N, 1 or 3, H, W)"
            )
        if len(x) == 0:
            raise DataError(f"dataset '{self.name}' is empty: check its folder and split")
        if y is not None:
            if y.shape != (len(x),):
                raise DataError(
                    f"dataset '{self.name}' has {len(x)} images but {tuple(y.shape)} labels: the label file does not "
                    "match the image file"
                )
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= self.num_classes:
                raise DataError(
                    f"dataset '{self.name}' has labels in [{lo}, {hi}] but {self.num_classes} classes: "
                    "the label file is corrupt or belongs to another dataset"
                )

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)
