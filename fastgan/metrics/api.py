"""``compute_fid(a, b)``: the library call behind ``fastgan fid``.

Each side is an image folder, a pytorch-fid compatible ``.npz`` stats file, a dataset split like
``mnist:test``, or a checkpoint (``samples`` images generated from it). The result is the JSON that
``fastgan fid`` prints: the value, the Inception Score when asked, and the protocol (sample counts,
layer, resize, weights sha256, trace-sqrt implementation), since an FID means little without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastgan.config import MAX_SEED
from fastgan.cost import announce_features, feature_batch
from fastgan.devices import resolve_device
from fastgan.engine import distributed
from fastgan.errors import FastganError
from fastgan.metrics.features import extract
from fastgan.metrics.fid import FID, load_stats, resolve_impl, stats_to_fid
from fastgan.metrics.fid import save_stats as write_stats
from fastgan.metrics.inception import DIMS, RESIZE, load_inception
from fastgan.metrics.inception_score import logits_to_is
from fastgan.metrics.sources import open_source
from fastgan.outputs import check_output_file


def _layer(dims: int | None, sources: list, stats: list, has_images: bool) -> int:
    """The Inception layer both sides are compared at: ``dims``, else a stats file's, else pool3 (2048)."""
    layer = dims or next((st.dim for st in stats if st is not None and st.dim in DIMS), 2048)
    known = [(s.spec, st.dim) for s, st in zip(sources, stats) if st is not None]
    want = dims or (layer if has_images else None)  # two stats files alone: stats_to_fid names both sizes
    bad = next(((spec, d) for spec, d in known if want and d != want), None)
    if bad:  # features of different layers cannot be compared (and an explicit dims must not be ignored)
        asked = f"--dims {dims} asks for d={dims}" if dims else f"the other side has d={want}"
        raise FastganError(f"stats file {bad[0]} has d={bad[1]} features but {asked}: compare statistics of the "
                           "same Inception layer (drop --dims, or use a stats file of that layer)")
    return layer


def compute_fid(a: str, b: str | None = None, *, samples: int = 0, seed: int = 0, dims: int | None = None,
                isc: bool = False, weights: str | Path | None = None, batch_size: int = 0,
                impl: str = "auto", device: str = "auto", quiet: bool = True, download: bool = True,
                save_stats: str | Path | None = None) -> dict[str, Any]:
    """FID between sources ``a`` and ``b`` (and/or A's statistics written to ``save_stats``, and/or the
    Inception Score of the image sources with ``isc``).

    ``samples``: the first N images of a folder or dataset (0 = all), or N generated from a checkpoint
    (0 = fastgan.metrics.sources.CHECKPOINT_SAMPLES) with latent ``seed``. ``batch_size``: the network's
    (0 = fastgan.cost.feature_batch: 250 on a GPU, 50 on a CPU; the statistics do not depend on it).
    ``dims``: Inception layer (64, 192, 768, 2048; default 2048 or a stats file's). ``impl``: trace-sqrt implementation
    (fastgan.metrics.fid.IMPLS). Returns ``{"fid": float (with b), "inception_score": {...} (with isc),
    "protocol": {...}}``; bad inputs raise FastganError with a one-line message.
    """
    if b is None and not (save_stats or isc):
        raise FastganError("give a second source B to compare with, or --save-stats PATH, or --isc")
    if samples < 0 or batch_size < 0:
        raise FastganError("--samples and --batch-size must be >= 0")
    if samples == 1:  # named here, not as a folder or split "holding 1 image"
        raise FastganError("--samples 1 gives FID one image, but a covariance needs at least 2: use --samples 2 or "
                           "more (0 = every image of a folder or split)")
    if not 0 <= seed <= MAX_SEED:
        raise FastganError(f"--seed {seed} is out of range: use 0 .. 2**63-1")
    if dims is not None and dims not in DIMS:
        raise FastganError(f"--dims {dims} is not an Inception feature layer: use one of {', '.join(map(str, DIMS))}")
    if save_stats:
        if Path(save_stats).suffix.lower() != ".npz":  # the pytorch-fid format; numpy would add .npz silently
            raise FastganError(f"--save-stats {save_stats}: name a .npz file (pytorch-fid's statistics format)")
        check_output_file(save_stats, "--save-stats")  # before minutes of feature extraction
    dev = distributed.setup(resolve_device(device))  # under torchrun: each rank embeds its share of the images
    sources = [open_source(s, samples, seed, dev) for s in (a, b) if s is not None]
    stats = [load_stats(s.stats_path) if s.kind == "stats" else None for s in sources]
    images = [s for s in sources if s.kind != "stats"]
    if save_stats and sources[0].kind == "stats":
        raise FastganError(f"--save-stats needs images for A, but {a} is already a stats file")
    if isc and not images:
        raise FastganError("--isc needs images (a folder, dataset split or checkpoint), not stats files")
    layer = _layer(dims, sources, stats, bool(images))
    out: dict[str, Any] = {}
    protocol: dict[str, Any] = {"trace_sqrt": resolve_impl(impl), "statistics": "float64 mean and unbiased covariance"}
    if images:
        net = distributed.main_first(lambda: load_inception(weights, layer, dev, download=download))  # one download
        if isc:
            net.require_logits()
        if not quiet:  # on a CPU, how long this will take, before it starts
            announce_features(net, dev, sum(s.count for s in images))
        batch_size = batch_size or feature_batch(dev)
        protocol.update(network="FID Inception v3 (TF 2015-12-05, pytorch-fid layout), fp32", dims=layer,
                        resize=RESIZE, weights=net.weights_file, weights_sha256=net.weights_sha256)
        for i, s in enumerate(sources):
            if s.kind == "stats":
                continue
            res = extract({"net": (net, isc)}, distributed.my_batches(s.batches(batch_size), s.count, batch_size),
                          dev, total=s.count, desc=s.spec, quiet=quiet, across_ranks=True)
            stats[i], logits = res["net"]
            if logits is not None:
                out.setdefault("inception_score", {})["ab"[i]] = logits_to_is(logits)
    for s, st in zip(sources, stats):
        if s.kind == "stats":
            s.count = st.n
    # (the argument shadows fastgan.metrics.fid.save_stats, imported as write_stats)
    if save_stats and distributed.is_main():
        write_stats(save_stats, stats[0])
    if len(stats) == 2:
        out[FID] = stats_to_fid(stats[0], stats[1], impl)
    protocol.update({k: s.describe() for k, s in zip("ab", sources)})
    return {**out, "protocol": protocol}

