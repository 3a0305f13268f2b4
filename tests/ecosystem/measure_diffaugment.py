"""Does DiffAugment lower classifier-FID when training on 1,000 MNIST images at a fixed budget?

    python tests/ecosystem/measure_diffaugment.py --steps 1500 --classifier ~/.cache/fastgan/classifiers/mnist.pt

About 2 minutes of CPU per run at 1,500 steps (0.07 s a step, width 32, batch 64); on a busy machine the
wall time is several times that. ``--which off|on`` runs one side, to run both as two processes.

Same seed, same steps (the budget), same model; the only difference is ``data.diffaugment``. The training set
is the first 1,000 MNIST training images (a ``prepared`` folder). Each final generator (EMA off: the raw G the
step trained) is scored by the in-training evaluator with ``eval.inception=false``: classifier-FID of
``--samples`` generated images against the full MNIST *test* split (10,000 images), because the 1,000 training
images themselves would reward memorising them, the failure DiffAugment is meant to prevent. The classifier is
``fastgan classifier train --data mnist`` (pass its file with ``--classifier``). Prints one JSON line per run
and a summary; not a test (pytest does not collect it).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from fastgan.config import DataConfig, load_config
from fastgan.data import load_dataset
from fastgan.data.prepare import prepare_arrays
from fastgan.engine.checkpoint import load_generator
from fastgan.engine.loop import train
from fastgan.metrics.training import make_evaluator


def subset(out: Path, n: int) -> Path:
    if (out / "manifest.json").is_file():
        return out
    ds = load_dataset(DataConfig(dataset="mnist"))
    x, y = ds.images[:n].numpy(), ds.labels[:n].numpy()
    prepare_arrays("mnist-first-1000", [(x, y)], 1, 28, out, list(ds.class_names), True, {"first": n},
                   f"mnist-train-first-{n}", quiet=True, total=n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--policy", default="translation,cutout,color", help="data.diffaugment of the second run")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--out", default="runs/diffaugment")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--which", choices=("both", "off", "on"), default="both",
                    help="run one side only (two processes in parallel on a shared machine)")
    args = ap.parse_args()
    out = Path(args.out)
    data = subset(out / "mnist-1k", args.images)
    test = load_dataset(DataConfig(dataset="mnist", split="test"))
    results = {}
    for policy in {"both": ("", args.policy), "off": ("",), "on": (args.policy,)}[args.which]:
        name = policy.replace(",", "+") or "none"
        cfg = load_config("mnist-dcgan", {
            "data.dataset": "prepared", "data.root": str(data), "data.diffaugment": policy,
            "model.g_width": args.width, "model.d_width": args.width, "train.batch_size": 64,
            "train.steps": args.steps, "train.seed": args.seed, "train.out": str(out / name),
            "train.log_every": 100, "train.sample_every": args.steps, "train.ckpt_every": args.steps,
            "train.threads": args.threads})
        t0 = time.perf_counter()
        res = train(cfg, quiet=True)
        seconds = time.perf_counter() - t0
        G, run_cfg, _ = load_generator(res.checkpoint, torch.device("cpu"), use_ema=False)
        ev_cfg = replace(run_cfg, data=DataConfig(dataset="mnist", split="test", cache_dir=str(out / "cache")),
                         eval=replace(run_cfg.eval, inception=False, classifier=args.classifier, samples=args.samples))
        values = make_evaluator(ev_cfg, test, torch.device("cpu"))(G)
        rows = [json.loads(ln) for ln in (out / name / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        last = rows[-1]
        results[name] = {"policy": policy, "steps": args.steps, "train_images": args.images, "seed": args.seed,
                         "seconds": round(seconds, 1), "classifier_fid_vs_test": round(values["classifier_fid"], 3),
                         "classifier_is": round(values.get("classifier_is", float("nan")), 3),
                         "eval_samples": args.samples, "d_real_last": last.get("d_real"),
                         "d_fake_last": last.get("d_fake"), "acc_real_last": last.get("acc_real")}
        print(json.dumps(results[name]), flush=True)
    if len(results) < 2:
        return
    a, b = (r["classifier_fid_vs_test"] for r in results.values())
    print(json.dumps({"classifier_fid_without": a, "classifier_fid_with": b, "ratio": round(b / a, 3),
                      "lower_with_diffaugment": bool(b < a)}))


if __name__ == "__main__":
    main()
