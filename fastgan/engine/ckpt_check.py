"""Is a loaded file a whole, sound fastgan checkpoint? Checked once, on load, so that sample, export, fid and
``train --resume`` meet one clean CheckpointError instead of a KeyError or a shape error deep inside.

What is checked: every key the commands read (config, step, rng, models, optim, and the optional dataset,
scaler, best), the config's types and values (``fastgan.config.validate``), each state dict's keys, shapes and
dtypes against the models that config builds (on the meta device: no memory, no init), the Adam state against
those parameters, the RNG states' layout, and that every weight and buffer is finite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastgan.config import Config, all_keys, type_problem, validate
from fastgan.errors import CheckpointError, ConfigError
from fastgan.models import build_models

REQUIRED = ("config", "step", "rng", "models", "optim")
_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # Adam's per-parameter tensors
_FLAGS = ("amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay")
SECTIONS = ("model", "data", "loss", "optim", "train", "eval")  # every checkpoint has them; a missing key inside
# one takes its default (so checkpoints of older versions, without newer keys, still load)


class _Bad(Exception):
    """One problem, as a phrase ('models.G is a list, not a state dict')."""


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise _Bad(why)


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        special = "meta" if x.device.type == "meta" else "quantized" if x.is_quantized else \
            "sparse" if x.layout != torch.strided else ""
        return f"a {special} tensor" if special else "a tensor"
    return "None" if x is None else f"a {type(x).__name__}"


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _tensor(x: Any) -> bool:
    """A plain tensor with data: not sparse, quantized or on the meta device (those load, then fail anywhere)."""
    return (isinstance(x, torch.Tensor) and x.layout == torch.strided and not x.is_quantized
            and x.device.type != "meta")


def _scalar(x: Any) -> bool:
    """A number, or a one-element float tensor (capturable Adam keeps lr and step on the device)."""
    return _number(x) or (_tensor(x) and x.numel() == 1 and x.is_floating_point())


def _config(raw: Any) -> Config:
    _need(isinstance(raw, dict), f"config is {_kind(raw)}, not a dict")
    missing = [s for s in SECTIONS if s not in raw]
    _need(not missing, f"its config has no {missing[0] if missing else ''} section")
    hints = all_keys()
    for sec, body in raw.items():
        if sec == "preset":
            _need(isinstance(body, str), f"config.preset is {_kind(body)}, not a string")
            continue
        if not any(k.startswith(f"{sec}.") for k in hints):
            continue  # a section of another fastgan version: ignored, as Config.from_dict does
        _need(isinstance(body, dict), f"config.{sec} is {_kind(body)}, not a dict")
        for name, value in body.items():
            key = f"{sec}.{name}"
            why = key in hints and type_problem(value, hints[key])
            _need(not why, f"config {key} must be {why}, got {value!r:.40}")
    try:
        cfg = Config.from_dict(raw)
        validate(cfg)
    except ConfigError as e:
        raise _Bad(f"its config is invalid ({e})") from None
    _need(cfg.model.channels in (1, 3), f"config model.channels is {cfg.model.channels}: a trained model has 1 or 3")
    return cfg


def _state_dict(sd: Any, ref: dict[str, torch.Tensor], name: str) -> None:
    _need(isinstance(sd, dict), f"{name} is {_kind(sd)}, not a state dict")
    missing = [k for k in ref if k not in sd]
    extra = [k for k in sd if k not in ref]
    if missing:
        raise _Bad(f"{name} does not match its config: it lacks {missing[0]} ({len(missing)} missing)")
    if extra:
        raise _Bad(f"{name} does not match its config: it has an unexpected entry {str(extra[0])[:40]!r}")
    for k, want in ref.items():
        t = sd[k]
        _need(_tensor(t), f"{name}.{k} is {_kind(t)}, not a plain tensor")
        _need(t.shape == want.shape, f"{name} does not match its config: {k} has shape {tuple(t.shape)}, the "
                                     f"config's model needs {tuple(want.shape)}")
        _need(t.dtype == want.dtype, f"{name}.{k} is {t.dtype}, not {want.dtype}")
        _need(not k.endswith("running_var") or bool((t >= 0).all()), f"{name}.{k} holds a negative variance")
    _finite({k: t for k, t in sd.items() if t.is_floating_point()}, name,
            "holds NaN or inf (the run had diverged when this was saved)")


def _finite(tensors: dict[str, torch.Tensor], name: str, why: str) -> None:
    """One pass over all of them (a few ops, not two per tensor); the culprit is looked up only on failure."""
    if tensors and not bool(torch.isfinite(torch.cat([t.reshape(-1) for t in tensors.values()])).all()):
        bad = next(k for k, t in tensors.items() if not bool(torch.isfinite(t).all()))
        raise _Bad(f"{name}.{bad} {why}")


def _optimizer(sd: Any, params: list[torch.Tensor], name: str) -> None:
    _need(isinstance(sd, dict), f"{name} is {_kind(sd)}, not an optimizer state")
    groups, state = sd.get("param_groups"), sd.get("state")
    _need(isinstance(groups, list) and groups, f"{name}.param_groups is {_kind(groups)}, not a list of groups")
    _need(isinstance(state, dict), f"{name}.state is {_kind(state)}, not a dict")
    ids: list[int] = []
    for g in groups:
        _need(isinstance(g, dict), f"{name}.param_groups holds {_kind(g)}, not a dict")
        _need(isinstance(g.get("params"), list) and all(_int(i) for i in g["params"]),
              f"{name}.param_groups[].params is not a list of indices")
        _need(_scalar(g.get("lr")), f"{name}.lr is {_kind(g.get('lr'))}, not a learning rate")
        b = g.get("betas")
        _need(isinstance(b, (list, tuple)) and len(b) == 2 and all(_scalar(v) for v in b),
              f"{name}.betas is not two numbers")
        for k in ("eps", "weight_decay"):
            _need(_number(g.get(k)), f"{name}.{k} is {_kind(g.get(k))}, not a number")
        for k in _FLAGS:  # torch fills in missing ones
            _need(g.get(k) is None or isinstance(g[k], bool), f"{name}.{k} is {_kind(g.get(k))}, not a flag")
        ids += g["params"]
    _need(sorted(ids) == list(range(len(params))), f"{name} covers {len(ids)} parameters, the model has {len(params)}")
    moments: dict[str, torch.Tensor] = {}
    for i, s in state.items():
        _need(_int(i) and 0 <= i < len(params), f"{name}.state has an entry {str(i)[:20]!r} for no parameter")
        _need(isinstance(s, dict), f"{name}.state[{i}] is {_kind(s)}, not a dict")
        _need(_scalar(s.get("step")), f"{name}.state[{i}].step is {_kind(s.get('step'))}, not a count")
        for k in _STATE_KEYS:
            if k not in s and k == "max_exp_avg_sq":
                continue
            t = s.get(k)
            _need(_tensor(t), f"{name}.state[{i}].{k} is {_kind(t)}, not a plain tensor")
            _need(t.shape == params[i].shape, f"{name}.state[{i}].{k} has shape {tuple(t.shape)}, its parameter "
                                              f"{tuple(params[i].shape)}")
            _need(t.is_floating_point(), f"{name}.state[{i}].{k} is {t.dtype}, not a float tensor")
            moments[f"state[{i}].{k}"] = t
    _finite(moments, name, "holds NaN or inf")


def _rng(r: Any) -> None:
    _need(isinstance(r, dict), f"rng is {_kind(r)}, not a dict")
    t = r.get("torch")
    ref = torch.get_rng_state()
    _need(_tensor(t) and t.dtype == torch.uint8 and t.shape == ref.shape,
          f"rng.torch is not a CPU generator state (uint8 {tuple(ref.shape)})")
    cuda = r.get("cuda")
    cuda_ref = torch.cuda.get_rng_state().shape if torch.cuda.is_available() else None
    _need(isinstance(cuda, list) and all(_tensor(c) and c.dtype == torch.uint8 and c.dim() == 1
                                         and (cuda_ref is None or c.shape == cuda_ref) for c in cuda),
          "rng.cuda is not a list of generator states")
    n = r.get("numpy")
    _need(isinstance(n, dict), f"rng.numpy is {_kind(n)}, not a dict")
    keys = n.get("keys")
    _need(_tensor(keys) and keys.shape == (624,) and not keys.is_floating_point(),
          "rng.numpy.keys is not 624 integers")
    _need(_int(n.get("pos")) and 0 <= n["pos"] <= 624 and _int(n.get("has_gauss")) and _number(n.get("cached")),
          "rng.numpy is not a numpy generator state")
    py = r.get("python")
    _need(isinstance(py, (list, tuple)) and len(py) == 3 and py[0] == 3 and isinstance(py[1], (list, tuple))
          and len(py[1]) == 625 and all(_int(v) and 0 <= v < 2**32 for v in py[1]) and py[1][-1] <= 624
          and (py[2] is None or _number(py[2])), "rng.python is not a Python random state")


def _optional(ckpt: dict[str, Any]) -> None:
    _need(isinstance(ckpt.get("fastgan_version", ""), str), "fastgan_version is not a string")
    ds = ckpt.get("dataset")
    _need(ds is None or isinstance(ds, dict), f"dataset is {_kind(ds)}, not a dict")
    if ds:
        _need(isinstance(ds.get("class_names", []), list), "dataset.class_names is not a list")
        _need(isinstance(ds.get("name", ""), str), "dataset.name is not a string")
        for k in ("count", "channels", "num_classes"):
            _need(_int(ds.get(k, 0)), f"dataset.{k} is not a count")
    sc = ckpt.get("scaler")
    _need(sc is None or (isinstance(sc, dict) and all(isinstance(v, dict) and v and all(
        _number(x) or isinstance(x, torch.Tensor) for x in v.values()) for v in sc.values())),
          f"scaler is {_kind(sc)}, not the gradient scalers' state")
    best = ckpt.get("best")
    if best is not None:
        _need(isinstance(best, dict), f"best is {_kind(best)}, not a dict")
        _need(isinstance(best.get("metric", ""), str), "best.metric is not a metric name")
        _need(best.get("value") is None or _number(best.get("value")), "best.value is not a number")
        _need(best.get("step") is None or _int(best.get("step")), "best.step is not a step")
        _need(_int(best.get("bad_evals", 0)), "best.bad_evals is not a count")


def _check(ckpt: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in ckpt]
    _need(not missing, f"it has no {' and no '.join(missing)}")
    cfg = _config(ckpt["config"])
    _need(_int(ckpt["step"]) and 0 <= ckpt["step"] < 2**63, f"step is {ckpt['step']!r:.30}, not a step count")
    _rng(ckpt["rng"])
    _optional(ckpt)
    models, optim = ckpt["models"], ckpt["optim"]
    _need(isinstance(models, dict), f"models is {_kind(models)}, not a dict")
    _need(isinstance(optim, dict), f"optim is {_kind(optim)}, not a dict")
    try:
        with torch.device("meta"):  # shapes and dtypes only: nothing is allocated or initialised
            G, D = build_models(cfg.model)
    except (ConfigError, RuntimeError, ValueError) as e:
        raise _Bad(f"its config builds no model ({e})") from None
    g_ref, d_ref = G.state_dict(), D.state_dict()
    _need(models.get("G") is not None, "it is a fastgan file without generator weights (models.G)")
    _state_dict(models.get("G"), g_ref, "models.G")
    _state_dict(models.get("D"), d_ref, "models.D")
    if cfg.optim.ema_decay > 0 or models.get("G_ema") is not None:  # the config says whether there is an EMA
        _state_dict(models.get("G_ema"), g_ref, "models.G_ema")
    _optimizer(optim.get("G"), list(G.parameters()), "optim.G")
    _optimizer(optim.get("D"), list(D.parameters()), "optim.D")


def validate_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """CheckpointError naming the first problem of a loaded fastgan checkpoint (format already checked)."""
    try:
        _check(ckpt)
    except _Bad as e:
        raise CheckpointError(f"checkpoint {path} is damaged or was edited: {e}; use another checkpoint of the "
                              "run (the run folder keeps the last few in checkpoints/)") from None


@torch.no_grad()
def check_generator(G: torch.nn.Module, path: str | Path, device: torch.device) -> None:
    """Finite weights can still make NaN images (a negative BatchNorm variance): try two latents first."""
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.zeros(2, dtype=torch.long, device=device) if getattr(G, "num_classes", 0) else None
    if not bool(torch.isfinite(G(z, y)).all()):
        raise CheckpointError(f"checkpoint {path} holds a generator whose images are NaN or inf (its weights or "
                              "BatchNorm statistics are broken): use another checkpoint of the run")
