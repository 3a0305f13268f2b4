"""The ``fastgan`` command line. Each subcommand lives in ``fastgan/commands/<name>.py``
with ``add_parser(subparsers)`` and ``run(args) -> int``; user errors print one line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fastgan import __version__, threads
from fastgan.errors import FastganError
from fastgan.outputs import user_system_error

# Order is the order of `fastgan --help`.
SUBCOMMANDS = ("train", "sample", "presets", "export", "data", "fid", "classifier", "bench", "analyze", "report")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with ``only`` just that subcommand: building every parser costs ~0.1-0.3 s (argparse's
    gettext and terminal-size look-ups per option), which `fastgan data list` and friends need not pay."""
    p = _Parser(
        prog="fastgan",
        description="fastgan: train, measure, benchmark and export DCGAN-family GANs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  fastgan train                       # conditional DCGAN on the bundled digits\n"
        "  fastgan train mnist-dcgan --set train.steps=2000\n  fastgan sample runs/digits-cdcgan/checkpoints/"
        "step-0001500.pt --out grid.png\n  fastgan presets",
    )
    p.add_argument("--version", action="version", version=f"fastgan {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS if only is None else (only,):
        importlib.import_module(f"fastgan.commands.{name}").add_parser(sub)
    return p


def _note(e: BaseException) -> str:
    """What the trainer saved before the error ended the run (``fastgan_note``), as the end of the error's line."""
    note = getattr(e, "fastgan_note", None)
    return f"; {note}" if note else ""


def main(argv: list[str] | None = None) -> int:
    threads.configure()  # OpenMP defaults must be in the environment before torch loads
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except FastganError as e:
        print(f"fastgan: error: {e}{_note(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastgan: interrupted (the newest checkpoint in the run folder is intact; --resume auto continues)",
              file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user error: one line unless asked for the traceback
        if line := user_system_error(e):  # permissions, a full disk, a missing path, memory: the user's to fix
            print(f"fastgan: error: {line}{_note(e)}", file=sys.stderr)
            return 2
        if os.environ.get("FASTGAN_DEBUG"):
            raise
        print(f"fastgan: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(set FASTGAN_DEBUG=1 for the traceback and report it){_note(e)}", file=sys.stderr)
        return 1
