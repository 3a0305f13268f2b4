"""Train state, steps, loop and checkpoints."""

from fastgan.engine.loop import RunResult, Trainer, train
from fastgan.engine.state import TrainState, build_state

__all__ = ["RunResult", "Trainer", "TrainState", "build_state", "train"]
