"""`fastgan report RUN_DIR`: one self-contained HTML page for a run (fastgan/analysis/report.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page for a run folder (samples, curves, metrics, analyses)",
        description="Write one HTML file with every image inlined (no server, no network): config, sample grids "
        "over time, loss and D-output curves, metrics, checkpoints and every `fastgan analyze` result in the folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan report runs/digits-cdcgan\n  fastgan report runs/mnist --out mnist.html",
    )
    p.add_argument("run_dir", help="a run folder written by fastgan train")
    p.add_argument("--out", help="output HTML file (default: RUN_DIR/report.html)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from fastgan.analysis.report import build_report
    from fastgan.engine.runfolder import write_text_atomic
    from fastgan.outputs import check_output_file

    out = Path(args.out) if args.out else Path(args.run_dir) / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        from fastgan.errors import ConfigError

        raise ConfigError(f"--out {out} must name an .html file (the report is a web page), e.g. {out.with_suffix('.html')}")
    check_output_file(out, "--out")  # before the page is built
    text, figures = build_report(args.run_dir)
    write_text_atomic(out, text)  # utf-8; an existing report survives a full disk
    print(f"wrote {out} ({len(text) / 2**20:.1f} MB, {len(figures)} figures inlined)", file=sys.stderr)
    return 0
