"""The training loop: data, steps, logging, sample grids, checkpoints, resume."""

from __future__ import annotations

import errno
import json
import math
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fastgan.config import Config, higher_is_better, validate
from fastgan.data import ImageDataset, load_dataset
from fastgan.devices import device_name, resolve_device, usable_threads
from fastgan.engine import checkpoint as ckpt_mod
from fastgan.engine import distributed, finetune, runfolder
from fastgan.engine.build import assemble
from fastgan.engine.loggers import make_logger
from fastgan.engine.sampling import fixed_latents, generate, grid_columns
from fastgan.engine.state import TrainState
from fastgan.errors import CheckpointError, ConfigError, FastganError, TrainingDiverged
from fastgan.images import plot_losses, save_grid
from fastgan.progress import Bar


def make_evaluator(cfg: Config, dataset: ImageDataset, device: torch.device):
    """The in-training evaluator: a callable ``G -> {metric: value}`` (fastgan.metrics provides it)."""
    try:
        from fastgan.metrics.training import make_evaluator as _make
    except ImportError:
        raise ConfigError("eval.every needs the metrics package (fastgan.metrics), which this build lacks") from None
    return _make(cfg, dataset, device)


def _default_out(preset: str) -> Path:
    base = Path("runs") / preset
    if not ckpt_mod.list_checkpoints(base) and not (base / "metrics.jsonl").exists() and not runfolder.is_busy(base):
        return base
    i = 2
    while (Path("runs") / f"{preset}-{i}").exists():
        i += 1
    return Path("runs") / f"{preset}-{i}"


@dataclass
class RunResult:
    run_dir: Path
    step: int
    last_metrics: dict[str, float]
    checkpoint: Path
    seconds: float


