"""A small CNN per dataset (the seed's "LeNet on MNIST"): classifier-FID on its penultimate
features, classifier-IS on its logits, and label accuracy of conditional samples.

``fastgan classifier train --data mnist`` trains one and saves it where the in-training
evaluator finds it (``cache_home()/classifiers/<dataset>.pt``).
"""

from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fastgan.config import DataConfig
from fastgan.data import ImageDataset, load_dataset
from fastgan.data.augment import resize_uint8
from fastgan.engine import runfolder
from fastgan.errors import FastganError, TrainingDiverged
from fastgan.metrics.features import uint8_to_unit
from fastgan.paths import cache_home

FORMAT = "fastgan.classifier"
RESOLUTION = 28  # px: every dataset is classified at MNIST's size (digits are upsampled to it)


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 3  # passes over the training split (MNIST reaches >= 99% test accuracy in 3)
    batch_size: int = 128
    lr: float = 2e-3  # Adam peak learning rate; cosine decay to 0 over the run
    width: int = 16  # channels of the first conv (the second has 2x); 16 reaches 99.2% on MNIST
    feature_dim: int = 128  # penultimate features: the classifier-FID space
    seed: int = 0


class DomainClassifier(nn.Module):
    """conv-BN-ReLU-pool x2, then a 128-d feature layer and the class logits."""

    def __init__(self, channels: int, num_classes: int, width: int = 16, feature_dim: int = 128) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 7 * 7, feature_dim), nn.ReLU())
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)
        self.arch = {"channels": channels, "num_classes": num_classes, "width": width, "feature_dim": feature_dim}

    def forward(self, x: torch.Tensor, logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images in [-1, 1] at any size -> (features, logits or None), the feature-network contract."""
        if x.shape[-2:] != (RESOLUTION, RESOLUTION):
            x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > RESOLUTION)
        f = self.features(self.conv(x.contiguous(memory_format=torch.channels_last)))  # ~2x faster on CPU
        return f, (self.head(self.drop(f)) if logits else None)


def default_path(dataset: str, cache_dir: str = "") -> Path:
    return cache_home(cache_dir) / "classifiers" / f"{dataset}.pt"


def _prepare(ds: ImageDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if ds.labels is None:
        raise FastganError(f"dataset '{ds.name}' has no labels, so no classifier can be trained on it")
    return resize_uint8(ds.images, RESOLUTION).to(device), ds.labels.to(device)


@torch.no_grad()
def accuracy(model: DomainClassifier, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    hits = sum(int((model(uint8_to_unit(images[i : i + batch]), logits=True)[1].argmax(1) == labels[i : i + batch]).sum())
               for i in range(0, len(images), batch))
    return hits / len(images)


def train_classifier(data: DataConfig, cfg: ClassifierConfig = ClassifierConfig(), device: torch.device | str = "cpu",
                     quiet: bool = False) -> tuple[DomainClassifier, dict[str, Any]]:
    """Train on ``data``'s train split, measure on its test split; returns (model, report)."""
    device = torch.device(device)
    train = load_dataset(replace(data, split="train"))
    test = load_dataset(replace(data, split="test"))
    x, y = _prepare(train, device)
    xt, yt = _prepare(test, device)
    gen = torch.Generator().manual_seed(cfg.seed)  # own RNG: never moves the global one
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = DomainClassifier(train.channels, train.num_classes, cfg.width, cfg.feature_dim)
        model = model.to(device, memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        t0 = time.perf_counter()
        bar = tqdm(total=total, desc=f"classifier {train.name}", unit="step", disable=quiet, file=sys.stderr,
                   dynamic_ncols=True, mininterval=1.0)
        with bar:
            for _ in range(cfg.epochs):
                model.train()
                for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
                    idx = idx.to(device)
                    loss = F.cross_entropy(model(uint8_to_unit(x[idx]), logits=True)[1], y[idx])
                    if not math.isfinite(loss.item()):  # a diverged classifier is never returned (or saved)
                        raise TrainingDiverged(f"classifier training diverged (loss {loss.item()}): "
                                               f"lower --lr (it is {cfg.lr:g}; default {ClassifierConfig.lr:g})")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    report = {"dataset": train.name, "train_images": len(x), "test_images": len(xt), "epochs": cfg.epochs,
              "test_accuracy": round(accuracy(model, xt, yt), 5), "seconds": round(time.perf_counter() - t0, 1)}
    model.eval()
    model.meta = {"dataset": train.name, "class_names": list(train.class_names), "report": report}
    return model, report


def save_classifier(model: DomainClassifier, path: Path) -> None:
    payload = {"format": FORMAT, "arch": model.arch, "meta": model.meta,
               "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    runfolder.write_atomic(Path(path), buf.getbuffer())  # a private temp name; the old file survives a failure


def load_classifier(path: str | Path, device: torch.device | str = "cpu", dataset: str | None = None) -> DomainClassifier:
    """``dataset``: the dataset it will judge; a classifier trained on another one (its meta says) is refused."""
    p = Path(path)
    if p.is_dir():
        raise FastganError(f"classifier {p} is a folder, not a file: pass the classifier's .pt file")
    if not p.is_file():
        raise FastganError(f"classifier {p} does not exist: train one with `fastgan classifier train --data DATASET`")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != FORMAT:
            raise ValueError("not a fastgan classifier")
        with torch.device("meta"):  # no random init (it would move the global RNG)
            model = DomainClassifier(**ck["arch"])
        model.load_state_dict(ck["state_dict"], assign=True)
    except Exception as e:  # noqa: BLE001 - torch.load of a foreign file raises many types; all are this user error
        raise FastganError(f"{p} is not a fastgan classifier ({str(e).splitlines()[0][:100]}): train it again") from None
    model.meta = ck["meta"]
    trained_on = model.meta.get("dataset") if isinstance(model.meta, dict) else None
    if dataset is not None and isinstance(trained_on, str) and trained_on != dataset:
        raise FastganError(f"classifier {p} was trained on '{trained_on}', not '{dataset}': its classes and features "
                           f"mean nothing for '{dataset}'; pass a classifier of '{dataset}' (`fastgan classifier train "
                           f"--data {dataset}`), or drop --classifier to use the cached one")
    return model.to(device).eval().requires_grad_(False)
