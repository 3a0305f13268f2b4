"""The training loop: data, steps, logging, sample grids, checkpoints, resume."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fastgan.config import Config, validate
from fastgan.data import ImageDataset, load_dataset
from fastgan.devices import resolve_device
from fastgan.engine import checkpoint as ckpt_mod
from fastgan.engine.build import assemble
from fastgan.engine.sampling import fixed_latents, generate, grid_columns
from fastgan.engine.state import TrainState
from fastgan.errors import CheckpointError, ConfigError, TrainingDiverged
from fastgan.images import plot_losses, save_grid


def make_evaluator(cfg: Config, dataset: ImageDataset, device: torch.device):
    """The in-training evaluator: a callable ``G -> {metric: value}`` (fastgan.metrics provides it)."""
    try:
        from fastgan.metrics.training import make_evaluator as _make
    except ImportError:
        raise ConfigError("eval.every needs the metrics package (fastgan.metrics), which this build lacks") from None
    return _make(cfg, dataset, device)


def _default_out(preset: str) -> Path:
    base = Path("runs") / preset
    if not ckpt_mod.list_checkpoints(base) and not (base / "metrics.jsonl").exists():
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
        self.device = resolve_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        ds = load_dataset(cfg.data)
        ckpt = ckpt_mod.load_checkpoint(resume_from) if resume_from else None
        run = assemble(cfg, ds, self.device, ckpt, resume_from)
        self.cfg = cfg = run.cfg
        self.dataset_info: dict[str, Any] = {
            "name": ds.name, "count": len(ds), "channels": ds.channels, "num_classes": ds.num_classes,
            "class_names": list(ds.class_names),
        }
        self.run_dir = run_dir
        self.quiet = quiet
        self.state: TrainState = run.state
        self.loader, self.spec, self.fast_options, self.stepper = run.loader, run.spec, run.options, run.stepper
        self.fixed_z, self.fixed_y = fixed_latents(cfg, self.device)
        self.evaluator = make_evaluator(cfg, ds, self.device) if cfg.eval.every else None
        self.best: dict[str, Any] = {"metric": cfg.eval.metric, "value": None, "step": None, "bad_evals": 0}
        if ckpt is not None:
            self.best = ckpt.get("best") or self.best
        if cfg.train.fast:
            print(f"fastgan: {run.options_line}", file=sys.stderr)
        self.last_good: Path | None = resume_from

    # -- side effects -------------------------------------------------------
    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(self.cfg.to_json() + "\n")

    def _trim_metrics(self) -> None:
        """On resume, drop log lines from beyond the checkpoint (work that was lost)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= self.state.step]
        path.write_text("".join(ln + "\n" for ln in keep))

    def _log(self, row: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def save_samples(self, name: str) -> Path:
        path = self.run_dir / "samples" / name
        x = generate(self.state.sampler(), self.fixed_z, self.fixed_y)
        save_grid(x, path, grid_columns(self.cfg))
        return path

    def _check_finite(self, values: dict[str, float]) -> None:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            where = (
                f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"training diverged: {', '.join(bad)} became NaN/inf by step {self.state.step}; stopped, {where} "
                "(lower the learning rates or add label smoothing / instance noise, then --resume)"
            )

    def save_checkpoint(self) -> Path:
        bad = [n for n, p in self.state.G.named_parameters() if not torch.isfinite(p).all()]
        bad += [n for n, p in self.state.D.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            self._check_finite({f"parameter {bad[0]}": float("nan")})
        path = ckpt_mod.checkpoint_path(self.run_dir, self.state.step)
        payload = ckpt_mod.make_payload(self.state, self.cfg, self.dataset_info, {"best": self.best},
                                        scaler=self.stepper.scaler_state())
        ckpt_mod.save_atomic(payload, path)
        ckpt_mod.prune_checkpoints(self.run_dir, self.cfg.train.keep_checkpoints)
        self.last_good = path
        return path

    def evaluate(self) -> bool:
        """Run the evaluator, log it, keep best.pt; False when patience says stop."""
        values = self.evaluator(self.state.sampler())
        self._log({"step": self.state.step, **{k: round(float(v), 6) for k, v in values.items()}})
        key, b = self.cfg.eval.metric, self.best
        if key not in values:
            raise ConfigError(f"eval.metric '{key}' is not computed here: choose one of {', '.join(values)}")
        if b["value"] is None or values[key] < b["value"]:
            b.update(value=float(values[key]), step=self.state.step, bad_evals=0)
            payload = ckpt_mod.make_payload(self.state, self.cfg, self.dataset_info, {"best": self.best},
                                            scaler=self.stepper.scaler_state())
            ckpt_mod.save_atomic(payload, self.run_dir / "best.pt")
        else:
            b["bad_evals"] += 1
        return not (self.cfg.eval.patience and b["bad_evals"] >= self.cfg.eval.patience)

    # -- the loop -----------------------------------------------------------
    def noise_std(self) -> float | None:
        lo = self.cfg.loss
        if lo.instance_noise <= 0:
            return None
        span = lo.instance_noise_steps or self.cfg.train.steps
        frac = max(0.0, 1.0 - self.state.step / span)
        return lo.instance_noise * frac

    def train_one(self) -> dict[str, torch.Tensor]:
        """n_critic D updates, one G update and the EMA update (fastgan.engine.fast.Stepper);
        statistics stay on the device."""
        st, o = self.state, self.cfg.optim
        decay = (o.ema_decay if st.step >= o.ema_start else 0.0) if st.G_ema is not None else None
        out = self.stepper(self.noise_std(), decay)
        st.step += 1
        return out

    def run(self) -> RunResult:
        st, t = self.state, self.cfg.train
        self._write_config()
        self._trim_metrics()
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        n_acc = 0
        last: dict[str, float] = {}
        window_t, window_start = time.perf_counter(), st.step
        bar = tqdm(total=t.steps, initial=st.step, desc="train", unit="step", disable=self.quiet,
                   dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        try:
            while st.step < t.steps:
                out = self.train_one()
                if sums:  # one fused add per step (a CUDA-graph step is otherwise a single launch)
                    torch._foreach_add_(list(sums.values()), [out[k] for k in sums])
                else:  # copies: a CUDA-graph step returns its static output buffers
                    sums = {k: v.clone() for k, v in out.items()}
                n_acc += 1
                bar.update(1)
                at_end = st.step == t.steps
                if st.step % t.log_every == 0 or at_end:
                    values = {k: v.item() / n_acc for k, v in sums.items()}  # the one sync per interval
                    self._check_finite(values)
                    now = time.perf_counter()
                    ips = (st.step - window_start) * t.batch_size / max(now - window_t, 1e-9)
                    window_t, window_start = now, st.step
                    last = {k: round(v, 6) for k, v in values.items()}
                    self._log({"step": st.step, "images_per_s": round(ips, 1), **last})
                    bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}", img_s=f"{ips:.0f}")
                    sums, n_acc = {}, 0
                if st.step % t.sample_every == 0 or at_end:
                    self.save_samples(f"step-{st.step:07d}.png")
                if self.evaluator is not None and (st.step % self.cfg.eval.every == 0 or at_end):
                    if not self.evaluate():
                        at_end = True
                        print(f"\nstopping early at step {st.step}: {self.cfg.eval.metric} has not improved for "
                              f"{self.cfg.eval.patience} evaluations (best {self.best['value']:.4f} at step "
                              f"{self.best['step']}, in best.pt)", file=sys.stderr)
                if st.step % t.ckpt_every == 0 or at_end:
                    if sums:
                        self._check_finite({k: v.item() for k, v in sums.items()})
                    self.save_checkpoint()
                if at_end:
                    break
        finally:
            bar.close()
        final = self.last_good
        if final is None:  # nothing trained: resumed at or beyond train.steps
            final = self.save_checkpoint()
        self.save_samples("final.png")
        plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
        return RunResult(self.run_dir, st.step, last, final, time.perf_counter() - t0)


def find_resume(resume: str, run_dir: Path) -> Path | None:
    """``auto``: the newest readable checkpoint of ``run_dir`` (None if it has none); else a path."""
    if resume != "auto":
        p = Path(resume)
        if not p.is_file():
            raise CheckpointError(f"checkpoint {p} does not exist: pass a checkpoint file or --resume auto")
        return p
    for p in reversed(ckpt_mod.list_checkpoints(run_dir)):
        try:
            ckpt_mod.load_checkpoint(p)
            return p
        except CheckpointError as e:
            print(f"warning: skipping unreadable checkpoint ({e})", file=sys.stderr)
    return None


def run_dir_of_checkpoint(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def train(cfg: Config, resume: str | None = None, quiet: bool = False) -> RunResult:
    """Train (or continue) a run. ``resume``: None, ``"auto"`` or a checkpoint path."""
    if resume and resume != "auto":
        resume_path = find_resume(resume, Path())
        run_dir = Path(cfg.train.out) if cfg.train.out else run_dir_of_checkpoint(resume_path)
    else:
        run_dir = Path(cfg.train.out) if cfg.train.out else (
            Path("runs") / cfg.preset if resume else _default_out(cfg.preset))
        resume_path = find_resume("auto", run_dir) if resume else None
        if resume is None and ckpt_mod.list_checkpoints(run_dir):
            raise ConfigError(
                f"run folder {run_dir} already holds checkpoints: continue it with --resume auto, or pick a new --out"
            )
    trainer = Trainer(replace(cfg, train=replace(cfg.train, out=str(run_dir))), run_dir, resume_path, quiet)
    if resume and resume_path is None and not quiet:
        print(f"no checkpoint in {run_dir}: starting a new run", file=sys.stderr)
    return trainer.run()