class Trainer:
    """Owns one run: its folder, state, loader and the schedule of side effects."""

    def __init__(self, cfg: Config, run_dir: Path, resume_from: Path | None = None, quiet: bool = False) -> None:
        validate(cfg)
        self.device = distributed.setup(resolve_device(cfg.train.device))  # torchrun: this rank's device
        if cfg.train.threads:
            torch.set_num_threads(usable_threads(cfg.train.threads))
        ds = load_dataset(cfg.data)
        if cfg.train.batch_size > len(ds):  # legal (batches draw with replacement), but rarely what was meant
            print(f"warning: batch size {cfg.train.batch_size} is larger than the dataset ({len(ds)} images): each "
                  "batch repeats images (drawn with replacement); a smaller --batch-size repeats fewer", file=sys.stderr)
        ckpt = ckpt_mod.load_checkpoint(resume_from) if resume_from else None
        cfg = resolve_schedule(cfg, ckpt)
        run = assemble(cfg, ds, self.device, ckpt, resume_from)
        self.cfg = cfg = run.cfg
        self.dataset_info: dict[str, Any] = {
            "name": ds.name, "count": len(ds), "channels": ds.channels, "num_classes": ds.num_classes,
            "class_names": list(ds.class_names),
        }
        self.run_dir = run_dir
        self.main = distributed.is_main()  # torchrun: rank 0 alone writes files and prints
        self.quiet = quiet or not self.main
        self.state: TrainState = run.state
        self.loader, self.spec, self.fast_options, self.stepper = run.loader, run.spec, run.options, run.stepper
        self.fixed_z, self.fixed_y = fixed_latents(cfg, self.device)
        # torchrun: rank 0 first (it writes the cached reference statistics the others read)
        self.evaluator = distributed.main_first(lambda: make_evaluator(cfg, ds, self.device)) if cfg.eval.every else None
        reported = getattr(self.evaluator, "keys", None)
        if reported is not None and cfg.eval.metric not in reported:  # before step 1, not at the first evaluation
            names = [k for k in reported if not re.search(r"_std$|_\d+$", k)]  # not per-label or spread keys
            raise ConfigError(f"eval.metric '{cfg.eval.metric}' is not computed by this run's evaluation: choose one "
                              f"of {', '.join(names)} with --set eval.metric=...")
        self.best: dict[str, Any] = {"metric": cfg.eval.metric, "value": None, "step": None, "bad_evals": 0}
        if ckpt is not None:
            self.best = ckpt.get("best") or self.best
        if cfg.train.fast and quiet and self.main:  # otherwise the run header says it
            print(f"fastgan: {run.options_line}", file=sys.stderr)
        self.options_line = run.options_line
        self.resume_from, self.start_step = resume_from, self.state.step
        self.changed = [d for d in ckpt_mod.config_differences(cfg, ckpt_mod.config_of(ckpt), resumable=True)
                        if not d.startswith("train.out:")] if ckpt is not None else []
        self.last_good: Path | None = resume_from
        self.logger = make_logger(cfg, run_dir, self.state.step)  # extra sinks: train.loggers / --tensorboard
        # checkpoints known to load (written by this run, or resumed from); others are checked before pruning
        self._readable: dict[Path, bool] = {resume_from: True} if resume_from else {}

    # -- side effects -------------------------------------------------------
    def _write_config(self) -> None:
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        runfolder.write_text_atomic(self.run_dir / "config.json", self.cfg.to_json() + "\n")

    def _trim_metrics(self) -> None:
        """Drop log lines from beyond the checkpoint (work that was lost) and any line a crash or a full disk
        cut short; rewritten atomically, so every later read and append sees whole lines."""
        path = self.run_dir / "metrics.jsonl"
        if not self.main or not path.exists():
            return
        rows, torn = runfolder.read_jsonl(path)
        keep = [r for r in rows if isinstance(r.get("step", 0), int) and r.get("step", 0) <= self.state.step]
        if torn or len(keep) != len(rows):
            runfolder.write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))
        if torn:
            print(f"fastgan: dropped {torn} unreadable line(s) of {path} (a write cut short)", file=sys.stderr)

    def _log(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        runfolder.append_line(self.run_dir / "metrics.jsonl", json.dumps(row))
        self.logger.scalars(row)

    def save_samples(self, name: str) -> Path:
        path = self.run_dir / "samples" / name
        distributed.average_buffers(self.state.G, self.state.G_ema)  # torchrun: one set of BatchNorm statistics
        if not self.main:
            return path
        x = generate(self.state.sampler(), self.fixed_z, self.fixed_y)
        save_grid(x, path, grid_columns(self.cfg))
        self.logger.images(self.state.step, x, grid_columns(self.cfg))
        return path

    def _check_finite(self, values: dict[str, float]) -> None:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"training diverged: {', '.join(bad)} became NaN/inf by step {self.state.step}; stopped, "
                + self.recovery_advice()
            )

    def recovery_advice(self) -> str:
        """Where the last good state is and the exact command that continues from it with halved learning
        rates (they, label smoothing and instance noise may change on resume)."""
        o = self.cfg.optim
        lrs = f"--set optim.g_lr={o.g_lr / 2:g} --set optim.d_lr={o.d_lr / 2:g}"
        if self.last_good is None:
            return f"no checkpoint was written yet: run the same command again with {lrs}"
        mine = self.last_good.parent == self.run_dir / "checkpoints"
        resume = "auto" if mine else shlex.quote(str(self.last_good))
        return (f"the last good checkpoint is {self.last_good}; continue from it with lower learning rates: "
                f"fastgan train --out {shlex.quote(str(self.run_dir))} --resume {resume} {lrs} "
                "(or add --set loss.label_smoothing=0.1 or loss.instance_noise=0.1)")

    def _first_nonfinite(self) -> str | None:
        """The first parameter or buffer (BatchNorm running statistics too) that holds NaN/inf; one host sync."""
        named = [(f"{m} {n}", t) for m, mod in (("G", self.state.G), ("D", self.state.D), ("G_ema", self.state.G_ema))
                 if mod is not None for n, t in [*mod.named_parameters(), *mod.named_buffers()]
                 if t.is_floating_point()]
        ok = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        return next((name for (name, _), good in zip(named, ok) if not good), None)

    def _is_readable(self, path: Path) -> bool:
        if path not in self._readable:
            self._readable[path] = ckpt_mod.is_readable(path)
        return self._readable[path]

    def save_checkpoint(self) -> Path:
        bad = self._first_nonfinite()
        if bad:
            self._check_finite({bad: float("nan")})
        path = ckpt_mod.checkpoint_path(self.run_dir, self.state.step)
        distributed.before_checkpoint(self.state)  # torchrun: averaged BatchNorm statistics, same parameters
        rngs = distributed.rng_extra()  # torchrun: every rank's RNG state
        if not self.main:
            self.last_good = path
            return path
        payload = ckpt_mod.make_payload(self.state, self.cfg, self.dataset_info, {"best": self.best, **rngs},
                                        scaler=self.stepper.scaler_state())
        ckpt_mod.save_atomic(payload, path)
        self._readable[path] = True
        self.last_good = path
        for moved in ckpt_mod.prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints, self._is_readable):
            print(f"fastgan: warning: unreadable checkpoint moved aside to {moved} (not counted as kept)",
                  file=sys.stderr)
        return path

    def evaluate(self) -> bool:
        """Run the evaluator, log it, keep best.pt; False when patience says stop."""
        distributed.average_buffers(self.state.G, self.state.G_ema)  # torchrun: one set of BatchNorm statistics
        values = self.evaluator(self.state.sampler())
        self._log({"step": self.state.step, **{k: round(float(v), 6) for k, v in values.items()}})
        key, b = self.cfg.eval.metric, self.best
        if key not in values:
            raise ConfigError(f"eval.metric '{key}' is not computed here: choose one of {', '.join(values)}")
        better = values[key] > b["value"] if b["value"] is not None and higher_is_better(key) else (
            b["value"] is None or values[key] < b["value"])
        if better:
            b.update(value=float(values[key]), step=self.state.step, bad_evals=0)
            payload = ckpt_mod.make_payload(self.state, self.cfg, self.dataset_info, {"best": self.best},
                                            scaler=self.stepper.scaler_state())
            if self.main:
                ckpt_mod.save_atomic(payload, self.run_dir / "best.pt")
        else:
            b["bad_evals"] += 1
        return not (self.cfg.eval.patience and b["bad_evals"] >= self.cfg.eval.patience)

    # -- the loop -----------------------------------------------------------
    def noise_std(self) -> float | None:
        lo = self.cfg.loss
        if lo.instance_noise <= 0:
            return None
        frac = max(0.0, 1.0 - self.state.step / lo.instance_noise_steps)  # resolved when the run began
        return lo.instance_noise * frac

    def train_one(self) -> dict[str, torch.Tensor]:
        """n_critic D updates, one G update and the EMA update (fastgan.engine.fast.Stepper);
        statistics stay on the device."""
        st, o = self.state, self.cfg.optim
        decay = (o.ema_decay if st.step >= o.ema_start else 0.0) if st.G_ema is not None else None
        out = self.stepper(self.noise_std(), decay)
        st.step += 1
        return out

    def header(self) -> list[str]:
        """What this run is, printed at its start (fastgan train without --quiet)."""
        def n(m: torch.nn.Module) -> str:
            return f"{sum(p.numel() for p in m.parameters()):,}"

        d = self.dataset_info
        classes = f", {d['num_classes']} classes" if d.get("num_classes") else ""
        how = (f"resumed from {self.resume_from} at step {self.start_step}" if self.resume_from
               else "new run")
        return [f"run folder {self.run_dir} ({how}, training to step {self.cfg.train.steps})",
                f"device: {device_name(self.device)}",
                f"data: {d['name']}, {d['count']:,} images{classes}",
                f"model: G {n(self.state.G)} parameters, D {n(self.state.D)} parameters",
                self.options_line] + ([f"changed on resume: {'; '.join(self.changed)}"] if self.changed else [])

    def _nothing_to_train(self) -> RunResult:
        print(f"fastgan: run {self.run_dir} is already at step {self.state.step} and train.steps is "
              f"{self.cfg.train.steps}: nothing trained, nothing written; pass --steps above {self.state.step} "
              "to continue it", file=sys.stderr)
        return RunResult(self.run_dir, self.state.step, {}, self.resume_from, 0.0)

    def _stop(self, signum: int, sums: dict[str, torch.Tensor]) -> None:
        """A signal asked to stop: make sure this step is checkpointed, then leave the loop."""
        if self.last_good != ckpt_mod.checkpoint_path(self.run_dir, self.state.step):
            if sums:
                self._check_finite({k: v.item() for k, v in sums.items()})
            self.save_checkpoint()
        raise runfolder.TrainingStopped(
            signum, f"stopped by {signal.Signals(signum).name} at step {self.state.step}: saved {self.last_good}; "
            f"continue with: fastgan train --out {shlex.quote(str(self.run_dir))} --resume auto", self.last_good)

    def _save_before_failing(self, err: Exception) -> None:
        """Checkpoint the current (whole) step before ``err`` ends the run, so the steps since the last checkpoint
        are not lost; a single process only (torchrun: the other ranks would wait in the checkpoint's collectives)."""
        if distributed.active() or self.last_good == ckpt_mod.checkpoint_path(self.run_dir, self.state.step):
            return
        try:
            if self._first_nonfinite() is None:
                path = self.save_checkpoint()
                # the CLI adds this to the error's one line
                err.fastgan_note = f"step {self.state.step} was saved to {path}: --resume auto continues once fixed"
        except Exception as e:  # noqa: BLE001 - the original error is the one to report
            err.fastgan_note = (f"step {self.state.step} could not be saved ({type(e).__name__}); the last "
                                f"checkpoint is {self.last_good or 'none'}")

    def _disk_full(self, path: Path | str, needed: int | None) -> FastganError:
        size = f", {runfolder.megabytes(needed)} needed" if needed else ""
        free = runfolder.DiskFull(Path(path), 0).free
        intact = (f"the last checkpoint {self.last_good} is intact" if self.last_good
                  else "no checkpoint was written yet")
        return FastganError(f"disk full writing {path} ({runfolder.megabytes(free)} free{size}); {intact}: "
                            "free space on that disk (or move the run folder), then continue with --resume auto")

    def run(self) -> RunResult:
        if self.resume_from is not None and self.state.step >= self.cfg.train.steps:
            return self._nothing_to_train()
        try:
            self._write_config()
            self._trim_metrics()
            if not self.quiet:
                for line in self.header():
                    print(f"fastgan: {line}", file=sys.stderr)
            with runfolder.StopSignals() as stop:
                return self._loop(stop)
        except runfolder.DiskFull as e:
            if e.errno == errno.EFBIG:  # the file size limit, not the disk: its own message, and what is intact
                intact = f"the last checkpoint {self.last_good} is intact" if self.last_good else "no checkpoint yet"
                raise FastganError(f"{e}; {intact}: continue with --resume auto") from None
            raise self._disk_full(e.path, e.needed) from None
        except OSError as e:  # a sample grid, the loss curve, best.pt's evaluation...
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._disk_full(e.filename or f"into {self.run_dir}", None) from None
            raise

    def _loop(self, stop: runfolder.StopSignals) -> RunResult:
        st, t = self.state, self.cfg.train
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        n_acc = 0
        last: dict[str, float] = {}
        window_t, window_start = time.perf_counter(), st.step
        plotted_at = -1
        in_step = False
        bar = Bar(total=t.steps, initial=st.step, desc="train", unit="step", disable=self.quiet,
                   dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        try:
            while st.step < t.steps:
                in_step = True  # an error inside a step leaves it half done: nothing of it may be saved
                out = self.train_one()
                in_step = False
                if sums:  # one fused add per step (a CUDA-graph step is otherwise a single launch)
                    torch._foreach_add_(list(sums.values()), [out[k] for k in sums])
                else:  # copies: a CUDA-graph step returns its static output buffers
                    sums = {k: v.clone() for k, v in out.items()}
                n_acc += 1
                bar.update(1)
                at_end = st.step == t.steps
                if st.step % t.log_every == 0 or at_end:
                    # the one sync per interval (torchrun: the ranks' mean)
                    values = {k: v.item() / n_acc for k, v in distributed.mean(sums).items()}
                    self._check_finite(values)
                    now = time.perf_counter()
                    ips = (st.step - window_start) * t.batch_size / max(now - window_t, 1e-9)
                    window_t, window_start = now, st.step
                    last = {k: round(v, 6) for k, v in values.items()}
                    self._log({"step": st.step, "images_per_s": round(ips, 1), **last})
                    bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}", img_s=f"{ips:.0f}",
                                    refresh=False)  # shown by the next draw: the last line is drawn once
                    sums, n_acc = {}, 0
                if st.step % t.sample_every == 0 or at_end:
                    self.save_samples(f"step-{st.step:07d}.png")
                    if self.main:
                        plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
                        plotted_at = st.step
                evaluate_now = self.evaluator is not None and (st.step % self.cfg.eval.every == 0 or at_end)
                if evaluate_now and not self.evaluate():
                    at_end = True
                    print(f"\nstopping early at step {st.step}: {self.cfg.eval.metric} has not improved for "
                          f"{self.cfg.eval.patience} evaluations (best {self.best['value']:.4f} at step "
                          f"{self.best['step']}, in best.pt)", file=sys.stderr)
                if st.step % t.ckpt_every == 0 or at_end:
                    if sums:
                        self._check_finite({k: v.item() for k, v in distributed.mean(sums).items()})
                    self.save_checkpoint()
                # SIGTERM/SIGINT: saved at this step boundary (torchrun: the next log step, agreed by all ranks)
                signum = distributed.agreed_stop(stop.signum, st.step % t.log_every == 0 or at_end)
                if signum is not None:
                    self._stop(signum, sums)
                if at_end:
                    break
        except (runfolder.TrainingStopped, runfolder.DiskFull, TrainingDiverged):
            raise
        except Exception as e:  # a side effect failed (an evaluation, a sample grid): keep the steps done so far
            if not in_step:
                self._save_before_failing(e)
            raise
        finally:
            bar.close()
        self.save_samples("final.png")
        if self.main and plotted_at != st.step:  # the last step's plot, unless drawn there already
            plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
        self.logger.close()
        return RunResult(self.run_dir, st.step, last, self.last_good, time.perf_counter() - t0)


