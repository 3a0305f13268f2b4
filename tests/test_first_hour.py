"""A newcomer's first hour (issue 17): fast, torch-free help and data listing, honest warnings, progress and
estimates, whole-row grids, resolved --dry-run values, and no traps in the data commands."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan import catalog
from fastgan.cli import SUBCOMMANDS, main
from fastgan.errors import DataError

HEAVY = ("torch", "numpy", "PIL", "matplotlib", "sklearn", "tqdm")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# -- --help and data list never import torch (3 s idle, ~23 s under load, for nothing) ----------------------

_PROBE = """
import contextlib, io, json, sys
from fastgan.cli import SUBCOMMANDS, main
light = ["fastgan.errors", "fastgan.config"]
for m in light:
    __import__(m)
seen = {"import": [h for h in %(heavy)r if h in sys.modules]}
for argv in [["--help"]] + [[c, "--help"] for c in SUBCOMMANDS] + [["data", "list"], ["presets"]]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
    seen[" ".join(argv)] = [h for h in %(heavy)r if h in sys.modules]
print(json.dumps(seen))
"""


def test_help_and_data_list_import_no_heavy_module(tmp_path):
    out = subprocess.run([sys.executable, "-c", _PROBE % {"heavy": HEAVY}], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "FASTGAN_DATA": str(tmp_path)},
                         check=False)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert len(seen) == len(SUBCOMMANDS) + 4  # imports, top-level help, each subcommand's, data list, presets
    assert {k: v for k, v in seen.items() if v} == {}, "parsing/help imported a heavy module"


def test_light_copies_match_their_homes():
    """The CLI keeps a few constants of torch-importing modules for its parsers; they must not drift."""
    from fastgan.benchmark import suite
    from fastgan.commands import bench, classifier, fid
    from fastgan.metrics import classifier as mc
    from fastgan.metrics import fid as mfid
    from fastgan.metrics import inception, sources

    assert (fid.IMPLS, fid.DIMS, fid.CHECKPOINT_SAMPLES) == (mfid.IMPLS, inception.DIMS, sources.CHECKPOINT_SAMPLES)
    assert bench.CASES == tuple(suite.CASES) and bench.MODES == tuple(suite.MODES)
    c = mc.ClassifierConfig()
    assert vars(classifier._C) == {k: getattr(c, k) for k in vars(classifier._C)}


def test_catalog_matches_the_readers():
    from fastgan.data import SOURCES
    from fastgan.data.cifar import CIFAR_SETS
    from fastgan.data.download import ALIASES, DOWNLOADS
    from fastgan.data.idx import EMNIST_SETS, IDX_SETS

    assert set(catalog.SOURCES) == set(SOURCES)
    for name, (folder, classes) in IDX_SETS.items():
        assert (catalog.SOURCES[name].folder, catalog.SOURCES[name].classes) == (folder, len(classes))
    for name, (_, classes, _) in EMNIST_SETS.items():
        assert catalog.SOURCES[name].classes == len(classes)
    for name, spec in CIFAR_SETS.items():
        assert catalog.SOURCES[name].folder == spec[0]
    for name, e in catalog.SOURCES.items():
        downloadable = name in DOWNLOADS or name in ALIASES
        assert (e.get == catalog.DOWNLOAD) == downloadable, name
        if downloadable:
            assert DOWNLOADS[ALIASES.get(name, name)][0] == e.folder, name
    from fastgan.config import DataConfig
    from fastgan.data import load_dataset

    ds = load_dataset(DataConfig(dataset="digits"))
    assert catalog.fixed_shape("digits", DataConfig()) == (ds.channels, ds.num_classes)


# -- data list: a header, where it looked, what is here, what the columns mean -------------------------------


def test_data_list_says_where_it_looked_and_what_is_present(capsys, tmp_path, monkeypatch):
    home = tmp_path / "datahome"
    (home / "mnist").mkdir(parents=True)
    (home / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    (home / "fashion_mnist").mkdir()  # empty: not present
    monkeypatch.setenv("FASTGAN_DATA", str(home))
    rc, out, _ = run_cli(capsys, "data", "list")
    assert rc == 0
    assert str(home.resolve()) in out.splitlines()[0] and "$FASTGAN_DATA" in out.splitlines()[0]
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln and ln.split()[0] in catalog.SOURCES}
    assert set(rows) == set(catalog.SOURCES)
    assert rows["mnist"][1:3] == ["yes", str(home / "mnist")]
    assert rows["fashion-mnist"][1:3] == ["no", str(home / "fashion_mnist")]  # the folder name README gives
    assert rows["digits"][1] == "yes" and rows["emnist-letters"][1] == "no"
    for column in ("NAME", "HERE", "FOLDER", "CH", "CLASSES", "GET"):
        assert column in out.splitlines()[3] and f"\n{column}" in out  # in the table's head and explained

    monkeypatch.delenv("FASTGAN_DATA")
    rc, out, _ = run_cli(capsys, "data", "list")
    assert "./data" in out.splitlines()[0] and str(Path("data") / "mnist") in out


def test_missing_data_hint_fits_fid(capsys, tmp_path, monkeypatch):
    """`fastgan fid` has no --set: the hint names $FASTGAN_DATA, which every command reads."""
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "nowhere"))
    rc, _, err = run_cli(capsys, "fid", "mnist:test", "fashion-mnist:test", "--samples", 10)
    assert rc == 2 and err.startswith("fastgan: error: ") and len(err.strip().splitlines()) == 1
    assert "$FASTGAN_DATA at the folder that holds mnist/" in err


# -- a failed download leaves nothing behind and names --mirror -----------------------------------------------


def test_failed_download_removes_the_folder_it_made_and_names_mirror(tmp_path, monkeypatch):
    from fastgan.data import download as dl

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "home"))
    with pytest.raises(DataError, match="--mirror URL"):
        dl.download("mnist", quiet=True)
    assert not (tmp_path / "home").exists()  # neither the dataset folder nor the data home it created
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "train-images-idx3-ubyte.gz.part").write_bytes(b"partial")  # a resumable part stays
    with pytest.raises(DataError):
        dl.download("mnist", str(kept), quiet=True)
    assert (kept / "train-images-idx3-ubyte.gz.part").read_bytes() == b"partial"


# -- --amp bf16 on a CPU that emulates bf16 says so, once ---------------------------------------------------


@pytest.mark.parametrize("native", [False, True])
def test_amp_bf16_warns_once_where_the_cpu_emulates_it(native, monkeypatch, capsys):
    from fastgan.config import TrainConfig
    from fastgan.engine import fast

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(fast, "_SLOW_BF16_TOLD", [])
    cpu = torch.device("cpu")
    for _ in range(2):
        opts, _ = fast.resolve_options(TrainConfig(amp="bf16"), cpu)
        assert opts.amp == "bf16"  # a warning, not a refusal: the run does what was asked
    err = capsys.readouterr().err
    assert err.count("emulated") == (0 if native else 1)
    if not native:
        assert "--fast" in err and len(err.strip().splitlines()) == 1
    opts, _ = fast.resolve_options(TrainConfig(fast=True), cpu)  # --fast picks bf16 only where it is native
    assert opts.amp == ("bf16" if native else "none") and "emulated" not in capsys.readouterr().err


# -- whole-row grids --------------------------------------------------------------------------------------------


def test_grid_width_fills_every_row():
    from fastgan.images import grid_width, make_grid

    assert [grid_width(n) for n in (64, 70, 100, 20, 1000)] == [8, 10, 10, 5, 40]
    for n in range(1, 200):
        w = grid_width(n)
        assert n % w == 0 or all(n % d for d in range(w, 2 * w + 1)), n  # ragged only when no divisor fits
    g = make_grid(np.full((64, 4, 4, 1), 255, np.uint8), pad=1)
    cells = g[1::5, 1::5, 0]  # one pixel per cell
    assert cells.shape == (8, 8) and (cells == 255).all()  # the last row is full


def test_sample_png_rounds_up_to_whole_rows_of_classes(capsys):
    from fastgan.commands.sample import grid_columns, grid_count

    def args(n, out="g.png", labels=None):
        return argparse.Namespace(num=n, out=out, labels=labels)

    assert (grid_columns(args(64), 10), grid_count(args(64), 10)) == (10, 70)
    assert "rounded up to 70" in capsys.readouterr().err
    assert grid_count(args(70), 10) == 70 and grid_count(args(64, "s.npz"), 10) == 64  # npz: exactly -n
    assert grid_count(args(64, labels="3"), 10) == 64 and grid_columns(args(64, labels="3"), 10) is None
    assert grid_count(args(64), 0) == 64  # unconditional: make_grid picks a width that divides 64


@pytest.mark.slow
def test_sample_command_writes_a_grid_without_a_ragged_row(capsys, tmp_path):
    from PIL import Image

    tiny = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16", "--set",
            "train.grid_size=20", "--batch-size", "16", "--quiet"]
    assert run_cli(capsys, "train", "--steps", 2, "--out", tmp_path / "r", *tiny)[0] == 0
    ckpt = next((tmp_path / "r" / "checkpoints").glob("*.pt"))
    rc, _, err = run_cli(capsys, "sample", ckpt, "-n", 64, "--out", tmp_path / "g.png")
    assert rc == 0 and "wrote 70 images" in err
    w, h = Image.open(tmp_path / "g.png").size
    assert (w - 2) // 34 == 10 and (h - 2) // 34 == 7  # 32 px cells + 2 px padding: 10 columns, 7 full rows


# -- presets and --dry-run ---------------------------------------------------------------------------------------


def test_presets_names_the_default_once(capsys):
    from fastgan.config import DEFAULT_PRESET, PRESETS

    rc, out, _ = run_cli(capsys, "presets")
    assert rc == 0 and DEFAULT_PRESET in out.splitlines()[0]
    assert out.lower().count("default") <= 1
    assert all(name in out for name in PRESETS)


def test_dry_run_shows_the_values_the_run_will_use(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "empty"))  # MNIST's shape is known without its files
    for preset, channels, classes in (("digits-cdcgan", 1, 10), ("mnist-dcgan", 1, 10), ("cifar10-dcgan", 3, 10)):
        rc, out, err = run_cli(capsys, "train", preset, "--dry-run")
        assert rc == 0, err
        cfg = json.loads(out)
        assert (cfg["model"]["channels"], cfg["model"]["num_classes"]) == (channels, classes)
        assert cfg["train"]["out"] == str(Path("runs") / preset)
    Path("runs/digits-cdcgan").mkdir(parents=True)
    Path("runs/digits-cdcgan/metrics.jsonl").write_text("{}\n")  # a run is there: the next gets a suffix
    assert json.loads(run_cli(capsys, "train", "--dry-run")[1])["train"]["out"] == str(Path("runs/digits-cdcgan-2"))
    assert json.loads(run_cli(capsys, "train", "--dry-run", "--out", "x")[1])["train"]["out"] == "x"


# -- honest progress and cost --------------------------------------------------------------------------------------


def test_bar_prints_its_final_line_once():
    from fastgan.progress import Bar

    f = io.StringIO()
    with Bar(total=3, file=f, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert f.getvalue().count("3/3") == 1 and "2/3" in f.getvalue()


def test_bench_ticks_every_round():
    from fastgan.benchmark import suite

    class Fake:
        device = torch.device("cpu")

        def run(self, n):
            pass

    ticks = []
    times = suite.time_interleaved([Fake(), Fake(), Fake()], 4, 1, lambda: ticks.append(1))
    assert len(ticks) == 12 and [len(t) for t in times] == [4, 4, 4]


def test_fid_states_the_cpu_cost_up_front(capsys, monkeypatch):
    from fastgan import cost

    monkeypatch.setattr(cost, "images_per_second", lambda net, device, size=32: 5.0)
    assert cost.announce_features(None, torch.device("cpu"), 70000) == 5.0
    err = capsys.readouterr().err
    assert "70,000 images" in err and "~5.0 img/s" in err and "3.9 hours" in err and "--samples" in err
    assert cost.announce_features(None, torch.device("cpu"), 100) == 5.0  # 20 s: not worth a line
    assert capsys.readouterr().err == ""
    assert cost.feature_batch(torch.device("cpu")) < cost.feature_batch(torch.device("cuda"))


# -- time to the first step: the bundled digits without importing scikit-learn (scipy.stats: 1-5 s) -------------


def test_digits_are_scikit_learns_without_importing_it(tmp_path):
    from sklearn.datasets import load_digits

    from fastgan.data.digits import _digits

    images, target = _digits()
    d = load_digits()
    assert np.array_equal(images, d.images) and np.array_equal(target, d.target)
    probe = "import sys; from fastgan.data.digits import _digits; _digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         check=False)
    assert out.stdout.strip() == "False", out.stderr
