"""Export a generator to ONNX: fold BatchNorm, trace with torch.onnx, stamp fastgan metadata,
run onnx.checker, then compare onnxruntime against ``G.eval()`` before the file is kept.

Exporter: the dynamo one (``torch.onnx.export(dynamo=True)``), the default since torch 2.9. The
TorchScript exporter also works here and traces faster, but it is deprecated and slated for
removal; the dynamo exporter handles the dynamic batch axis (one ``Dim`` shared by ``z`` and
``label``), int64 labels, one-hot and embedding label inputs, and both architectures.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import logging
import os
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from fastgan import __version__
from fastgan.config import Config
from fastgan.engine.checkpoint import load_generator
from fastgan.engine.runfolder import DiskFull
from fastgan.export.fold import fold_batchnorm
from fastgan.export.runtime import open_session, to_uint8
from fastgan.export.spec import (
    ATOL_FP16,
    ATOL_FP32,
    FORMAT,
    FORMAT_VERSION,
    IMAGES,
    IMAGES_NCHW3,
    IMAGES_UINT8,
    LABEL,
    VERIFY_BATCHES,
    ExportOptions,
    OnnxError,
    Z,
)
from fastgan.images import quantize

TRACE_BATCH = 2  # example batch for a dynamic axis: torch.export specialises sizes 0 and 1


@dataclass
class ExportReport:
    path: Path
    max_abs_diff: float  # max |onnxruntime - G.eval()| over the verification images, in [-1, 1] pixel units
    tolerance: float
    checked: int  # images compared
    seconds: float
    meta: dict[str, str]


class Deployable(nn.Module):
    """The served graph: float32 ``z`` (and int64 ``label``) in; [-1, 1] images (and uint8 NHWC) out, or for
    ``layout="torch-fidelity"`` uint8 (N, 3, H, W) first, then the [-1, 1] images."""

    def __init__(self, G: nn.Module, dtype: torch.dtype, uint8: bool, layout: str = "fastgan") -> None:
        super().__init__()
        self.G, self.dtype, self.uint8, self.layout = G, dtype, uint8, layout

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None):
        # onnxruntime's Tanh can overshoot +-1 by an ulp: clamp so the stated range holds exactly.
        x = self.G(z.to(self.dtype), label).float().clamp(-1, 1)
        if self.layout == "torch-fidelity":  # Inception-style metric tools take 3-channel uint8 NCHW
            u = quantize(x)
            return (u.repeat(1, 3, 1, 1) if u.shape[1] == 1 else u), x
        if not self.uint8:
            return x
        return x, quantize(x).permute(0, 2, 3, 1)  # the rule of `fastgan sample`'s files


def generator_metadata(cfg: Config, ckpt: dict, weights: str, opts: ExportOptions) -> dict[str, str]:
    """metadata_props of an exported generator: everything needed to feed it and label its output."""
    m = cfg.model
    k = m.label_classes
    names = [str(n) for n in (ckpt.get("dataset") or {}).get("class_names", [])][:k]
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "fastgan_version": __version__,
        "arch": m.arch,
        "latent_size": str(m.z_dim),
        "num_classes": str(k),
        "class_names": json.dumps(names),
        "conditioning": m.conditioning,
        "label_mode": m.label_mode if k else "",
        "resolution": str(m.resolution),
        "channels": str(m.channels),
        "training_step": str(int(ckpt.get("step", 0))),
        "dataset": str((ckpt.get("dataset") or {}).get("name", "")),
        "preset": cfg.preset,
        "weights": weights,  # ema | raw
        "precision": "fp16" if opts.fp16 else "fp32",
        "batch": str(opts.batch) if opts.batch else "dynamic",
        "layout": opts.layout,  # fastgan | torch-fidelity: the outputs' order and form
    }


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs missing torchvision ops and deprecations on every call: noise for a user."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def trace(G: nn.Module, opts: ExportOptions) -> onnx.ModelProto:
    """The folded generator (fp16 inside when asked) as an ONNX model, without metadata."""
    folded = fold_batchnorm(G)
    dtype = torch.float16 if opts.fp16 else torch.float32
    module = Deployable(folded.to(dtype), dtype, opts.uint8, opts.layout).eval()
    n = opts.batch or TRACE_BATCH
    args: tuple[torch.Tensor, ...] = (torch.randn(n, G.z_dim),)
    if G.num_classes:
        args += (torch.arange(n) % G.num_classes,)
    batch = torch.export.Dim("batch")
    dynamic = None if opts.batch else tuple({0: batch} for _ in args)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=[Z, LABEL][: len(args)],
            output_names=opts.outputs,
            dynamic_shapes=dynamic, opset_version=opts.opset, verbose=False,
        )
    return program.model_proto


@torch.no_grad()
def verify(path: Path, G: nn.Module, opts: ExportOptions) -> tuple[float, int]:
    """Max |onnxruntime - G| (G in eval mode) on fresh random latents and labels; OnnxError past the tolerance."""
    tol = ATOL_FP16 if opts.fp16 else ATOL_FP32
    seed = secrets.randbits(31)
    gen = torch.Generator().manual_seed(seed)
    session = open_session(path, ["CPUExecutionProvider"])
    worst, count = 0.0, 0
    for n in (opts.batch,) if opts.batch else VERIFY_BATCHES:
        z = torch.randn(n, G.z_dim, generator=gen)
        y = torch.randint(0, G.num_classes, (n,), generator=gen) if G.num_classes else None
        ref = G(z, y).float().numpy()
        if not np.isfinite(ref).all():  # broken weights, not an exporter bug: say so, not "please report it"
            raise OnnxError("the generator itself makes NaN or inf images (its weights or BatchNorm statistics are "
                            "broken): export an earlier checkpoint of the run; nothing was written")
        feed = {Z: z.numpy(), **({LABEL: y.numpy()} if y is not None else {})}
        outs = dict(zip(opts.outputs, session.run(None, feed)))
        diff = float(np.abs(outs[IMAGES] - ref).max())
        levels = 0
        if IMAGES_UINT8 in outs:
            levels = int(np.abs(outs[IMAGES_UINT8].astype(np.int16) - to_uint8(ref)).max())
        if IMAGES_NCHW3 in outs:  # (N, 3, H, W): the NHWC rule, transposed and grey repeated
            want = np.broadcast_to(to_uint8(ref).transpose(0, 3, 1, 2), (n, 3, *ref.shape[2:]))
            levels = max(levels, int(np.abs(outs[IMAGES_NCHW3].astype(np.int16) - want).max()))
        if not diff <= tol or levels > 1 + int(tol * 127.5):  # `not <=` also catches NaN
            raise OnnxError(
                f"export check failed: max |onnxruntime - torch| = {diff:.3g} (uint8: {levels} levels) > {tol:g} "
                f"on {n} random latents (seed {seed}); nothing was written (a bug: please report it)"
            )
        worst, count = max(worst, diff), count + n
    return worst, count


DEFAULT_OPTIONS = ExportOptions()  # frozen: one shared default is safe


def export_generator(G: nn.Module, out: str | Path, meta: dict[str, str],
                     opts: ExportOptions = DEFAULT_OPTIONS) -> ExportReport:
    """Export an eval-mode copy of ``G`` (any fastgan generator) to ``out`` with ``meta`` as
    metadata_props; the file appears only after onnx.checker and the onnxruntime comparison pass."""
    opts.check()
    t0 = time.perf_counter()
    G = copy.deepcopy(G).float().cpu().eval()
    model = trace(G, opts)
    onnx.helper.set_model_props(model, meta)
    model.doc_string = f"fastgan {meta.get('arch', '')} generator; inputs {Z} (and {LABEL}), outputs {IMAGES} in [-1, 1]"
    onnx.checker.check_model(model, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # beside `out`, so the rename is atomic
    try:
        onnx.save(model, tmp)
        diff, count = verify(tmp, G, opts)
        os.replace(tmp, out)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # the existing `out`, if any, is untouched
            raise DiskFull(out, len(model.SerializeToString()), e.errno) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    tol = ATOL_FP16 if opts.fp16 else ATOL_FP32
    return ExportReport(out, diff, tol, count, time.perf_counter() - t0, meta)


def export_checkpoint(checkpoint: str | Path, out: str | Path, opts: ExportOptions = DEFAULT_OPTIONS) -> ExportReport:
    """Export the generator of a `fastgan train` checkpoint (EMA weights when asked and present)."""
    opts.check()
    G, cfg, ckpt = load_generator(checkpoint, torch.device("cpu"), opts.use_ema)
    weights = "ema" if opts.use_ema and ckpt["models"].get("G_ema") is not None else "raw"
    return export_generator(G, out, generator_metadata(cfg, ckpt, weights, opts), opts)
