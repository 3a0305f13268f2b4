"""Generator inference: onnxruntime vs torch eager vs torch.compile, images/s.

    pytest bench/test_bench_onnx.py --benchmark-enable --benchmark-json bench/results/onnx-cpu.json

DCGAN-32 and DCGAN-64 at default width (g_width 64, z 100, 3 channels, unconditional), batch 1 and 64.
A timed call is the serving path: numpy latents in, numpy images out. torch runs ``G.eval()`` under
inference_mode as a user would (BatchNorm unfolded); onnxruntime runs the `fastgan export` model
(BatchNorm folded, dynamic batch axis) through ``fastgan.export.runtime`` session options (all graph
optimisations, sequential execution, no spin-waiting) with the same thread count as torch. torch.compile's compilation
stays out of the timing (warm-up). Target (issue 7): onnxruntime >= torch eager on CPU at both batch
sizes. CUDA cases (onnxruntime-gpu's CUDA provider vs torch on the GPU) skip without a GPU and that
provider.
"""

from __future__ import annotations

import copy
import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fastgan.config import ModelConfig
from fastgan.export.onnx_export import export_generator
from fastgan.export.runtime import session_options
from fastgan.export.spec import FORMAT, IMAGES, Z
from fastgan.models import build_generator

MODELS = {"dcgan32": 32, "dcgan64": 64}
BATCHES = (1, 64)
MODES = ("eager", "compile", "onnxruntime")  # eager first: later modes report their speedup over it
ROUNDS = {1: 60, 64: 12}  # timed calls per case (median reported)
_eager_images_per_s: dict[tuple, float] = {}


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        import cpuinfo

        return f"cpu ({cpuinfo.get_cpu_info()['brand_raw']})"
    except ImportError:
        return f"cpu ({platform.processor() or platform.machine()})"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """model name -> (G in eval mode, path of its ONNX export)."""
    out = {}
    for name, res in MODELS.items():
        torch.manual_seed(0)
        G = build_generator(ModelConfig(resolution=res, channels=3)).eval()
        path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
        export_generator(G, path, {"format": FORMAT, "latent_size": "100", "num_classes": "0", "resolution": str(res),
                                   "channels": "3", "training_step": "0"})
        out[name] = (G, path)
    return out


def _runner(mode: str, device: str, G: torch.nn.Module, path, threads: int):
    if mode == "onnxruntime":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
        return lambda z: session.run([IMAGES], {Z: z})[0], session.get_providers()[0]
    model = copy.deepcopy(G).to(device)
    if mode == "compile":
        model = torch.compile(model, dynamic=False)  # one static graph per batch size, like the ONNX session

    def run(z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(z).to(device)).cpu().numpy()  # .cpu() waits for the GPU

    return run, f"torch {device}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_generator_inference(benchmark, exported, device, model, batch, mode):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if device == "cuda" and mode == "onnxruntime" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install fastgan[gpu] instead of fastgan[onnx])")
    G, path = exported[model]
    threads = torch.get_num_threads()
    fn, provider = _runner(mode, device, G, path, threads)
    z = np.random.default_rng(0).standard_normal((batch, 100), dtype=np.float32)
    for _ in range(3):  # compilation, allocator and thread-pool warm-up
        fn(z)
    benchmark.pedantic(fn, args=(z,), rounds=ROUNDS[batch], iterations=1, warmup_rounds=2)
    ips = batch / benchmark.stats.stats.median
    key = (device, model, batch)
    if mode == "eager":
        _eager_images_per_s[key] = ips
    benchmark.extra_info.update(
        mode=mode, model=model, batch=batch, device=_device_name(device), provider=provider,
        images_per_s=round(ips, 1),
        speedup_vs_eager=round(ips / _eager_images_per_s[key], 2) if key in _eager_images_per_s else None,
        threads=threads, ort_session="ORT_ENABLE_ALL, sequential, no spinning" if mode == "onnxruntime" else None,
        torch=torch.__version__, onnxruntime=ort.__version__, onnx=onnx.__version__, numpy=np.__version__,
    )
