from __future__ import annotations

import argparse

from fastgan.config import DEFAULT_PRESET, PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the training presets", description="List the training presets.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The default is named once, in the header: a preset's own description may already say it.
    print(f"Presets for `fastgan train PRESET` (without PRESET: {DEFAULT_PRESET}):")
    width = max(map(len, PRESETS))
    for name, (desc, _) in PRESETS.items():
        print(f"  {name:<{width}}  {desc}")
    return 0
