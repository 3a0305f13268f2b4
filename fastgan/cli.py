"""The ``fastgan`` command line. Each subcommand lives in ``fastgan/commands/<name>.py``
with ``add_parser(subparsers)`` and ``run(args) -> int``; user errors print one line."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import os
import signal
import sys
import threading
import warnings

from fastgan import __version__, threads
from fastgan.errors import FastganError
from fastgan.fallback import FallbackWarning
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


# Native modules whose import Ctrl-C must not cut: a KeyboardInterrupt raised in a Python callback under torch's
# pybind11 code during `import torch` aborts the process ("terminate called after throwing an instance of
# 'pybind11::error_already_set'", exit -6) instead of reaching the handler below.
HEAVY_MODULES = frozenset({"torch", "torchvision", "triton", "numpy", "scipy", "PIL", "matplotlib", "sklearn", "onnx",
                           "onnxruntime", "nvidia"})
_INTERRUPTED = "fastgan: interrupted (the newest checkpoint in the run folder is intact; --resume auto continues)"


class _Deferred(importlib.abc.Loader):
    """A heavy module's own loader, run with SIGINT deferred (``_DeferSigint``)."""

    def __init__(self, loader, finder: _DeferSigint) -> None:
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with self.finder.deferred():
                self.loader.exec_module(module)
        finally:  # the module keeps its real loader (importlib.resources and friends ask it)
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _DeferSigint(importlib.abc.MetaPathFinder):
    """While a module of HEAVY_MODULES is first imported (its whole package, torch's C++ start-up included), a
    SIGINT is noted instead of raised; once the import is done it becomes the usual KeyboardInterrupt. A second
    SIGINT during the import exits at once (nothing is lost while a library loads)."""

    def __init__(self) -> None:
        self.active = False
        self.pending = False

    def find_spec(self, name, path=None, target=None):
        if self.active or name not in HEAVY_MODULES or threading.current_thread() is not threading.main_thread() \
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None  # nested, a thread, or SIGINT already handled by someone (StopSignals): import as usual
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Deferred(spec.loader, self)
                return spec
        return None

    def _on_sigint(self, signum, frame) -> None:
        if self.pending:  # asked twice: stop now
            os.write(2, (_INTERRUPTED + "\n").encode())
            os._exit(128 + signal.SIGINT)
        self.pending = True

    @contextlib.contextmanager
    def deferred(self):
        self.active, self.pending = True, False
        old = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
            self.active = False
        if self.pending:  # the import is complete: now the Ctrl-C counts
            self.pending = False
            raise KeyboardInterrupt


def _one_line(message, category, filename, lineno, line=None, _default=warnings.formatwarning) -> str:
    """fastgan's own warnings (a fast path falling back, ...) as the one line they are, without Python's
    ``file:line: Category:`` prefix and source line; any other warning as Python formats it."""
    if issubclass(category, FallbackWarning):
        return f"{message}\n"  # already "fastgan: PATH falls back: REASON"
    return _default(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    guard = _DeferSigint()
    sys.meta_path.insert(0, guard)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also during start-up (parsing, the first imports)
        print(_INTERRUPTED, file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
        sys.meta_path.remove(guard)


def _main(argv: list[str] | None) -> int:
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
    except Exception as e:  # a bug, not a user error: one line unless asked for the traceback
        if line := user_system_error(e):  # permissions, a full disk, a missing path, memory: the user's to fix
            print(f"fastgan: error: {line}{_note(e)}", file=sys.stderr)
            return 2
        if os.environ.get("FASTGAN_DEBUG"):
            raise
        print(f"fastgan: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(set FASTGAN_DEBUG=1 for the traceback and report it){_note(e)}", file=sys.stderr)
        return 1