def scan_checkpoints(run_dir: Path) -> tuple[Path | None, list[Path]]:
    """The newest readable step checkpoint of ``run_dir`` (None if none) and the unreadable ones newer than it."""
    bad = []
    for p in reversed(ckpt_mod.list_checkpoints(run_dir)):
        try:
            ckpt_mod.load_checkpoint(p)
            return p, bad
        except CheckpointError:
            bad.append(p)
    return None, bad


def find_resume(resume: str, run_dir: Path) -> Path | None:
    """``auto``: the newest readable checkpoint of ``run_dir`` (None if it has none; an error if it has only
    unreadable ones: starting over would silently throw the run away); else a path."""
    if resume != "auto":
        p = Path(resume)
        if not p.is_file():
            what = "is not a regular file (a folder, FIFO or device)" if p.exists() else "does not exist"
            raise CheckpointError(f"checkpoint {p} {what}: pass a checkpoint file or --resume auto")
        return p
    path, bad = scan_checkpoints(run_dir)
    if path is None and bad:
        raise CheckpointError(
            f"--resume auto found no readable checkpoint in {run_dir / 'checkpoints'} "
            f"({', '.join(p.name for p in bad)}: truncated or corrupt): move them out of that folder to start the "
            "run again, or pass --resume PATH to a good copy"
        )
    return path


