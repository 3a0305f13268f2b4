"""Fixed-budget quality benchmark: train each preset for a wall-clock budget, then measure it.

    python bench/quality/run.py --minutes 10                      # every preset whose data is present
    python bench/quality/run.py --presets mnist-cdcgan --minutes 10 --fid-samples 5000

Per preset: the domain classifier of its dataset is trained once if missing (cached); the run trains until
the wall clock reaches ``--minutes`` (the script then SIGTERMs itself and the trainer checkpoints the step it is
on; run it on an otherwise idle machine: the load average is recorded), evaluating with the classifier about
``--evals`` times (classifier-FID, and for conditional models the accuracy of a classifier on generated labels;
a short calibration run sets that cadence); finally Inception FID of ``--fid-samples`` generated images
against the full test split's cached statistics. Writes ``bench/results/quality-<device>.json`` (budget, steps,
images seen, device, every number with its protocol), the quality-vs-images curve of each run as
``docs/quality-<preset>.png`` and a sample grid as ``docs/samples-<preset>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fastgan import threads

threads.configure()  # the CLI's OpenMP defaults, before torch loads
DEFAULT_PRESETS = ("mnist-cdcgan", "mnist-dcgan", "fashion-wgan-gp", "emnist-letters")
SPLIT_FOR_FID = "test"


def entry_name(preset: str, args) -> str:
    """The JSON entry a run replaces: the preset, plus its overrides when an experiment changed any."""
    return " ".join([preset, *args.set] + ([f"threads={args.threads}"] if args.threads else [])
                    + (["--plain"] if args.plain else []))


def log(msg: str) -> None:
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


def ensure_classifier(dataset: str, device) -> dict:
    from fastgan.config import DataConfig
    from fastgan.metrics.classifier import default_path, save_classifier, train_classifier

    path = default_path(dataset)
    if path.is_file():
        return {"path": str(path), "trained_now": False}
    log(f"training the {dataset} domain classifier (once; cached at {path})")
    model, report = train_classifier(DataConfig(dataset=dataset), device=device, quiet=True)
    save_classifier(model, path)
    return {"path": str(path), "trained_now": True, **{k: v for k, v in report.items() if k != "dataset"}}


def calibrate(preset: str, overrides: dict, runs: Path, slug: str) -> float:
    """Wall seconds per step of this preset, in steady state: the median of the logged throughput over steps
    10-40 of a short run (the first steps pay one-time costs: oneDNN primitive creation, allocator warm-up).
    Wall time, as a user waits for it: run the benchmark on an otherwise idle machine (the load average is
    recorded). CPU time would not do: sleeping OpenMP workers (PASSIVE, or a short spin) pass through the
    serial parts of a step, so CPU time / threads undercounts the wall time by 15-20 %."""
    import statistics

    from fastgan.config import load_config
    from fastgan.engine import train
    from fastgan.engine.runfolder import read_jsonl

    cfg = load_config(preset, {**overrides, "train.steps": "40", "train.out": str(runs / f"{slug}-calib"),
                               "train.log_every": "10", "train.sample_every": "100000",
                               "train.ckpt_every": "100000"})
    shutil.rmtree(cfg.train.out, ignore_errors=True)  # scratch: a calibration run is never continued
    train(cfg, quiet=True)
    rows, _ = read_jsonl(Path(cfg.train.out) / "metrics.jsonl")
    ips = [r["images_per_s"] for r in rows if "images_per_s" in r and r["step"] > 10]
    return cfg.train.batch_size / statistics.median(ips)


def inception_fid(checkpoint: Path, dataset: str, samples: int, stats_dir: Path) -> dict:
    """FID of ``samples`` generated images against the full test split (statistics cached)."""
    from fastgan.metrics.api import compute_fid

    stats = stats_dir / f"{dataset}-{SPLIT_FOR_FID}-inception2048.npz"
    if not stats.is_file():
        log(f"Inception statistics of {dataset}:{SPLIT_FOR_FID} (once)")
        compute_fid(f"{dataset}:{SPLIT_FOR_FID}", None, save_stats=str(stats), quiet=False)
    t0 = time.perf_counter()
    res = compute_fid(str(checkpoint), str(stats), samples=samples, quiet=False)
    return {"fid": res["fid"], "seconds": round(time.perf_counter() - t0, 1),
            "protocol": {"generated": samples, "reference": f"{dataset}:{SPLIT_FOR_FID} (all images, cached stats)",
                         "network": "FID Inception v3 pool3 (pytorch-fid weights)", "labels": "balanced"}}


def curve(rows: list[dict], preset: str, batch: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = [r for r in rows if "classifier_fid" in r]
    if not ev:
        return
    seen = [r["step"] * batch / 1000 for r in ev]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(seen, [r["classifier_fid"] for r in ev], "o-", label="classifier-FID (lower is better)")
    ax.set_xlabel("thousand real images seen by D")
    ax.set_ylabel("classifier-FID")
    ax.set_yscale("log")
    if "classifier_acc" in ev[0]:
        ax2 = ax.twinx()
        ax2.plot(seen, [100 * r["classifier_acc"] for r in ev], "s--", color="tab:orange",
                 label="label accuracy % (right)")
        ax2.set_ylabel("accuracy of generated labels, %")
        ax2.set_ylim(0, 100)
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title(f"{preset}: quality vs images seen")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def run_preset(preset: str, args, device) -> dict:
    from fastgan.config import load_config
    from fastgan.data import load_dataset
    from fastgan.engine import train
    from fastgan.engine.runfolder import TrainingStopped, read_jsonl
    from fastgan.errors import FastganError

    cfg0 = load_config(preset)
    try:
        load_dataset(cfg0.data)
    except FastganError as e:
        return {"preset": preset, "skipped": f"data unavailable: {e}"}
    clf = ensure_classifier(cfg0.data.dataset, device)
    runs = Path(args.runs)
    ov = {"train.seed": str(args.seed), **({} if args.plain else {"train.fast": "true"}),
          **dict(kv.split("=", 1) for kv in args.set)}
    if args.threads:
        ov["train.threads"] = str(args.threads)
    import torch

    n_threads = args.threads or torch.get_num_threads()
    entry = entry_name(preset, args)
    slug = "_".join(re.findall(r"[A-Za-z0-9.-]+", entry))
    load_at_start = os.getloadavg()[0]
    budget_s = args.minutes * 60
    if args.steps:  # a fixed step count, no clock (smoke tests, reproducing a run)
        wall_per_step, expected, cap = 0.0, args.steps, args.steps
        log(f"{preset}: {cap} steps (fixed), load average {load_at_start:.1f}")
    else:
        wall_per_step = calibrate(preset, ov, runs, slug)
        expected = max(100, int(budget_s / wall_per_step))
        cap = 3 * expected  # the clock stops the run; the cap only bounds it (calibration runs ~1.2-1.5x fast)
        log(f"{preset}: {wall_per_step:.3f} s/step in calibration ({n_threads} threads, load average "
            f"{load_at_start:.1f}) -> ~{expected} steps; the run stops at {args.minutes} minutes")
    every = max(50, expected // args.evals)
    cfg = load_config(preset, {**ov, "train.steps": str(cap), "train.out": str(runs / slug),
                               "eval.every": str(every), "eval.inception": "false", "eval.metric": "classifier_fid",
                               "eval.samples": str(args.eval_samples)})
    shutil.rmtree(cfg.train.out, ignore_errors=True)  # the benchmark's own folder: every run starts fresh
    run_dir = Path(cfg.train.out)
    # The wall clock ends the run: SIGTERM at the deadline makes the trainer checkpoint the step it is on and
    # stop (the same path as a user's Ctrl-C), evaluations and sample grids inside the budget.
    # Outside train() a no-op handler holds SIGTERM, so a deadline landing just after train() returned (its
    # handlers gone) cannot kill the process; join() makes sure the timer thread has finished before it goes.
    timer = threading.Timer(budget_s, os.kill, (os.getpid(), signal.SIGTERM)) if not args.steps else None
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if timer is not None else None
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        if timer is not None:
            timer.start()
        res = train(cfg, quiet=True)
        step, last_ckpt = res.step, res.checkpoint
    except TrainingStopped as e:
        last_ckpt = e.checkpoint
        step = int(re.search(r"step-(\d+)", last_ckpt.name).group(1))
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
            signal.signal(signal.SIGTERM, previous)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows, _ = read_jsonl(run_dir / "metrics.jsonl")
    ev = [r for r in rows if "classifier_fid" in r]
    final = ev[-1] if ev else {}
    best = min(ev, key=lambda r: r["classifier_fid"]) if ev else {}
    batch = cfg.train.batch_size
    out = {"preset": preset, "entry": entry, "overrides": ov, "budget_minutes": args.minutes, "train_wall_seconds": round(wall, 1),
           "train_cpu_seconds": round(cpu, 1), "threads": n_threads, "calibration_seconds_per_step": round(wall_per_step, 4),
           "load_average_at_start": load_at_start,
           "steps": step, "stopped_by": "fixed step count" if args.steps else "the clock",
           "images_seen": step * batch * cfg.optim.n_critic, "batch_size": batch,
           "classifier": clf, "eval_samples": args.eval_samples,
           "final": {k: v for k, v in final.items() if not k.startswith("classifier_acc_")},
           "best_classifier_fid": {"step": best.get("step"), "value": best.get("classifier_fid")},
           "curve": [{"step": r["step"], "images_seen": r["step"] * batch * cfg.optim.n_critic,
                      **{k: round(v, 4) for k, v in r.items() if k in ("classifier_fid", "classifier_acc")}}
                     for r in ev],
           "checkpoint": str(last_ckpt), "config": cfg.to_dict(),
           "command": "python bench/quality/run.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d")}
    if cfg.train.fast:  # what --fast picked on this machine: the precision the numbers were trained in
        from dataclasses import asdict

        from fastgan.engine.fast import best_options

        out["fast"] = asdict(best_options(device, cfg.train.amp))
    # an experiment (--set, --threads, --plain) gets pictures of its own: the preset's stay the README's
    pics = preset if entry == preset else slug
    curve(rows, preset, batch * cfg.optim.n_critic, Path(args.docs) / f"quality-{pics}.png")
    best_pt = run_dir / "best.pt"
    kept = best_pt if best_pt.is_file() else last_ckpt  # the generator the FID and the sample grid are of
    if args.fid_samples:
        out["inception_fid"] = inception_fid(kept, cfg.data.dataset, args.fid_samples, runs / "stats")
        out["inception_fid"]["checkpoint"] = "best.pt (lowest classifier-FID)" if kept == best_pt else "final"
    from fastgan.engine.checkpoint import load_generator
    from fastgan.engine.sampling import fixed_latents, generate, grid_columns
    from fastgan.images import save_grid

    G, gcfg, _ = load_generator(kept, device)
    z, y = fixed_latents(replace(gcfg, train=replace(gcfg.train, grid_size=100)), device)
    save_grid(generate(G, z, y), Path(args.docs) / f"samples-{pics}.png", grid_columns(gcfg))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    p.add_argument("--minutes", type=float, default=10.0,
                   help="training budget per preset, in minutes of wall time (calibrated; run on an idle machine)")
    p.add_argument("--steps", type=int, default=0, help="train this many steps instead of a timed budget (0 = timed)")
    p.add_argument("--evals", type=int, default=10, help="classifier evaluations over the run")
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--fid-samples", type=int, default=5000, help="generated images for Inception FID (0 = skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key of every preset run (experiments; the JSON entry is named after them)")
    p.add_argument("--plain", action="store_true",
                   help="train with the CLI's plain defaults (fp32 eager) instead of what `fastgan train --fast` "
                        "picks on this machine")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default, all cores)")
    p.add_argument("--runs", default="runs/quality", help="where the runs are written")
    p.add_argument("--docs", default=str(REPO / "docs"), help="where the curve and sample grid PNGs go")
    p.add_argument("--out", default="", help="JSON path (default bench/results/quality-<device>.json)")
    args = p.parse_args()

    import torch

    from fastgan.devices import device_name, device_tag, resolve_device

    device = resolve_device("auto")
    results = []
    for preset in [s.strip() for s in args.presets.split(",") if s.strip()]:
        log(f"== {preset}")
        results.append(run_preset(preset, args, device))
        log(json.dumps({k: v for k, v in results[-1].items() if k != "config"}))
    out = Path(args.out or REPO / "bench" / "results" / f"quality-{device_tag(device)}.json")
    # one file per machine kind; a preset run again replaces its own entry, the others stay
    old = json.loads(out.read_text()).get("results", []) if out.is_file() else []
    ran = {r.get("entry", r["preset"]) for r in results}
    doc = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
           "load_average_at_end": os.getloadavg(),
           "results": [r for r in old if r.get("entry", r["preset"]) not in ran] + results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
