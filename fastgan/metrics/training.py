"""The in-training evaluator: FID (and domain-classifier metrics) of a generator on fixed latents.

``make_evaluator(cfg, dataset, device)`` builds it once; ``evaluate(G)`` returns
``{metric: value}``. Latents come from their own torch.Generator and nothing here touches
the global RNG, so runs with and without evaluation, and resumed runs, train identically.
Reference statistics of the training images (resized to the model's resolution, as the
loader feeds them) are cached on disk per network, image content and count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from fastgan.config import Config
from fastgan.data import ImageDataset
from fastgan.data.augment import resize_uint8
from fastgan.errors import ConfigError
from fastgan.images import quantize
from fastgan.metrics import classifier as clf_mod
from fastgan.metrics.features import extract, uint8_batches
from fastgan.metrics.fid import FID, load_stats, save_stats, stats_to_fid
from fastgan.metrics.inception import load_inception, sha256_of
from fastgan.metrics.inception_score import IS_MEAN, IS_STD, SPLITS, logits_to_is
from fastgan.paths import cache_home
from fastgan.shard import Shard

EVAL_SEED_OFFSET = 54321  # evaluation latents: their own stream, apart from the sample grid's
CLASSIFIER_FID = "classifier_fid"  # result keys
CLASSIFIER_IS = "classifier_is"
CLASSIFIER_ACC = "classifier_acc"  # per label: classifier_acc_<label>


def reference_images(cfg: Config, dataset: ImageDataset) -> torch.Tensor:
    """The real side: a fixed subset (``eval.reference``, 0 = all) at the model's resolution."""
    n = cfg.eval.reference or len(dataset)
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    return resize_uint8(dataset.images[idx], cfg.model.resolution)


def _stats_path(key_parts: list[str], cache_dir: str = "") -> Path:
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:24]
    return cache_home(cache_dir) / "stats" / f"reference-{key}.npz"


def make_evaluator(cfg: Config, dataset: ImageDataset, device: torch.device) -> Callable[[torch.nn.Module], dict]:
    e, m = cfg.eval, cfg.model
    if e.samples < SPLITS:
        raise ConfigError(f"eval.samples is {e.samples}: use at least {SPLITS} (the Inception Score splits)")
    nets: dict[str, tuple[torch.nn.Module, bool]] = {}
    ids: dict[str, str] = {}
    if e.inception:
        net = load_inception(e.weights or None, device=device)
        nets["inception"] = (net, net.has_fc)  # Inception Score only when the weights have fc
        ids["inception"] = net.weights_sha256
    clf_path = Path(e.classifier) if e.classifier else clf_mod.default_path(dataset.name, cfg.data.cache_dir)
    if e.classifier or clf_path.is_file():
        clf = clf_mod.load_classifier(clf_path, device, dataset.name)
        if clf.arch["channels"] != dataset.channels:
            raise ConfigError(f"classifier {clf_path} takes {clf.arch['channels']}-channel images but dataset "
                              f"'{dataset.name}' has {dataset.channels}: train one for this dataset")
        nets["classifier"] = (clf, True)
        ids["classifier"] = sha256_of(clf_path)
    if not nets:
        raise ConfigError("eval.inception is false and no domain classifier exists for dataset "
                          f"'{dataset.name}': set eval.inception=true or run `fastgan classifier train --data "
                          f"{dataset.name}`")

    real = reference_images(cfg, dataset)
    content = hashlib.sha256(real.numpy().tobytes()).hexdigest()
    paths = {k: _stats_path([k, ids[k], content, str(len(real)), str(m.resolution)], cfg.data.cache_dir)
             for k in nets}
    todo = {k: (net, False) for k, (net, _) in nets.items() if not paths[k].is_file()}
    if todo:
        out = extract(todo, uint8_batches(real, e.batch_size), device, total=len(real), desc="reference stats")
        for k, (stats, _) in out.items():
            save_stats(paths[k], stats)
    ref = {k: load_stats(paths[k]) for k in nets}

    gen = torch.Generator().manual_seed(cfg.train.seed + EVAL_SEED_OFFSET)
    z = torch.randn(e.samples, m.z_dim, generator=gen)
    k_cls = m.label_classes
    y = torch.arange(e.samples) % k_cls if k_cls else None
    check_labels = "classifier" in nets and k_cls and nets["classifier"][0].arch["num_classes"] == k_cls

    def batches(G: torch.nn.Module):
        part = Shard.current().span(e.samples)  # under torchrun each rank generates and embeds its share
        for i in range(part.start, part.stop, e.batch_size):
            j = min(i + e.batch_size, part.stop)
            yb = None if y is None else y[i:j].to(device)
            yield quantize(G(z[i:j].to(device), yb))  # as if saved as PNG

    @torch.no_grad()
    def evaluate(G: torch.nn.Module) -> dict[str, float]:
        was_training = G.training
        G.eval()
        try:
            out = extract(nets, batches(G), device, total=e.samples, desc="eval", quiet=True, across_ranks=True)
        finally:
            G.train(was_training)
        res: dict[str, float] = {}
        if "inception" in out:
            stats, logits = out["inception"]
            res[FID] = stats_to_fid(stats, ref["inception"])
            if logits is not None:
                res.update(logits_to_is(logits))
        if "classifier" in out:
            stats, logits = out["classifier"]
            res[CLASSIFIER_FID] = stats_to_fid(stats, ref["classifier"])
            res[CLASSIFIER_IS] = logits_to_is(logits)[IS_MEAN]
            if check_labels:
                hit = (logits.argmax(1) == y).double()
                res[CLASSIFIER_ACC] = float(hit.mean())
                per = torch.zeros(k_cls, dtype=torch.float64).index_add_(0, y, hit) / torch.bincount(y, minlength=k_cls)
                res.update({f"{CLASSIFIER_ACC}_{i}": float(v) for i, v in enumerate(per)})
        return res

    keys = []  # what evaluate() reports, known before the first step (eval.metric is checked against it)
    if "inception" in nets:
        keys += [FID] + ([IS_MEAN, IS_STD] if nets["inception"][1] else [])
    if "classifier" in nets:
        keys += [CLASSIFIER_FID, CLASSIFIER_IS]
        if check_labels:
            keys += [CLASSIFIER_ACC, *(f"{CLASSIFIER_ACC}_{i}" for i in range(k_cls))]
    evaluate.keys = tuple(keys)
    return evaluate