def resolve_schedule(cfg: Config, ckpt: dict[str, Any] | None) -> Config:
    """``loss.instance_noise_steps=0`` means "this run's train.steps", resolved once, when the run starts, and
    stored in config.json and every checkpoint: a resume that raises --steps keeps the schedule (and so
    stays bit-identical to an uninterrupted run). Resuming with 0 takes the run's stored value."""
    if ckpt is None:
        n = cfg.loss.instance_noise_steps or cfg.train.steps
    else:
        stored = ckpt_mod.config_of(ckpt)
        n = stored.loss.instance_noise_steps or stored.train.steps  # checkpoints from before it was stored
        ckpt["config"].setdefault("loss", {})["instance_noise_steps"] = n
        n = cfg.loss.instance_noise_steps or n
    return replace(cfg, loss=replace(cfg.loss, instance_noise_steps=n))


def run_dir_of_checkpoint(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _check_resume_target(resume_path: Path, run_dir: Path) -> None:
    """``--resume PATH --out DIR`` where DIR is not PATH's own run: refused when DIR holds another run, whose log,
    config and checkpoints the resumed one would otherwise trim, overwrite and mix with its own."""
    if run_dir_of_checkpoint(resume_path).resolve() == run_dir.resolve():
        return
    if not (ckpt_mod.list_checkpoints(run_dir) or (run_dir / "metrics.jsonl").is_file()
            or (run_dir / "config.json").is_file()):
        return  # a new or empty folder: the run continues there as a branch
    ckpt_cfg = ckpt_mod.config_of(ckpt_mod.load_checkpoint(resume_path))
    try:
        folder_cfg = Config.from_dict(json.loads((run_dir / "config.json").read_bytes()))
        diffs = ckpt_mod.config_differences(ckpt_cfg, folder_cfg)
    except (OSError, ValueError, RecursionError, AttributeError, FastganError):
        diffs = ["its config.json is missing or unreadable"]
    if diffs:
        raise ConfigError(f"--out {run_dir} holds another run ({'; '.join(diffs[:3])}) and {resume_path} is not one "
                          "of its checkpoints: resuming there would mix the two runs' logs and checkpoints; pick a new "
                          f"--out, or leave --out off to continue in {run_dir_of_checkpoint(resume_path)}")


def _take_folder(run_dir: Path, lock: runfolder.RunLock, quiet: bool) -> None:
    """Under the lock: clear what an interrupted trainer left behind."""
    count, size = runfolder.remove_stale_temps(run_dir)
    if count and not quiet:
        print(f"fastgan: removed {count} temp file(s) ({runfolder.megabytes(size)}) left by an interrupted write",
              file=sys.stderr)
    if lock.previous and not quiet:
        print(f"fastgan: note: the previous trainer of {run_dir} ({runfolder.describe_holder(lock.previous)}) "
              "ended without releasing it (killed?): taking over", file=sys.stderr)


def train(cfg: Config, resume: str | None = None, quiet: bool = False) -> RunResult:
    """Train (or continue) a run. ``resume``: None, ``"auto"`` or a checkpoint path. The run folder is locked
    for the run's life; a second trainer on it gets ``RunFolderBusy``. SIGTERM/SIGINT save a checkpoint and
    raise ``runfolder.TrainingStopped``."""
    distributed.setup(resolve_device(cfg.train.device))  # under torchrun: the process group, before any collective
    if resume and resume != "auto":
        resume_path = find_resume(resume, Path())
        run_dir = Path(cfg.train.out) if cfg.train.out else run_dir_of_checkpoint(resume_path)
    else:
        run_dir = Path(cfg.train.out) if cfg.train.out else (
            Path("runs") / cfg.preset if resume else _default_out(cfg.preset))
    run_dir = distributed.broadcast_object(run_dir)  # torchrun: rank 0's pick (a new folder is chosen by the disk)
    finetune.check_out(cfg, run_dir)  # before the lock: a fine-tune writes nothing into its source run
    if resume and resume != "auto":
        _check_resume_target(resume_path, run_dir)
    # torchrun: rank 0 alone locks and tidies the folder and picks the checkpoint; the others take its pick
    with distributed.main_only(lambda: runfolder.RunLock(run_dir)) as lock:
        if lock is not None:
            _take_folder(run_dir, lock, quiet)
        if resume == "auto" and lock is not None:
            resume_path = find_resume("auto", run_dir)
            for p in scan_checkpoints(run_dir)[1]:  # newer than resume_path, unreadable: keep them, out of the way
                print(f"fastgan: warning: checkpoint {p} is unreadable: moved aside to {runfolder.move_aside(p)}; "
                      f"resuming from {resume_path}", file=sys.stderr)
        elif resume is None and lock is not None:
            resume_path = None
            if ckpt_mod.list_checkpoints(run_dir):
                raise ConfigError(f"run folder {run_dir} already holds checkpoints: continue it with --resume auto, "
                                  "or pick a new --out")
        resume_path = distributed.broadcast_object(resume_path if lock is not None else None)
        trainer = Trainer(replace(cfg, train=replace(cfg.train, out=str(run_dir))), run_dir, resume_path, quiet)
        if resume and resume_path is None and lock is not None:  # loud even with --quiet: a typo in --out must not go unnoticed
            print(f"fastgan: NOTE: no checkpoint in {run_dir}: starting a NEW run", file=sys.stderr)
        return trainer.run()
