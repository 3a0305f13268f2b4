"""``fastgan`` with one rank failing, for the tests: FASTGAN_TEST_FAULT=raise|kill:RANK:STEP makes rank RANK
raise (or SIGKILL itself) when it starts step STEP. Run by torchrun in place of ``-m fastgan``."""

from __future__ import annotations

import os
import signal
import sys

from fastgan.cli import main
from fastgan.engine import loop

how, rank, step = os.environ["FASTGAN_TEST_FAULT"].split(":")
_train_one = loop.Trainer.train_one


def train_one(self):
    if int(os.environ["RANK"]) == int(rank) and self.state.step + 1 == int(step):
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"test fault on rank {rank} at step {step}")
    return _train_one(self)


loop.Trainer.train_one = train_one
sys.exit(main(sys.argv[1:]))
