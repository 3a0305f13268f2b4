from __future__ import annotations

import argparse

from fastgan.config import DEFAULT_PRESET, PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the training presets", description="List the training presets.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    width = max(map(len, PRESETS))
    for name, (desc, _) in PRESETS.items():
        mark = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name:<{width}}  {desc}{mark}")
    return 0
