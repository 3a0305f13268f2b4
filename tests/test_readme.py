"""README.md states exactly two fresh-machine commands, and CI runs the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fresh_machine_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)]


def test_two_commands_and_ci_runs_the_test_one():
    train_cmd, test_cmd = _fresh_machine_commands()
    assert train_cmd.endswith("fastgan train") and "torch==2.13.0" in train_cmd
    assert "pytest" in test_cmd and "torch==2.13.0" in test_cmd
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci
