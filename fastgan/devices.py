"""Device resolution and naming, shared by every command and the engine."""

from __future__ import annotations

import os
import re

import torch

from fastgan.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; a clean error otherwise."""
    name = str(name).strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"bad device '{name}': use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"bad device '{name}': fastgan runs on cpu or cuda (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device is {name} but no CUDA GPU is visible: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "") or "unknown"
    except OSError:
        return "unknown"


def device_tag(device: torch.device | str = "cpu") -> str:
    """A file-name slug for result files, one per machine kind: ``cpu-intel-xeon``, ``cpu-amd-epyc``,
    ``cuda-nvidia-h200``. Trademark marks, "processor"/"cpu" and clock suffixes are dropped."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    name = re.sub(r"\(r\)|\(tm\)|\bprocessor\b|\bcpu\b|@.*$", " ", name.lower())
    return f"{device.type}-" + "-".join(re.findall(r"[a-z0-9]+", name))[:40].strip("-")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_model()} ({os.cpu_count()} cores)"


def usable_threads(asked: int) -> int:
    """``asked`` CPU threads, but no more than the CPUs this process may run on: more only oversubscribe (OpenMP
    workers wait for each other) and, by the thousand, fail to start. Says so once when it lowers the count."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    if asked <= cpus:
        return asked
    from fastgan.fallback import warn_once

    warn_once("threads", f"{asked} CPU threads asked for, but this process may use {cpus} CPUs: using {cpus}")
    return cpus
