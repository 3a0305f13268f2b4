"""Shared fixtures. Real data comes from $FASTGAN_DATA, falling back to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("FASTGAN_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder; tests that need it skip with a reason when it is absent."""
    d = shared_data_dir()
    if not (d / "mnist").is_dir():
        pytest.skip(f"offline data not found at {d} (set FASTGAN_DATA to the folder holding mnist/)")
    return d


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Each test runs in its own folder, so default run folders never collide."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)

