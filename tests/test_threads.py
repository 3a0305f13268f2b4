"""OpenMP defaults: set by the CLI before torch loads, never over the user's own settings."""

from __future__ import annotations

import os
import subprocess
import sys

from fastgan import threads


def test_defaults_fill_only_what_the_user_left_unset():
    env: dict[str, str] = {}
    assert threads.configure(env) == {"GOMP_SPINCOUNT": "10000"}
    assert env == {"GOMP_SPINCOUNT": "10000"}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        before = dict(mine)  # a wait policy or spin count the user chose is never overridden or combined
        assert threads.configure(mine) == {} and mine == before


def test_cli_sets_the_policy_before_torch_is_imported():
    """The variable must be in the environment when libgomp loads (import torch), i.e. before any
    subcommand module is imported: checked in a fresh process, as the `fastgan` entry point runs."""
    code = ("import os, sys\nfrom fastgan.cli import main\nassert 'torch' not in sys.modules\n"
            "import fastgan.cli as cli\norig = cli.build_parser\n"
            "def spy(*args, **kwargs):\n    print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n    return orig(*args, **kwargs)\n"
            "cli.build_parser = spy\nmain(['presets'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "False None 10000"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.stdout.splitlines()[0] == "False ACTIVE None"
