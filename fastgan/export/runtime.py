"""Serve an exported generator with onnxruntime and numpy alone (no torch import)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from fastgan.export.spec import FORMAT, FORMAT_VERSION, IMAGES, IMAGES_UINT8, LABEL, OnnxError, Z

# Fastest first; onnxruntime skips (with its own warning) a provider whose libraries are missing.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CHUNK = 256  # images per session run with a dynamic batch axis: bounds activation memory


def best_providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in PROVIDER_PREFERENCE if p in available]


def session_options(threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    # ALL adds layout transforms (NCHWc on x86) on top of constant folding and fusions.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a generator is one chain: nothing to run in parallel
    so.intra_op_num_threads = threads  # 0 = onnxruntime's default: one thread per physical core
    # Idle workers sleep instead of spinning: on a shared 2-core host spinning cost 1.5-10x in throughput.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: provider fallbacks are reported by `provider`, not log spam
    return so


def open_session(path: str | Path, providers: Sequence[str] | None = None, threads: int = 0) -> ort.InferenceSession:
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise OnnxError(f"ONNX model {path} {what}: check the path (write one with `fastgan export`)")
    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=list(providers or best_providers()))
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", first).replace(f"Load model from {path} failed:", "")[:160]
        raise OnnxError(f"{path} is not a loadable ONNX model ({first}): pass a .onnx written by `fastgan export`") from None


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C): the numpy twin of fastgan.images.quantize
    (tests/test_wiring.py holds them bit-equal), since this module serves without torch."""
    x = (np.clip(x.astype(np.float32), -1.0, 1.0) + np.float32(1.0)) * np.float32(127.5)
    return np.round(x).astype(np.uint8).transpose(0, 2, 3, 1)


def read_metadata(session: ort.InferenceSession, path: Path) -> dict[str, Any]:
    raw = session.get_modelmeta().custom_metadata_map
    if raw.get("format") != FORMAT:
        raise OnnxError(f"{path} is an ONNX model but not a fastgan generator (no fastgan metadata): "
                        "export it with `fastgan export`")
    meta: dict[str, Any] = dict(raw)
    try:
        if int(raw.get("format_version", 0)) > FORMAT_VERSION:
            raise OnnxError(f"{path} was exported by a newer fastgan (format {raw['format_version']}): upgrade fastgan")
        for key in ("latent_size", "num_classes", "resolution", "channels", "training_step"):
            meta[key] = int(raw[key])
        meta["class_names"] = json.loads(raw.get("class_names", "[]"))
        if not isinstance(meta["class_names"], list):
            raise TypeError("class_names is not a list")
    except (KeyError, ValueError, TypeError, RecursionError) as e:  # an edited or cut metadata map
        raise OnnxError(f"{path} has damaged fastgan metadata ({type(e).__name__}: {e}): export it again with "
                        "`fastgan export`") from None
    return meta


class OnnxGenerator:
    """An exported fastgan generator behind an onnxruntime session: numpy in, numpy out.

    ``generate(n)`` returns uint8 images (N, H, W, C), ready for PIL or saving; pass
    ``output="float"`` for the generator's raw float32 (N, C, H, W) images in [-1, 1].
    ``providers`` defaults to the best available (TensorRT, CUDA, CPU); ``provider`` says which runs.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, providers, threads)
        self.meta = read_metadata(self.session, self.path)
        self.z_dim: int = self.meta["latent_size"]
        self.num_classes: int = self.meta["num_classes"]  # 0 for an unconditional generator
        self.class_names: list[str] = self.meta["class_names"]
        self.resolution: int = self.meta["resolution"]
        self.channels: int = self.meta["channels"]
        self.provider: str = self.session.get_providers()[0]
        first = self.session.get_inputs()[0].shape[0]
        self.batch: int | None = first if isinstance(first, int) else None  # None = dynamic batch axis
        self._outputs = {o.name for o in self.session.get_outputs()}

    def __repr__(self) -> str:
        return (f"OnnxGenerator('{self.path}', {self.resolution}px x{self.channels}, z={self.z_dim}, "
                f"classes={self.num_classes}, provider={self.provider})")

    def latents(self, n: int, seed: int | None = None) -> np.ndarray:
        """Standard normal float32 latents (n, latent_size) from numpy's generator."""
        return np.random.default_rng(seed).standard_normal((n, self.z_dim), dtype=np.float32)

    def labels(self, n: int, labels: int | Sequence[int] | np.ndarray | None = None) -> np.ndarray | None:
        """int64 (n,) labels: every class in turn by default; one label, or a sequence cycled over n."""
        k = self.num_classes
        if k == 0:
            if labels is not None:
                raise OnnxError("labels given but this generator is unconditional: pass labels=None")
            return None
        if labels is None:
            return np.arange(n, dtype=np.int64) % k
        arr = np.asarray(labels).reshape(-1)
        if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise OnnxError(f"labels must be integers in 0..{k - 1}, got {labels!r}")
        bad = arr[(arr < 0) | (arr >= k)]
        if bad.size:
            raise OnnxError(f"label {int(bad[0])} is out of range: this model has classes 0..{k - 1}")
        return arr[np.arange(n) % arr.size].astype(np.int64)

    def run(self, z: np.ndarray, labels: int | Sequence[int] | np.ndarray | None = None,
            output: str = "float") -> np.ndarray:
        """Images for the given latents: ``output="float"`` (N, C, H, W) in [-1, 1] or ``"uint8"`` (N, H, W, C)."""
        if output not in ("float", "uint8"):
            raise OnnxError(f"output must be 'float' or 'uint8', got {output!r}")
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.z_dim or len(z) == 0:
            raise OnnxError(f"latents must have shape (N >= 1, {self.z_dim}), got {z.shape}")
        y = self.labels(len(z), labels)
        name = IMAGES_UINT8 if output == "uint8" and IMAGES_UINT8 in self._outputs else IMAGES
        step = self.batch or CHUNK
        outs = []
        for i in range(0, len(z), step):
            feed = {Z: z[i : i + step]}
            if y is not None:
                feed[LABEL] = y[i : i + step]
            m = len(feed[Z])
            if self.batch and m < self.batch:  # a static graph takes exactly `batch` rows: pad, then trim
                feed = {k: np.concatenate([v, np.repeat(v[-1:], self.batch - m, 0)]) for k, v in feed.items()}
            outs.append(self.session.run([name], feed)[0][:m])
        x = np.concatenate(outs)
        return to_uint8(x) if output == "uint8" and name == IMAGES else x

    def generate(self, n: int, labels: int | Sequence[int] | np.ndarray | None = None, seed: int | None = None,
                 output: str = "uint8") -> np.ndarray:
        """``n`` images from fresh latents (numpy generator seeded by ``seed``): uint8 NHWC by default."""
        if n < 1:
            raise OnnxError(f"n must be at least 1, got {n}")
        return self.run(self.latents(n, seed), labels, output)
