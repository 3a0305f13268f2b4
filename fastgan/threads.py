"""CPU threading defaults, set before torch loads its OpenMP runtime (``fastgan.cli.main`` calls
``configure()`` first thing).

torch's CPU ops run on libgomp, whose idle workers spin-wait (300,000 polls) before they sleep. When
the cores are busy with other processes, a spinning worker burns the time slice its partner needs to
reach the next barrier, and every parallel op then waits for a descheduled thread. On the 2-core
CI-class machine under load (load average 10-12, other engineers' jobs), 20 steps of the default job
(2 threads) took 58-67 s with libgomp's default and 6-13 s with ``OMP_WAIT_POLICY=PASSIVE`` (workers
sleep at once), against 5-7 s with one thread; ``GOMP_SPINCOUNT`` 1k/10k landed in between and 100k
was worse than the default. At load 7 the same 20 steps took 7-29 s before and 2.0 s after (README,
Benchmarks). But PASSIVE cost 13 % on an idle machine (every barrier pays a futex wake-up), so the default
is now a short spin, ``GOMP_SPINCOUNT=10000``: `bench/omp_policy.py` on an idle 2-core Intel Xeon (SPR),
cDCGAN-32 eager, relative to libgomp's default: short spin 0.99 idle and 1.80 with two busy loops; PASSIVE
0.87 and 1.53. (Under heavier load, 10-20 on the AMD EPYC, an earlier measurement put 10k between the two;
that machine could not be measured again.) The thread count is kept, so an idle machine uses every core.

libgomp reads these variables once, when it is loaded (``import torch``), so they must be in the
environment before that; a process that imported torch already is left alone. A variable the user
set (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``OMP_NUM_THREADS``) always wins; either of the first two
leaves the other unset too, as libgomp would see it without fastgan. Python users
who want the same default call ``configure()`` before importing torch.

A thread count that is not a positive whole number (``OMP_NUM_THREADS=abc``, ``0``, ``-3``) is removed with one
warning line: libgomp would print its own complaint and carry on with its default (one thread per core), which
is what removing it gives, said once in fastgan's words.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping

# a short spin (libgomp's default is 300,000 polls): why, and the measurements, in the module docstring
DEFAULTS = {"GOMP_SPINCOUNT": "10000"}
# thread counts: OpenMP takes a comma list (one count per nesting level), MKL one number; each at least 1
THREAD_COUNTS = {"OMP_NUM_THREADS": re.compile(r"\s*\+?0*[1-9]\d*\s*(,\s*\+?0*[1-9]\d*\s*)*"),
                 "MKL_NUM_THREADS": re.compile(r"\s*\+?0*[1-9]\d*\s*")}


def _drop_bad_counts(env: MutableMapping[str, str]) -> list[str]:
    """Remove thread counts the runtimes would refuse; name each on stderr. Returns the names removed."""
    dropped = []
    for name, valid in THREAD_COUNTS.items():
        value = env.get(name)
        if value is not None and not valid.fullmatch(value):
            del env[name]
            dropped.append(name)
            print(f"fastgan: warning: {name}={value!r:.40} is not a positive whole number: ignored (the default, "
                  f"one thread per core, is used); set it to e.g. {name}=4 or unset it", file=sys.stderr)
    return dropped


def configure(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put the defaults the user did not set into ``environ`` (os.environ); return what was set."""
    env = os.environ if environ is None else environ
    if environ is None and "torch" in sys.modules:
        return {}  # the OpenMP runtime has read the environment already
    _drop_bad_counts(env)
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:  # the user chose how workers wait
        return {}
    chosen = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(chosen)
    return chosen
