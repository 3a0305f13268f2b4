"""OpenMP wait policy on a CPU, idle and loaded, in one run: libgomp's default (workers spin 300,000 polls
before they sleep), ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) and fastgan's default (fastgan/threads.py).

    python bench/omp_policy.py                   # idle, then with 2 busy-loop processes; ~3 minutes on 2 cores
    python bench/omp_policy.py --hogs 0 --pairs 3

Each measurement is one ``fastgan bench --case cdcgan-32 --mode eager --batch 64 --rounds 3`` process (2 torch
threads), the policies alternating run by run so drift hits them alike. "Loaded" adds ``--hogs`` processes
that spin in pure Python for the whole measurement (what other jobs on a shared CI machine look like to the
scheduler). Writes ``bench/results/omp-policy-<cpu>.json`` with every run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# torch loads here too (harmless: each measurement is its own process)
from fastgan.devices import cpu_model, device_tag

# name -> the environment a run gets (None: fastgan's own default, whatever fastgan/threads.py sets)
POLICIES = {"spin (libgomp default)": {"OMP_WAIT_POLICY": "ACTIVE"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "fastgan default": None}


def one_run(policy: dict | None, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(policy or {})  # None: the CLI's own default, as a user gets it
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "b.json"
        cmd = [sys.executable, "-m", "fastgan", "bench", "--case", "cdcgan-32", "--mode", "eager", "--batch", "64",
               "--rounds", "3", "--device", "cpu", "--threads", str(threads), "--json", str(out)]
        subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True, text=True)
        rows = json.loads(out.read_text())["rows"]
    return {r["mode"]: round(r["images_per_s"], 1) for r in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2, help="runs per policy and state (alternating)")
    ap.add_argument("--hogs", type=int, default=2, help="busy-loop processes for the loaded state (0 = idle only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON path (default bench/results/omp-policy-<cpu>.json)")
    args = ap.parse_args()
    states = [("idle", 0)] + ([(f"loaded ({args.hogs} busy loops)", args.hogs)] if args.hogs else [])
    doc = {"what": "fastgan bench --case cdcgan-32 --mode eager --batch 64 --rounds 3, one process per run",
           "cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
           "load_average_at_start": os.getloadavg(), "states": {}}
    for state, hogs in states:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            runs: dict[str, list] = {name: [] for name in POLICIES}
            for _ in range(args.pairs):
                for name, policy in POLICIES.items():
                    runs[name].append(one_run(policy, args.threads))
                    print(f"[omp] {state:24s} {name:26s} {runs[name][-1]}", file=sys.stderr, flush=True)
        finally:
            for p in procs:
                p.kill()
        med = {name: statistics.median(r["eager"] for r in rs) for name, rs in runs.items()}
        spin = med["spin (libgomp default)"]
        doc["states"][state] = {"runs": runs, "median_eager_images_per_s": med,
                                "over_spin": {k: round(v / spin, 3) for k, v in med.items()}}
    out = Path(args.out or REPO / "bench" / "results" / f"omp-policy-{device_tag('cpu')}.json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for state, v in doc["states"].items():
        print(f"{state}: {v['median_eager_images_per_s']} -> x spin {v['over_spin']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
