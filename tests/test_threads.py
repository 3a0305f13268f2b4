"""OpenMP defaults: set by the CLI before torch loads, never over the user's own settings."""

from __future__ import annotations

import os
import subprocess
import sys

from fastgan import threads


def test_defaults_fill_only_what_the_user_left_unset():
    env: dict[str, str] = {}
    assert threads.configure(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.configure(mine) == {} and mine == {"OMP_WAIT_POLICY": "ACTIVE"}
    spin = {"GOMP_SPINCOUNT": "10000"}  # a chosen spin count: PASSIVE (spin count 0) would silently override it
    assert threads.configure(spin) == {} and spin == {"GOMP_SPINCOUNT": "10000"}


def test_cli_sets_the_policy_before_torch_is_imported():
    """The variable must be in the environment when libgomp loads (import torch), i.e. before any
    subcommand module is imported: checked in a fresh process, as the `fastgan` entry point runs."""
    code = ("import os, sys\nfrom fastgan.cli import main\nassert 'torch' not in sys.modules\n"
            "import fastgan.cli as cli\norig = cli.build_parser\n"
            "def spy(*args, **kwargs):\n    print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))\n    return orig(*args, **kwargs)\n"
            "cli.build_parser = spy\nmain(['presets'])\n")
    env = {k: v for k, v in os.environ.items() if k not in threads.DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "False PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.stdout.splitlines()[0] == "False ACTIVE"
