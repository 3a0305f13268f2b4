"""What a long job will cost on this device, said before it starts.

The FID Inception network costs ~6 GFLOP per image: thousands of images per second on a GPU, a few per second on
a laptop-class CPU (the issue measured ~5 img/s on a 2-core AVX2 machine), so ``fastgan fid CKPT mnist:train``
(10,000 generated + 60,000 real images) is minutes on a GPU and hours on a CPU. On a CPU the rate is measured on a
few images first, and the job's length printed with ways to shorten it.
"""

from __future__ import annotations

import sys
import time

import torch

from fastgan.devices import device_name

GPU_FEATURE_BATCH = 250  # the feature network's batch on a GPU (EvalConfig.batch_size)
CPU_FEATURE_BATCH = 50  # on a CPU: a progress update every ~10 s at ~5 img/s; the statistics do not depend on it
PROBE_IMAGES = 4  # images timed for the estimate (~1 s at CPU speed), after a warm-up batch of the same shape
ANNOUNCE_AFTER_S = 30.0  # say nothing for jobs shorter than this


def feature_batch(device: torch.device) -> int:
    return GPU_FEATURE_BATCH if device.type == "cuda" else CPU_FEATURE_BATCH


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


@torch.no_grad()
def images_per_second(net, device: torch.device, size: int = 32) -> float:
    """The network's measured rate on this device (input size hardly matters: Inception resizes to 299)."""
    x = torch.zeros(PROBE_IMAGES, 3, size, size, device=device)
    net(x)  # oneDNN builds its kernels per shape on the first call: keep that out of the rate
    t0 = time.perf_counter()
    net(x)
    return PROBE_IMAGES / max(time.perf_counter() - t0, 1e-9)


def announce_features(net, device: torch.device, total: int, what: str = "images through Inception") -> float | None:
    """On a CPU, print one line with the measured rate and how long ``total`` images will take, if that is long.
    Returns the rate (None on a GPU, where the job is short)."""
    if device.type != "cpu" or total <= 0:
        return None
    rate = images_per_second(net, device)
    seconds = total / rate
    if seconds >= ANNOUNCE_AFTER_S:
        print(f"fastgan: {total:,} {what} at ~{rate:.1f} img/s on this {device_name(device)}: about "
              f"{duration(seconds)}. Shorter: fewer images (--samples N), and the real side's statistics saved once "
              "(--save-stats ref.npz) and compared as the .npz", file=sys.stderr)
    return rate
