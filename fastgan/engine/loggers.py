"""Metric sinks beside metrics.jsonl: ``train.loggers`` (``--tensorboard`` adds ``tensorboard``).

metrics.jsonl stays the loop's own record (a resume trims it, the loss curve and tests read it), so
``jsonl`` is always on. A ``Logger`` receives what the loop already has on the host: each metrics.jsonl
row (losses read at the every-``log_every`` sync, eval metrics) and each fixed-latent sample grid (made
at ``sample_every`` anyway), so logging adds no host sync to a step. Only the main process logs
(rank 0 of a torchrun job); the others get the no-op ``Logger``.

TensorBoard: ``torch.utils.tensorboard`` with the ``tensorboard`` package alone (``pip install
'fastgan[tensorboard]'``, no TensorFlow), event files in ``RUN_DIR/tb/``: the scalars under their
metrics.jsonl names, the sample grids as ``samples``, the resolved config as hparams (and as text).
A resumed run purges events past its checkpoint's step, as it trims metrics.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fastgan.config import LOGGERS, Config, comma_list
from fastgan.errors import ConfigError
from fastgan.images import make_grid, to_uint8

TB_DIR = "tb"  # RUN_DIR/tb holds the event files (tensorboard --logdir RUN_DIR/tb, or a parent of many runs)


class Logger:
    """The interface (and the no-op sink): ``scalars`` per metrics.jsonl row, ``images`` per sample grid."""

    def scalars(self, row: dict[str, Any]) -> None:
        """``row``: a metrics.jsonl line, ``{"step": int, name: float, ...}``."""

    def images(self, step: int, x: torch.Tensor, columns: int) -> None:
        """``x``: the fixed-latent samples (N, C, H, W) in [-1, 1], laid out ``columns`` per row."""

    def close(self) -> None:
        pass


class TensorBoardLogger(Logger):
    """Writes to ``run_dir/tb`` once something is logged (a run refused at start leaves no folder)."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard (train.loggers=tensorboard) needs the 'tensorboard' package: "
                              "pip install 'fastgan[tensorboard]'") from None
        self._writer_cls, self.cfg, self.dir, self.start_step = SummaryWriter, cfg, Path(run_dir) / TB_DIR, start_step
        self._writer = None
        self._last_image_step: int | None = None

    @property
    def writer(self):
        if self._writer is None:
            # purge_step: on resume, TensorBoard drops the earlier events from beyond the checkpoint's step
            self._writer = self._writer_cls(str(self.dir), purge_step=self.start_step + 1 if self.start_step else None)
            self._write_config()
        return self._writer

    def _write_config(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        flat = {"preset": self.cfg.preset}
        for sec, body in self.cfg.to_dict().items():
            if isinstance(body, dict):
                flat.update({f"{sec}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
                             for k, v in body.items()})
        # the metrics the hparams table shows beside each run: their scalars are the ones logged below
        metrics = [self.cfg.eval.metric] if self.cfg.eval.every else []
        exp, ssi, sei = hparams(flat, {m: 0.0 for m in [*metrics, "d_loss", "g_loss"]})
        for summary in (exp, ssi, sei):
            self._writer.file_writer.add_summary(summary)
        self._writer.add_text("config", "```\n" + json.dumps(self.cfg.to_dict(), indent=2) + "\n```", self.start_step)

    def scalars(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()  # once per log_every steps: a live `tensorboard` sees each row as it lands

    def images(self, step: int, x: torch.Tensor, columns: int) -> None:
        if step == self._last_image_step:  # final.png repeats the last step's grid
            return
        self._last_image_step = step
        grid = make_grid(to_uint8(x), columns)  # the PNG's layout: one class per column for conditional models
        if grid.shape[-1] == 1:
            self.writer.add_image("samples", grid[..., 0], step, dataformats="HW")
        else:
            self.writer.add_image("samples", grid, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class Loggers(Logger):
    """Every configured sink behind one ``Logger``."""

    def __init__(self, sinks: list[Logger]) -> None:
        self.sinks = sinks

    def scalars(self, row: dict[str, Any]) -> None:
        for s in self.sinks:
            s.scalars(row)

    def images(self, step: int, x: torch.Tensor, columns: int) -> None:
        for s in self.sinks:
            s.images(step, x, columns)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
        torch.distributed.get_rank() == 0


def make_logger(cfg: Config, run_dir: Path, start_step: int = 0) -> Logger:
    """The sinks ``train.loggers`` asks for, for this process (a missing package is a ConfigError at once)."""
    names = comma_list("train.loggers", cfg.train.loggers, LOGGERS)
    sinks: list[Logger] = []
    if "tensorboard" in names and is_main_process():
        sinks.append(TensorBoardLogger(cfg, run_dir, start_step))
    return Loggers(sinks)
