"""Options several commands share, written once so their spelling, default and help agree.

Imports nothing heavy: parsers are built before torch is loaded.
"""

from __future__ import annotations

import argparse

from fastgan.config import PRESETS, key_fields

DEVICES = "auto (cuda when present) | cpu | cuda | cuda:N"


def add_device(p: argparse.ArgumentParser, key: str | None = None) -> None:
    """``--device``; with ``key`` (a config key) it overrides that key, so its default is the config's."""
    if key:
        p.add_argument("--device", help=config_help(DEVICES, key))
    else:
        p.add_argument("--device", default="auto", help=f"{DEVICES} (default auto)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_help(text: str, key: str) -> str:
    """Help for a flag that overrides config ``key``: names the key and the default it falls back to."""
    default = key_fields()[key].default
    shown = {False: "off", True: "on", "": '""'}.get(default, default) if isinstance(default, (bool, str)) else default
    by_preset = any(key in overrides for _, overrides in PRESETS.values())
    fallback = "the preset's, else " if by_preset else ""
    return f"{text} ({key}; default {fallback}{shown})"
