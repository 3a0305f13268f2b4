"""README's "What fastgan guarantees": every test it names exists, so no guarantee outlives its test."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_test_the_guarantees_name_exists():
    text = (REPO / "README.md").read_text()
    section = text.split("## What fastgan guarantees", 1)[1].split("\n## ", 1)[0]
    current: Path | None = None
    named = 0
    for file, test in re.findall(r"`((?:tests/)?[\w/]*test_\w+\.py)?(?:::(\w+))?`", section):
        if file:
            hits = [REPO / file] if file.startswith("tests/") else list((REPO / "tests").rglob(file))
            assert len(hits) == 1 and hits[0].is_file(), file
            current = hits[0]
        if test:
            assert current is not None and f"def {test}(" in current.read_text(), (current, test)
            named += 1
    assert named >= 12
