"""One home for every default: frozen dataclasses, presets, and ``--set`` overrides.

A field's comment gives its unit and why it has that default; the CLI reads these
fields, so the Python API and the command line cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fastgan.errors import ConfigError

DEFAULT_PRESET = "digits-cdcgan"
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer


def _field(default: Any, *, choices: tuple[Any, ...] = (), resumable: bool = False) -> Any:
    """A field whose allowed values or resume rule are declared here, once: ``validate``, the CLI's
    ``choices`` and ``describe_keys`` read them. ``resumable``: a run may resume with another value
    (bookkeeping, how the step runs, or a knob the NaN recovery turns), unlike the training math."""
    return field(default=default, metadata={"choices": tuple(choices), "resumable": resumable})


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _field("dcgan", choices=("dcgan", "mlp"))  # mlp: the dense conditional GAN of Mirza & Osindero
    resolution: int = 32  # px, square; 28 (MNIST-native) or a power of two >= 32
    channels: int = 0  # image channels; 0 = take it from the dataset
    num_classes: int = 0  # label count for conditional models; 0 = take it from the dataset
    z_dim: int = 100  # latent size (DCGAN paper)
    g_width: int = 64  # G channels at its last hidden layer (ngf); doubles per layer towards z, capped at 8x
    d_width: int = 64  # D channels after its first conv (ndf); doubles per layer, capped at 8x
    # concat: label to z and label planes to D; acgan: auxiliary classifier head on D
    conditioning: str = _field("none", choices=("none", "concat", "acgan"))
    label_mode: str = _field("onehot", choices=("onehot", "embed"))  # how G sees the label
    embed_dim: int = 50  # label embedding size when label_mode = embed
    # none: the WGAN-GP critic (the penalty is per sample); spectral: every D weight spectrally normalised
    # (Miyato et al. 2018), no BatchNorm
    d_norm: str = _field("batch", choices=("batch", "none", "spectral"))
    d_dropout: float = 0.0  # dropout probability after each D activation (a D stabiliser)
    # ProGAN's minibatch standard deviation before D's head: D sees how varied a batch is (against mode dropping)
    d_mbstd: bool = False
    kernels: str = _field("torch", choices=("torch", "triton", "auto"), resumable=True)  # BatchNorm+activation impl
    # torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of each rank's slice;
    # resumable like the world size itself, which also changes what a BatchNorm batch is
    sync_bn: bool = _field(False, resumable=True)

    @property
    def label_classes(self) -> int:
        """Classes G and D are conditioned on: ``num_classes`` for conditional models, 0 otherwise."""
        return self.num_classes if self.conditioning != "none" else 0


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # digits (bundled, no download) | mnist | emnist-letters | cifar10 | folder | celeba | ...
    # folder holding the files; "" = $FASTGAN_DATA/<dataset folder>, else ./data/<dataset folder>
    root: str = _field("", resumable=True)
    split: str = "train"  # train | test (LSUN's test split is its val export)
    hflip: bool = False  # random horizontal flip on the device (wrong for digits and letters)
    # auto: device when the uint8 set fits, else stream (never dali: that one is asked for by name)
    loader: str = _field("auto", choices=("auto", "device", "stream", "dali"), resumable=True)
    cache_resolution: int = 0  # px of the decoded cache of folder/celeba/lsun/imagenet; 0 = model.resolution
    crop: float = 1.0  # centre square crop before resizing, as a fraction of the shorter side (CelebA DCGAN: 0.7)
    crop_pad: int = 0  # random-crop augmentation on the device: reflect-pad this many px, crop back; 0 = off
    class_folders: bool = False  # image folder: first-level sub-folders become class labels
    attribute: str = ""  # CelebA attribute used as a 0/1 label (e.g. Smiling); "" = no labels
    categories: str = ""  # dataset lsun: comma list of categories combined, label = position in the list
    cache_dir: str = _field("", resumable=True)  # where decoded caches live; "" = $FASTGAN_CACHE, else ~/.cache/fastgan
    loader_workers: int = _field(2, resumable=True)  # stream loader worker processes (0 = read in the training process)
    prepare_workers: int = _field(0, resumable=True)  # decode processes when a cache is built; 0 = one per CPU core
    # auto: the uint8 set may take at most this share of free device memory
    device_fraction: float = _field(0.5, resumable=True)
    # DiffAugment (Zhao et al. 2020) on every image D sees, real and fake: comma list of translation, cutout,
    # color; "" = off. For small datasets (~1k-10k images), where D otherwise memorises the reals.
    diffaugment: str = ""


@dataclass(frozen=True)
class LossConfig:
    kind: str = _field("ns", choices=("ns", "hinge", "wgan-gp"))  # ns: non-saturating BCE on logits
    gp_weight: float = 10.0  # lambda of the gradient penalty (WGAN-GP paper)
    label_smoothing: float = _field(0.0, resumable=True)  # one-sided: real target = 1 - this (Salimans et al. use 0.1)
    # std of Gaussian noise on D's inputs at step 0, in [-1, 1] pixel units
    instance_noise: float = _field(0.0, resumable=True)
    instance_noise_steps: int = 0  # steps over which that std anneals linearly to 0; 0 = the run's train.steps,
    # resolved when the run is created and stored, so a resume with a larger train.steps keeps the schedule
    aux_weight: float = 1.0  # weight of the ACGAN auxiliary cross-entropy


@dataclass(frozen=True)
class OptimConfig:
    g_lr: float = _field(2e-4, resumable=True)  # Adam learning rate of G (DCGAN paper)
    d_lr: float = _field(2e-4, resumable=True)  # Adam learning rate of D (DCGAN paper)
    g_betas: tuple[float, float] = (0.5, 0.999)  # beta1 0.5 as in the DCGAN paper
    d_betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1  # D updates per G update (WGAN-GP uses 5)
    ema_decay: float = 0.0  # exponential moving average of G's weights; 0 = off
    ema_start: int = 0  # step from which the EMA tracks G (before it, EMA = G)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _field(5000, resumable=True)  # G updates
    batch_size: int = 128  # DCGAN paper
    seed: int = 0
    device: str = _field("auto", resumable=True)  # auto (cuda when present) | cpu | cuda | cuda:N
    # run folder; "" = runs/<preset>, with a numeric suffix if it already holds a run
    out: str = _field("", resumable=True)
    # steps between metrics.jsonl lines (losses are read from the device only then)
    log_every: int = _field(50, resumable=True)
    sample_every: int = _field(500, resumable=True)  # steps between sample grids
    ckpt_every: int = _field(1000, resumable=True)  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = _field(3, resumable=True)  # step checkpoints kept on disk (oldest deleted first)
    grid_size: int = _field(100, resumable=True)  # images in a sample grid (a square number looks best)
    threads: int = _field(0, resumable=True)  # torch CPU threads; 0 = torch's default
    # How the step runs (fastgan/engine/fast.py); the math is the same, so a run may resume with other choices.
    # torch.compile G and D; the WGAN-GP penalty still differentiates the uncompiled D twice
    compile: bool = _field(False, resumable=True)
    # bf16: autocast, no scaler; fp16: autocast + gradient scalers (checkpointed)
    amp: str = _field("none", choices=("none", "bf16", "fp16"), resumable=True)
    # NHWC weights and activations: faster convolutions on tensor-core GPUs
    channels_last: bool = _field(False, resumable=True)
    # capture D step(s) + G step + Adam + EMA as one CUDA graph, replayed each step (CUDA)
    cuda_graph: bool = _field(False, resumable=True)
    fast: bool = _field(False, resumable=True)  # turn on the best of the above the device supports (printed at start)
    # metric sinks beside metrics.jsonl (always written): "jsonl" or "jsonl,tensorboard" (RUN_DIR/tb, --tensorboard)
    loggers: str = _field("jsonl", resumable=True)
    # fine-tune: a checkpoint of another run whose G, D and EMA start this new run; "" = off (read once, at step 0)
    init_from: str = _field("", resumable=True)
    freeze_d: int = 0  # FreezeD (Mo et al. 2020): D's first K blocks (conv + norm) get no updates; 0 = off


@dataclass(frozen=True)
class EvalConfig:
    every: int = _field(0, resumable=True)  # steps between in-training evaluations (FID etc.); 0 = off
    samples: int = _field(2000, resumable=True)  # generated images per evaluation (FID depends on it: always reported)
    metric: str = "fid"  # the metric that picks best.pt: fid, classifier_fid (lower is better), inception_score_mean,
    # classifier_is, classifier_acc (higher is better)
    # stop after this many evaluations without improvement; 0 = never stop early
    patience: int = _field(0, resumable=True)
    batch_size: int = _field(250, resumable=True)  # batch size of the feature network (results do not depend on it)
    # Inception FID (the reference metric; ~6 GFLOP per image, slow on CPU); false = classifier only
    inception: bool = _field(True, resumable=True)
    # FID Inception weights; "" = $FASTGAN_DATA/inception, the cache, or pytorch-fid's download
    weights: str = _field("", resumable=True)
    # domain classifier (`fastgan classifier train`); "" = the cached one for the dataset, if any
    classifier: str = _field("", resumable=True)
    # real training images behind the reference statistics (cached on disk); 0 = all
    reference: int = _field(0, resumable=True)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = _field(DEFAULT_PRESET, resumable=True)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        try:
            kw: dict[str, Any] = {}
            for f in fields(cls):
                if f.name not in d:
                    continue
                if f.name == "preset":
                    kw["preset"] = str(d["preset"])
                    continue
                sub_cls = _SECTIONS[f.name]
                sub = {k: _coerce_loaded(sub_cls, k, v) for k, v in d[f.name].items() if k in _field_names(sub_cls)}
                kw[f.name] = sub_cls(**sub)
            return cls(**kw)
        except (TypeError, AttributeError, ValueError) as e:
            raise ConfigError(f"stored config is not a fastgan config ({e})") from None


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}

def key_fields() -> dict[str, dataclasses.Field]:
    """Every config key (``section.field``, and ``preset``) -> its dataclass field."""
    out: dict[str, dataclasses.Field] = {}
    for sec, cls in _SECTIONS.items():
        out.update({f"{sec}.{f.name}": f for f in fields(cls)})
    out["preset"] = next(f for f in fields(Config) if f.name == "preset")
    return out


def choices(key: str) -> tuple[Any, ...]:
    """The values ``key`` allows; () when any value of its type goes."""
    return key_fields()[key].metadata.get("choices", ())


# Keys that may change between a run and its resumption, read from the fields' ``resumable`` marks.
RESUMABLE_CHANGES = frozenset(k for k, f in key_fields().items() if f.metadata.get("resumable"))


def describe_keys() -> list[str]:
    """One line per key: default, allowed values, and whether a resumed run may change it."""
    lines = []
    for key, f in key_fields().items():
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        allowed = f.metadata.get("choices", ())
        lines.append(f"{key} = {json.dumps(_plain(default))}" + (f"  [{' | '.join(allowed)}]" if allowed else "")
                     + ("  (may change on resume)" if f.metadata.get("resumable") else ""))
    return lines


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _coerce_loaded(cls: type, name: str, value: Any) -> Any:
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits-cdcgan": (
        "conditional DCGAN on scikit-learn's bundled 8x8 digits at 32 px (no download; the default)",
        {
            "data.dataset": "digits",
            "model.resolution": 32,
            "model.conditioning": "concat",
            "model.g_width": 32,
            "model.d_width": 32,
            "model.z_dim": 64,
            "train.steps": 1500,
            "train.batch_size": 64,
            "train.log_every": 50,
            "train.sample_every": 250,
            "train.ckpt_every": 500,
            "optim.ema_decay": 0.99,
            "optim.ema_start": 200,
        },
    ),
    "mnist-dcgan": (
        "unconditional DCGAN on MNIST at its native 28 px",
        {"data.dataset": "mnist", "model.resolution": 28, "train.steps": 10000},
    ),
    "mnist-cdcgan": (
        "conditional DCGAN (label concat) on MNIST at 28 px",
        {"data.dataset": "mnist", "model.resolution": 28, "model.conditioning": "concat", "train.steps": 10000},
    ),
    "mnist-acgan": (
        "ACGAN on MNIST at 28 px (auxiliary classifier in D)",
        {"data.dataset": "mnist", "model.resolution": 28, "model.conditioning": "acgan", "train.steps": 10000},
    ),
    # Tuned for a fixed CPU budget (bench/quality/README.md): width 32 and 2 critic steps at Adam 2e-4 reached a
    # classifier-FID of 38 where the WGAN-GP paper's width 64, 5 critic steps, 1e-4 reached 174 in the same time.
    "fashion-wgan-gp": (
        "WGAN-GP on Fashion-MNIST at 32 px (critic without BatchNorm, width 32, 2 critic steps, Adam 2e-4 (0, 0.9))",
        {
            "data.dataset": "fashion-mnist",
            "model.resolution": 32,
            "model.g_width": 32,
            "model.d_width": 32,
            "model.d_norm": "none",
            "loss.kind": "wgan-gp",
            "optim.n_critic": 2,
            "optim.g_lr": 2e-4,
            "optim.d_lr": 2e-4,
            "optim.g_betas": (0.0, 0.9),
            "optim.d_betas": (0.0, 0.9),
            "train.batch_size": 64,
            "train.steps": 20000,
        },
    ),
    "cifar10-dcgan": (
        "DCGAN on CIFAR-10 at 32 px",
        {"data.dataset": "cifar10", "data.hflip": True, "model.resolution": 32, "train.steps": 50000},
    ),
    "celeba-64": (
        "DCGAN on CelebA faces, centre crop 70% then 64 px",
        {"data.dataset": "celeba", "data.crop": 0.7, "data.hflip": True, "model.resolution": 64, "train.steps": 50000},
    ),
    "lsun-church-128": (
        "DCGAN on LSUN church outdoor at 128 px (the official LMDB export)",
        {
            "data.dataset": "lsun-church",
            "data.hflip": True,
            "model.resolution": 128,
            "model.g_width": 64,
            "model.d_width": 64,
            "train.steps": 100000,
        },
    ),
    "emnist-letters": (
        "conditional DCGAN on EMNIST letters at 28 px, 26 classes",
        {
            "data.dataset": "emnist-letters",
            "model.resolution": 28,
            "model.conditioning": "concat",
            "train.steps": 20000,
        },
    ),
}


def all_keys() -> dict[str, type]:
    """Every settable key, ``section.field`` -> its type hint."""
    out: dict[str, Any] = {}
    for sec, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            out[f"{sec}.{f.name}"] = hints[f.name]
    return out


def _resolve_key(key: str) -> str:
    keys = all_keys()
    if key in keys:
        return key
    matches = [k for k in keys if k.split(".", 1)[1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"ambiguous key '{key}': say which one of {', '.join(matches)}")
    if key == "preset":
        raise ConfigError("the preset is not a --set key: name it first (`fastgan train mnist-dcgan ...`) or set "
                          "`preset = \"...\"` at the top of a --config file")
    raise ConfigError(f"unknown config key '{key}': `fastgan train --dry-run` lists every key")


def parse_value(key: str, text: Any, hint: Any) -> Any:
    """Turn a ``--set`` string (or a preset value) into the field's type, or say why not."""
    if not isinstance(text, str):
        if typing.get_origin(hint) is tuple and isinstance(text, (list, tuple)):
            return tuple(float(v) for v in text)
        return text
    try:
        if hint is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if typing.get_origin(hint) is tuple:
            parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
            n = len(typing.get_args(hint))
            if len(parts) != n:
                raise ValueError
            return tuple(float(p) for p in parts)
        return text
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(hint, "two numbers like 0.5,0.999")
        raise ConfigError(f"bad value for {key}: '{text}' is not {kind}") from None


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    keys = all_keys()
    by_section: dict[str, dict[str, Any]] = {}
    for raw_key, raw_val in overrides.items():
        key = _resolve_key(raw_key)
        val = parse_value(key, raw_val, keys[key])
        sec, name = key.split(".", 1)
        by_section.setdefault(sec, {})[name] = val
    for sec, kv in by_section.items():
        cfg = replace(cfg, **{sec: replace(getattr(cfg, sec), **kv)})
    return cfg


