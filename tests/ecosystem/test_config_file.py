"""`fastgan train --config FILE`: TOML and a run's config.json, precedence (preset < file < --set < flags),
and every mistake in the file as one line naming the key, the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastgan.cli import main
from fastgan.config import load_config_file
from fastgan.errors import ConfigError


def dry_run(capsys, *argv) -> dict:
    rc = main(["train", *map(str, argv), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def one_line_error(capsys, *argv) -> str:
    rc = main(["train", *map(str, argv), "--dry-run"])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and not out and len(lines) == 1 and lines[0].startswith("fastgan: error: "), err
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_toml_sets_preset_and_keys_and_the_command_line_wins(capsys, tmp_path):
    f = write(tmp_path / "exp.toml", '''preset = "mnist-cdcgan"
[model]
z_dim = 32
g_width = 16
[optim]
g_betas = [0.0, 0.9]
[train]
steps = 300
batch_size = 32
[data]
hflip = false
''')
    cfg = dry_run(capsys, "--config", f)
    assert cfg["preset"] == "mnist-cdcgan" and cfg["model"]["resolution"] == 28  # the file's preset underneath
    assert (cfg["model"]["z_dim"], cfg["model"]["g_width"], cfg["train"]["steps"]) == (32, 16, 300)
    assert cfg["optim"]["g_betas"] == [0.0, 0.9]
    cfg = dry_run(capsys, "--config", f, "--set", "model.z_dim=48", "--set", "g_width=24", "--steps", "7")
    assert (cfg["model"]["z_dim"], cfg["model"]["g_width"], cfg["train"]["steps"]) == (48, 24, 7)
    assert cfg["train"]["batch_size"] == 32  # untouched file keys stay
    assert dry_run(capsys, "digits-cdcgan", "--config", f)["preset"] == "digits-cdcgan"  # a named preset wins


def test_a_runs_config_json_reproduces_its_config(capsys, tmp_path):
    first = dry_run(capsys, "mnist-acgan", "--set", "model.z_dim=20", "--set", "optim.d_lr=1e-4",
                    "--out", tmp_path / "a")
    f = write(tmp_path / "config.json", json.dumps(first, indent=2))
    assert dry_run(capsys, "--config", f) == first


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_unknown_key_names_key_file_and_line(capsys, tmp_path, suffix):
    if suffix == ".toml":
        f = write(tmp_path / "bad.toml", "[model]\nz_dim = 32\n\n[train]\nsteps = 10\nstpes = 20\n")
        line = 6
    else:
        f = write(tmp_path / "bad.json", json.dumps({"model": {"z_dim": 32}, "train": {"steps": 10, "stpes": 20}},
                                                   indent=2))
        line = 1 + next(i for i, ln in enumerate(f.read_text().splitlines()) if "stpes" in ln)
    msg = one_line_error(capsys, "--config", f)
    assert "'train.stpes'" in msg and str(f) in msg and f"line {line}:" in msg, msg


def test_wrong_types_name_the_line(capsys, tmp_path):
    cases = [("[model]\nz_dim = \"32\"\n", "model.z_dim must be an integer", 2),
             ("[train]\nsteps = 10\ncompile = 1\n", "train.compile must be true or false", 3),
             ("[optim]\n\ng_lr = true\n", "optim.g_lr must be a number", 3),
             ("[optim]\nd_betas = [0.5]\n", "optim.d_betas must be a list of 2 numbers", 2),
             ("[data]\ndataset = 3\n", "data.dataset must be a string", 2),
             ("model = 3\n", "'model' must be a table", 1),
             ("[modle]\nz_dim = 3\n", "unknown section 'modle'", 1)]
    for text, fragment, line in cases:
        f = write(tmp_path / "t.toml", text)
        msg = one_line_error(capsys, "--config", f)
        assert fragment in msg and f"line {line}" in msg and str(f) in msg, (text, msg)


def test_a_bad_value_of_the_right_type_says_where_it_was_set(capsys, tmp_path):
    f = write(tmp_path / "t.toml", "[loss]\n# hinge or ns\nkind = \"hnge\"\n")
    msg = one_line_error(capsys, "--config", f)
    assert "bad value for loss.kind: 'hnge'" in msg and f"set in {f}, line 3" in msg, msg


def test_unreadable_files_are_one_line(capsys, tmp_path):
    assert "does not exist" in one_line_error(capsys, "--config", tmp_path / "nope.toml")
    assert "must end in .json" in one_line_error(capsys, "--config", write(tmp_path / "c.yaml", "a: 1"))
    msg = one_line_error(capsys, "--config", write(tmp_path / "c.toml", "[model\nz_dim = 3\n"))
    assert "not valid TOML" in msg and "line 1" in msg
    msg = one_line_error(capsys, "--config", write(tmp_path / "c.json", '{"model": {\n "z_dim": 3,\n}'))
    assert "not valid JSON" in msg and "line 3" in msg


def test_the_file_is_only_read(tmp_path):
    f = write(tmp_path / "t.toml", "[model]\nz_dim = 32 # comment\n[train]\nsteps = 5\n")
    before = f.read_bytes()
    cf = load_config_file(str(f))
    assert cf.overrides == {"model.z_dim": 32, "train.steps": 5} and cf.lines == {"model.z_dim": 2, "train.steps": 4}
    assert f.read_bytes() == before
    with pytest.raises(ConfigError):
        load_config_file(str(write(tmp_path / "u.toml", "steps = 5\n")))  # keys live in their sections
