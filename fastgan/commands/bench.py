"""``fastgan bench``: time the train step in several modes against the baseline, in one run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastgan.commands._options import add_device
from fastgan.errors import ConfigError

if TYPE_CHECKING:
    import torch

QUICK_MODES = ("baseline", "eager", "amp", "fast")
# The names of fastgan.benchmark.suite's CASES and MODES, so that --help never imports torch (a test checks them).
CASES = ("dcgan-28", "dcgan-32", "dcgan-64", "cdcgan-32", "acgan-32", "wgan-gp-64")
MODES = ("baseline", "eager", "compile", "amp", "compile+amp", "graph+amp", "graph+compile+amp")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time the train step: baseline vs eager, compile, amp, CUDA graph",
        description="Time one training iteration per mode on synthetic data and print images/s, achieved TFLOP/s, "
        "peak memory and the speedup over the baseline (a PyTorch-DCGAN-example-style loop) measured in the "
        "same run. The full suite with JSON output is `pytest bench/test_bench_train_step.py --benchmark-enable`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan bench --quick\n  fastgan bench --case dcgan-64 --batch 1024\n"
        "  fastgan bench --case wgan-gp-64 --mode baseline --mode graph+compile+amp --json wgan.json",
    )
    p.add_argument("--quick", action="store_true",
                   help=f"dcgan-32 only, modes {', '.join(QUICK_MODES)}, 3 timed rounds")
    p.add_argument("--case", action="append", choices=CASES,
                   help="case to run (repeatable; default dcgan-32 and dcgan-64)")
    p.add_argument("--mode", action="append", help="mode to run (repeatable; default every mode the device supports; "
                   f"{', '.join(MODES)}, fast)")
    p.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 128 on a GPU, 64 on a CPU)")
    add_device(p)
    p.add_argument("--rounds", type=int, help="timed rounds per mode (default 10 on a GPU, 5 on a CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default torch's; 1 is steadier on a shared machine)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and the environment as JSON")
    p.set_defaults(run=run)


def _plan(args: argparse.Namespace, device: torch.device) -> list[tuple[str, int, str]]:
    from fastgan.benchmark import suite

    modes = suite.modes_for(device)
    wanted = list(QUICK_MODES) if args.quick and not args.mode else (args.mode or list(modes))
    bad = [m for m in wanted if m not in modes]
    if bad:
        raise ConfigError(f"unknown mode '{bad[0]}': choose from {', '.join(modes)}")
    if "baseline" not in wanted:
        wanted.insert(0, "baseline")  # every ratio needs its baseline from the same run
    cases = args.case or (["dcgan-32"] if args.quick else ["dcgan-32", "dcgan-64"])
    batches = args.batch or [suite.default_batches(device)[0]]
    if any(b < 1 for b in batches):
        raise ConfigError("--batch must be at least 1")
    skipped = [m for m in wanted if suite.unsupported(m, device)]
    for m in skipped:
        print(f"skipping {m}: {suite.unsupported(m, device)}", file=sys.stderr)
    return [(c, b, m) for c in cases for b in batches for m in wanted if m not in skipped]


def run(args: argparse.Namespace) -> int:
    import torch

    from fastgan.benchmark import suite
    from fastgan.devices import resolve_device, usable_threads
    from fastgan.engine.runfolder import write_text_atomic
    from fastgan.outputs import check_output_file
    from fastgan.progress import Bar

    if args.json:  # before minutes of timing, not after them
        if Path(args.json).suffix.lower() != ".json":
            raise ConfigError(f"--json {args.json} must name a .json file, e.g. {Path(args.json).with_suffix('.json')}")
        check_output_file(args.json, "--json")
    device = resolve_device(args.device)
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            raise ConfigError(f"--threads {args.threads}: use 1 to 1024 (more than the CPUs here are lowered to them)")
        torch.set_num_threads(usable_threads(args.threads))
    timing = suite.default_timing(device)
    if args.quick:
        timing["rounds"] = 3
    if args.rounds is not None:
        if args.rounds < 1:
            raise ConfigError("--rounds must be at least 1")
        timing["rounds"] = args.rounds
    plan = _plan(args, device)
    env = suite.environment(device)
    print(f"device: {env['device']}; torch {env['torch']}, {env['torch_threads']} threads; {timing['rounds']} rounds "
          f"of {timing['per_round']} iteration(s), interleaved across modes, after {timing['warmup']} warm-up rounds",
          file=sys.stderr)
    rows = []
    # One tick per round of one mode (warm-up and timed), so the bar moves at the pace of the slowest mode.
    bar = Bar(total=len(plan) * (timing["warmup"] + timing["rounds"]), desc="bench", unit="round")
    tick = bar.update
    for case, batch in dict.fromkeys((c, b) for c, b, _ in plan):  # the modes of one case are alive together
        modes = [m for c, b, m in plan if (c, b) == (case, batch)]
        warm = []
        for m in modes:
            bar.set_postfix_str(f"{case} {m} warm-up", refresh=False)
            warm.append(suite.warm_runner(case, m, batch, device, timing["warmup"], timing["per_round"], tick))
        bar.set_postfix_str(f"{case} timed rounds", refresh=False)
        times = suite.time_interleaved([r for r, _ in warm], timing["rounds"], timing["per_round"], tick)
        base = None
        for (runner, peak), seconds in zip(warm, times):
            row = suite.record(runner, seconds, timing["per_round"], base, peak)
            base = base or (row["images_per_s"] if runner.mode == "baseline" else None)
            rows.append(row)
        del warm
        suite.release(device)
    bar.close()
    print(suite.table(rows))
    if args.json:
        write_text_atomic(Path(args.json), json.dumps({"environment": env, "timing": timing, "rows": rows}, indent=2) + "\n")
    return 0