def parse_set_args(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}' (example: --set train.steps=200)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)} (`fastgan presets` lists them)")
    cfg = apply_overrides(Config(preset=name), PRESETS[name][1])
    cfg = apply_overrides(cfg, overrides or {})
    if not cfg.data.cache_resolution:  # decoded sources are cached at the training resolution
        cfg = replace(cfg, data=replace(cfg.data, cache_resolution=cfg.model.resolution))
    validate(cfg)
    return cfg


def _one_of(key: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"bad value for {key}: '{value}' (choose one of {', '.join(map(str, allowed))})")


def _value(cfg: Config, key: str) -> Any:
    sec, _, name = key.partition(".")
    return getattr(getattr(cfg, sec), name) if name else getattr(cfg, sec)


SPLITS_MIN = 10  # eval.reference: FID statistics of fewer real images mean nothing (eval.samples has the same floor)
MAX_THREADS = 1024  # train.threads; more hangs or crashes OpenMP long before it could help
SPLITS = ("train", "test")  # data.split
# eval.metric: what the in-training evaluator can report (fastgan/metrics/training.py), and which way is better
EVAL_METRICS = ("fid", "inception_score_mean", "classifier_fid", "classifier_is", "classifier_acc")
HIGHER_IS_BETTER = ("inception_score_mean", "classifier_is", "classifier_acc")


