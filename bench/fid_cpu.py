"""FID Inception on a CPU: the torch reference vs the onnxruntime backend, side by side in one run.

    python bench/fid_cpu.py                      # writes bench/results/fid-inception-cpu-<cpu>.json
    python bench/fid_cpu.py --images 100 --rounds 5 --batch 50

Both backends see the same real images (MNIST and Fashion-MNIST test, 28 px grey, resized to 299 by the
network as in `fastgan fid`), in rounds interleaved backend by backend, so load from other processes on a
shared machine hits both alike. Records images/s per round and their median, the speedup, and the largest
feature difference (the FID protocol's tolerance is 1e-4). The onnxruntime export is made (and cached)
before the timing. The OpenMP defaults of the CLI (fastgan/threads.py) apply to both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastgan import threads

threads.configure()  # as the CLI does, before torch loads

import torch

from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.devices import cpu_model, device_tag
from fastgan.metrics import inception as inc


def images(n: int) -> torch.Tensor:
    data = Path(os.environ.get("FASTGAN_DATA") or REPO.parent / "shared" / "data")
    parts = [load_dataset(DataConfig(dataset=name, root=str(data / folder), split="test")).images[: n - n // 2 if i else n // 2]
             for i, (name, folder) in enumerate((("mnist", "mnist"), ("fashion-mnist", "fashion_mnist")))]
    return torch.cat(parts).float() / 127.5 - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=50, help="images per timed round (default 50)")
    ap.add_argument("--batch", type=int, default=50, help="network batch (default 50, fastgan fid's CPU default)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per backend (default 3)")
    ap.add_argument("--out", help="JSON path (default bench/results/fid-inception-cpu-<cpu>.json)")
    args = ap.parse_args()
    x = images(args.images)
    ref = inc.load_inception(backend="torch", download=False)
    nets = {"torch": ref, "onnxruntime": inc.with_backend(ref, "onnxruntime")}
    t = time.perf_counter()
    nets["onnxruntime"].session()  # export (first time only) and session creation, outside the timing
    setup_s = time.perf_counter() - t
    feats, seconds = {}, {k: [] for k in nets}
    with torch.no_grad():
        for k, net in nets.items():  # warm-up, and the features compared below
            feats[k] = torch.cat([net(x[i:i + args.batch])[0] for i in range(0, len(x), args.batch)])
        for _ in range(args.rounds):
            for k, net in nets.items():
                t = time.perf_counter()
                for i in range(0, len(x), args.batch):
                    net(x[i:i + args.batch])
                seconds[k].append(time.perf_counter() - t)
    ips = {k: len(x) / statistics.median(v) for k, v in seconds.items()}
    diff = float((feats["onnxruntime"] - feats["torch"]).abs().max())
    load = os.getloadavg()
    cpu = cpu_model()
    doc = {
        "created": datetime.now(timezone.utc).isoformat(), "cpu": cpu, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_end": [round(v, 2) for v in load], "images_per_round": len(x), "batch": args.batch,
        "rounds": args.rounds, "weights": ref.weights_file, "onnx_setup_s": round(setup_s, 2),
        "seconds_per_round": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "images_per_s": {k: round(v, 2) for k, v in ips.items()},
        "speedup": round(ips["onnxruntime"] / ips["torch"], 2),
        "max_abs_feature_diff": diff, "max_abs_feature": float(feats["torch"].abs().max()),
    }
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"fid-inception-{device_tag('cpu')}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{cpu}, {doc['torch_threads']} threads, load {load[0]:.1f}: torch {ips['torch']:.2f} img/s, onnxruntime "
          f"{ips['onnxruntime']:.2f} img/s ({doc['speedup']}x); max feature difference {diff:.2e} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