def _known_metric(name: str) -> bool:
    return name in EVAL_METRICS or bool(re.fullmatch(r"classifier_acc_\d+", name))


def higher_is_better(metric: str) -> bool:
    """True for scores (Inception Score, classifier accuracy), False for distances (FID)."""
    return metric in HIGHER_IS_BETTER or metric.startswith("classifier_acc_")


def validate(cfg: Config) -> None:
    m, lo, o, t = cfg.model, cfg.loss, cfg.optim, cfg.train
    for key, f in key_fields().items():
        if f.metadata.get("choices"):
            _one_of(key, _value(cfg, key), f.metadata["choices"])
    r = m.resolution
    if not (r == 28 or (r >= 32 and r & (r - 1) == 0)):
        raise ConfigError(f"bad value for model.resolution: {r} (use 28 or a power of two from 32 up: 32, 64, 128)")
    if m.channels not in (0, 1, 3):
        raise ConfigError(f"bad value for model.channels: {m.channels} (use 1, 3, or 0 to take it from the dataset)")
    for key, v in (("model.z_dim", m.z_dim), ("model.g_width", m.g_width), ("model.d_width", m.d_width),
                   ("train.steps", t.steps), ("train.batch_size", t.batch_size), ("optim.n_critic", o.n_critic),
                   ("train.log_every", t.log_every), ("train.sample_every", t.sample_every),
                   ("train.ckpt_every", t.ckpt_every), ("train.keep_checkpoints", t.keep_checkpoints),
                   ("train.grid_size", t.grid_size), ("model.embed_dim", m.embed_dim)):
        if v < 1:
            raise ConfigError(f"bad value for {key}: {v} (must be at least 1)")
    # Far beyond any real GAN, and past them the run ends in an allocation error or a silent kill by the kernel.
    for key, v, most in (("model.z_dim", m.z_dim, 65536), ("model.g_width", m.g_width, 8192),
                         ("model.d_width", m.d_width, 8192), ("model.embed_dim", m.embed_dim, 65536),
                         ("model.resolution", m.resolution, 1024), ("train.batch_size", t.batch_size, 65536),
                         ("train.grid_size", t.grid_size, 10000), ("optim.n_critic", o.n_critic, 1000),
                         ("eval.samples", cfg.eval.samples, 10**7), ("train.steps", t.steps, MAX_SEED)):
        if v > most:
            raise ConfigError(f"bad value for {key}: {v} (at most {most})")
    if not 0.0 <= m.d_dropout < 1.0:
        raise ConfigError(f"bad value for model.d_dropout: {m.d_dropout} (must be in [0, 1))")
    if not 0.0 <= lo.label_smoothing < 0.5:
        raise ConfigError(f"bad value for loss.label_smoothing: {lo.label_smoothing} (must be in [0, 0.5))")
    if not 0.0 <= o.ema_decay < 1.0:
        raise ConfigError(f"bad value for optim.ema_decay: {o.ema_decay} (must be in [0, 1); 0 turns EMA off)")
    for key, lr in (("optim.g_lr", o.g_lr), ("optim.d_lr", o.d_lr)):
        if not 0 < lr <= 1.0:  # Adam steps are about lr per weight: past 1 a GAN only diverges (and float32 overflows)
            raise ConfigError(f"bad value for {key}: {lr} (a number in (0, 1]; the DCGAN paper uses 0.0002)")
    for key, betas in (("optim.g_betas", o.g_betas), ("optim.d_betas", o.d_betas)):
        if not all(0.0 <= b < 1.0 for b in betas):  # torch.optim.Adam's own check, before the run starts
            raise ConfigError(f"bad value for {key}: {','.join(map(str, betas))} (each in [0, 1), e.g. 0.5,0.999)")
    # weights and strengths: finite and >= 0 (NaN fails every comparison, so it is caught here too)
    for key, v, most in (("loss.gp_weight", lo.gp_weight, 1e6), ("loss.aux_weight", lo.aux_weight, 1e6),
                         ("loss.instance_noise", lo.instance_noise, 100.0)):  # noise std in [-1, 1] pixel units
        if not 0.0 <= v <= most:
            raise ConfigError(f"bad value for {key}: {v} (a number from 0 to {most:g})")
    for key, v in (("optim.ema_start", o.ema_start), ("loss.instance_noise_steps", lo.instance_noise_steps),
                   ("train.threads", t.threads)):
        if v < 0:
            raise ConfigError(f"bad value for {key}: {v} (must be >= 0" + ("; 0 = torch's default)" if
                              key == "train.threads" else ")"))
    if t.threads > MAX_THREADS:  # thousands of OpenMP threads hang or crash the process
        raise ConfigError(f"bad value for train.threads: {t.threads} (at most {MAX_THREADS}; 0 = torch's default, "
                          "one per core)")
    if cfg.data.split not in SPLITS:
        raise ConfigError(f"bad value for data.split: '{cfg.data.split}' (choose one of {', '.join(SPLITS)})")
    if not _known_metric(cfg.eval.metric):
        raise ConfigError(f"bad value for eval.metric: '{cfg.eval.metric}' (choose one of {', '.join(EVAL_METRICS)}, "
                          "or classifier_acc_<label>)")
    for key in key_fields():
        v = _value(cfg, key)
        if isinstance(v, str) and "\x00" in v:
            raise ConfigError(f"bad value for {key}: it contains a NUL character (\\0): remove it")
    d = cfg.data
    if not 0.0 < d.crop <= 1.0:
        raise ConfigError(f"bad value for data.crop: {d.crop} (a fraction of the shorter side, in (0, 1])")
    if d.cache_resolution and not 8 <= d.cache_resolution <= 1024:
        raise ConfigError(f"bad value for data.cache_resolution: {d.cache_resolution} (8 to 1024 px, or 0)")
    for key, v in (("data.crop_pad", d.crop_pad), ("data.loader_workers", d.loader_workers),
                   ("data.prepare_workers", d.prepare_workers), ("eval.every", cfg.eval.every),
                   ("eval.samples", cfg.eval.samples), ("eval.patience", cfg.eval.patience),
                   ("eval.reference", cfg.eval.reference)):
        if v < 0:
            raise ConfigError(f"bad value for {key}: {v} (must be >= 0)")
    if 0 < cfg.eval.reference < SPLITS_MIN:
        raise ConfigError(f"bad value for eval.reference: {cfg.eval.reference} (at least {SPLITS_MIN} real images, "
                          "like eval.samples; 0 = all)")
    if cfg.eval.batch_size < 1:
        raise ConfigError(f"bad value for eval.batch_size: {cfg.eval.batch_size} (must be at least 1)")
    if not 0 <= t.seed <= MAX_SEED:
        raise ConfigError(f"bad value for train.seed: {t.seed} (must be in 0 .. 2**63-1)")
    if not 0.0 < d.device_fraction <= 1.0:
        raise ConfigError(f"bad value for data.device_fraction: {d.device_fraction} (must be in (0, 1])")
    if lo.kind == "wgan-gp" and m.d_norm == "batch":
        raise ConfigError(
            "loss.kind=wgan-gp needs a critic without BatchNorm (the penalty is per sample): add --set model.d_norm=none"
        )
    validate_extras(cfg)


# -- config files (`fastgan train --config FILE`) and the checks of the keys they may carry ---------------------------
# A run's own config.json or a TOML file with the same sections; values are type-checked here, so a mistake is
# reported with its file and line instead of surfacing later as a bad value with no place.

LOGGERS = ("jsonl", "tensorboard")  # train.loggers
DIFFAUGMENT_OPS = ("translation", "cutout", "color")  # data.diffaugment (fastgan/data/diffaugment.py)


def comma_list(key: str, text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``"a,b"`` -> ("a", "b"), each checked against ``allowed``."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    for n in names:
        if n not in allowed:
            raise ConfigError(f"bad value for {key}: '{n}' (a comma list of {', '.join(allowed)})")
    return names


def validate_extras(cfg: Config) -> None:
    """The checks of train.loggers, data.diffaugment and train.freeze_d (called by ``validate``)."""
    comma_list("train.loggers", cfg.train.loggers, LOGGERS)
    comma_list("data.diffaugment", cfg.data.diffaugment, DIFFAUGMENT_OPS)
    if cfg.train.freeze_d < 0:
        raise ConfigError(f"bad value for train.freeze_d: {cfg.train.freeze_d} (D blocks to freeze, >= 0)")


@dataclass(frozen=True)
class ConfigFile:
    """What a config file says: its preset (or None) and ``section.key`` overrides, with the line of each."""

    path: str
    preset: str | None
    overrides: dict[str, Any]
    lines: dict[str, int]

    def annotate(self, err: ConfigError) -> ConfigError:
        """A ``bad value for KEY`` error about a key this file set, with the file and line added."""
        m = re.match(r"bad value for ([\w.]+)", str(err))
        if m and m.group(1) in self.lines:
            return ConfigError(f"{err} (set in {self.path}, line {self.lines[m.group(1)]})")
        return err


def _key_line(text: str, section: str, name: str) -> int:
    """1-based line of ``name`` inside ``section`` of a TOML or pretty-printed JSON file (0 if not found)."""
    lines = text.splitlines()
    key_re = re.compile(rf'^\s*"?{re.escape(name)}"?\s*[=:]')
    dotted = re.compile(rf'^\s*"?{re.escape(section)}"?\s*\.\s*"?{re.escape(name)}"?\s*=')
    head = re.compile(rf'^\s*(\[\s*"?{re.escape(section)}"?\s*\]|"{re.escape(section)}"\s*:)')
    inside = False
    for i, ln in enumerate(lines, 1):
        if dotted.match(ln):
            return i
        if head.match(ln):
            inside = True
            if key_re.match(ln.split("{", 1)[-1]) or re.search(rf'[{{,]\s*"?{re.escape(name)}"?\s*[=:]', ln):
                return i  # an inline table / one-line JSON object
            continue
        if inside and re.match(r"^\s*\[", ln):  # the next TOML table
            inside = False
        if inside and key_re.match(ln):
            return i
    return next((i for i, ln in enumerate(lines, 1) if re.search(rf'\b{re.escape(name)}\b', ln)), 0)


def type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` (as a TOML/JSON parser returns it) cannot be a field of type ``hint``, or None."""
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if typing.get_origin(hint) is tuple:
        n = len(typing.get_args(hint))
        ok = isinstance(value, (list, tuple)) and len(value) == n and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return None if ok else f"a list of {n} numbers"
    return None if isinstance(value, str) else "a string"


def load_config_file(path: str) -> ConfigFile:
    """Read a run's config.json or a TOML file with the same sections (``[model]``, ``[train]``, ...).

    Every key must exist and every value must have its field's type; otherwise a ConfigError names the
    key, the file and the line."""
    p = Path(path)
    kind = p.suffix.lower()
    if kind not in (".json", ".toml"):
        raise ConfigError(f"config file {path} must end in .json (a run's config.json) or .toml")
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist: pass a run's config.json or a .toml file")
    text = p.read_text(encoding="utf-8", errors="replace")
    if kind == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path}, line {e.lineno}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise ConfigError(f"config file {path} is not a fastgan config: nested too deeply") from None
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError("TOML config files need Python 3.11+ or `pip install tomli`") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML ({e})") from None
        except RecursionError:
            raise ConfigError(f"config file {path} is not a fastgan config: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}, line 1: expected a table of sections ({', '.join(_SECTIONS)})")
    hints = all_keys()
    overrides: dict[str, Any] = {}
    lines: dict[str, int] = {}
    preset = None
    for sec, body in data.items():
        if sec == "preset":
            if not isinstance(body, str):
                raise ConfigError(f"config file {path}, line {_key_line(text, '', 'preset')}: preset must be a string")
            preset = body
            continue
        if sec not in _SECTIONS:
            where = next((i for i, ln in enumerate(text.splitlines(), 1) if sec in ln), 0)
            raise ConfigError(f"config file {path}, line {where}: unknown section '{sec}' "
                              f"(sections: {', '.join(_SECTIONS)}, and preset)")
        if not isinstance(body, dict):
            raise ConfigError(f"config file {path}, line {_key_line(text, '', sec)}: '{sec}' must be a table of keys")
        for name, value in body.items():
            key = f"{sec}.{name}"
            line = _key_line(text, sec, name)
            if key not in hints:
                raise ConfigError(f"config file {path}, line {line}: unknown key '{key}' "
                                  "(`fastgan train --dry-run` prints every key)")
            why = type_problem(value, hints[key])
            if why:
                raise ConfigError(f"config file {path}, line {line}: {key} must be {why}, got {json.dumps(value)}")
            overrides[key] = tuple(value) if isinstance(value, list) else value
            lines[key] = line
    return ConfigFile(str(path), preset, overrides, lines)
