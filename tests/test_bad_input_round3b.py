"""Round 3b of bad inputs: damaged or impossible FID statistics, analysis counts and seeds, a classifier of
another dataset, report's odd files and JSON shapes, the WGAN-GP benchmark. Each ends in one line
`fastgan: error: ...` with exit 2 (or a correct result), never an internal error, a hang or a silent number."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan.cli import main


@pytest.fixture
def cli_error(capsys):
    """Run the CLI expecting a user error: exit 2 and exactly one line on stderr, no traceback."""

    def check(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        cap = capsys.readouterr()
        err = cap.err.strip()
        assert "\n" not in err and "Traceback" not in err, err
        assert err.startswith("fastgan: error:"), err
        assert cap.out == "", cap.out  # no result printed before the error
        return err

    return check


@pytest.fixture(scope="module")
def ckpt(tiny_run) -> Path:
    """A real checkpoint of `fastgan train` (2 steps of the tiny conditional digits model)."""
    return tiny_run / "checkpoints" / "step-0000002.pt"


# -- B: .npz statistics ---------------------------------------------------------------------------------------

@pytest.fixture
def stats(tmp_path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 6))
    good = {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False), "n": np.int64(40)}
    np.savez(tmp_path / "good.npz", **good)
    return tmp_path / "good.npz", good


def _damaged(path: Path, kind: str) -> Path:
    b = path.read_bytes()
    bad = path.with_name(f"{kind}.npz")
    if kind == "flip":
        ba = bytearray(b)
        ba[200] ^= 0xFF  # inside mu.npy's data: a bad CRC-32 when the member is read
        bad.write_bytes(bytes(ba))
    elif kind == "half":
        bad.write_bytes(b[: len(b) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    else:  # a bare .npy under an .npz name
        np.save(path.with_name("x.npy"), np.zeros(3))
        shutil.move(path.with_name("x.npy"), bad)
    return bad


@pytest.mark.parametrize("kind", ["flip", "half", "empty", "npy"])
def test_fid_damaged_npz_is_one_line(stats, kind, cli_error):
    good, _ = stats
    err = cli_error(["fid", str(_damaged(good, kind)), str(good)])
    assert "not a readable statistics file" in err and "--save-stats" in err


def _edit(good: dict, **kw) -> dict:
    return {**good, **kw}


@pytest.mark.parametrize("case,needle", [
    ("nan_sigma", "NaN or infinite"), ("inf_sigma", "NaN or infinite"), ("nan_mu", "NaN or infinite"),
    ("neg_sigma", "negative eigenvalue"), ("nonsym", "not symmetric"), ("complex_mu", "complex"),
    ("bool", "bool"), ("n_neg", "n = -5"), ("n_one", "n = 1"), ("features_mu", "do not average to mu"),
    ("features_sigma", "do not give sigma"), ("huge", "came out inf"),
])
def test_fid_impossible_statistics_are_refused(stats, tmp_path, case, needle, cli_error):
    good_path, good = stats
    s, mu = good["sigma"], good["mu"]
    nan_s = s.copy()
    nan_s[0, 0] = np.nan
    inf_s = s.copy()
    inf_s[1, 1] = np.inf
    nan_mu = mu.copy()
    nan_mu[2] = np.nan
    nonsym = s.copy()
    nonsym[0, 1] += 1.0
    f = np.random.default_rng(1).normal(size=(4, 6))
    feats = {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False), "n": np.int64(4), "features": f}
    arrays = {
        "nan_sigma": _edit(good, sigma=nan_s), "inf_sigma": _edit(good, sigma=inf_s), "nan_mu": _edit(good, mu=nan_mu),
        "neg_sigma": _edit(good, sigma=-s), "nonsym": _edit(good, sigma=nonsym),
        "complex_mu": _edit(good, mu=mu.astype(complex)), "bool": _edit(good, mu=mu > 0, sigma=s > 0),
        "n_neg": _edit(good, n=np.int64(-5)), "n_one": _edit(good, n=np.int64(1)),
        "features_mu": _edit(feats, mu=feats["mu"] + 1), "features_sigma": _edit(feats, sigma=feats["sigma"] * 2),
        "huge": _edit(good, mu=mu * 1e200),
    }[case]
    bad = tmp_path / f"{case}.npz"
    np.savez(bad, **arrays)
    err = cli_error(["fid", str(bad), str(good_path)])
    assert needle in err


def test_fid_good_statistics_still_compare(stats, tmp_path, capsys):
    good_path, good = stats
    f = np.random.default_rng(2).normal(size=(4, 6))  # n <= d: the features are kept and used
    np.savez(tmp_path / "few.npz", mu=f.mean(0), sigma=np.cov(f, rowvar=False), n=np.int64(4), features=f)
    np.savez(tmp_path / "f32.npz", mu=good["mu"].astype(np.float32), sigma=good["sigma"].astype(np.float32))
    for other in ("few.npz", "f32.npz"):
        assert main(["fid", str(tmp_path / other), str(good_path)]) == 0
        assert '"fid"' in capsys.readouterr().out


# -- H: the benchmark ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("baseline", [True, False])
def test_bench_counts_the_flops_of_a_gradient_penalty_step(baseline):
    """FlopCounterMode's module tracker failed inside the penalty's autograd.grad ("A leaf node was passed to
    _will_engine_execute_node"): every wgan-gp-64 bench on a CPU was an internal error."""
    from fastgan.benchmark import suite

    cpu = torch.device("cpu")
    flops = suite.iteration_flops("wgan-gp-64", 1, baseline, cpu)
    assert flops > 0
    runner = suite.Runner("wgan-gp-64", "baseline" if baseline else "eager", 1, cpu)
    runner.iteration()
    with suite.flop_counter() as counter:  # the same count, the penalty's double backward included
        runner.iteration()
    assert counter.get_total_flops() == flops


def test_bench_flop_counter_matches_torchs_without_a_penalty():
    from torch.utils.flop_counter import FlopCounterMode

    from fastgan.benchmark import suite

    runner = suite.Runner("dcgan-28", "eager", 2, torch.device("cpu"))
    runner.iteration()
    with FlopCounterMode(display=False) as ref:
        runner.iteration()
    with suite.flop_counter() as ours:
        runner.iteration()
    assert ours.get_total_flops() == ref.get_total_flops() > 0


@pytest.mark.parametrize("name", ["rows.txt", "folder", "dev"])
def test_bench_json_path_is_checked_before_the_benchmark(tmp_path, name, cli_error, monkeypatch):
    from fastgan.benchmark import suite

    monkeypatch.setattr(suite, "warm_runner", lambda *a, **k: pytest.fail("the benchmark ran before --json was checked"))
    (tmp_path / "folder.json").mkdir()
    path = {"rows.txt": tmp_path / "rows.txt", "folder": tmp_path / "folder.json", "dev": Path("/dev/null/b.json")}[name]
    err = cli_error(["bench", "--case", "dcgan-28", "--mode", "baseline", "--batch", "2", "--rounds", "1",
                     "--device", "cpu", "--json", str(path)])
    assert "--json" in err


# -- E: analysis options ------------------------------------------------------------------------------------------

BIG = "99999999999999999999999"


@pytest.mark.parametrize("argv,needle", [
    (["interpolate", "--seed", BIG], "--seed"), (["interpolate", "--seeds", f"1,{BIG}"], "--seeds"),
    (["interpolate", "--seed", "-1"], "--seed -1"), (["pick", "--seed", BIG], "--seed"),
    (["neighbours", "--seed", "-3"], "--seed"), (["dfeatures", "--seed", BIG], "--seed"),
    (["embeddings", "--seed", BIG], "--seed"), (["project", "--seed", BIG], "--seed"),
    (["cas", "--seed", str(2**63 - 1)], "--seed"),
    (["arithmetic", "--a", "1", "--b", "2", "--c", "3", "--sheet-seed", BIG], "--sheet-seed"),
    (["interpolate", "--k", "-2"], "--k -2"), (["interpolate", "--steps", "1"], "--steps 1"),
    (["pick", "-n", "0"], "-n 0"), (["arithmetic", "--a", "1", "--b", "2", "--c", "3", "-n", "0"], "-n 0"),
    (["neighbours", "-n", "0"], "-n 0"), (["neighbours", "-n", "-1"], "-n -1"), (["neighbours", "--k", "0"], "--k 0"),
    (["neighbours", "--k", "-1"], "--k -1"), (["neighbours", "--feature-pool", "-5"], "--feature-pool -5"),
    (["neighbours", "--feature-pool", "0"], "--feature-pool 0"), (["neighbours", "-n", BIG], "-n"),
    (["dfeatures", "--max-test", "0"], "--max-test 0"), (["dfeatures", "--max-test", "-5"], "--max-test -5"),
    (["cas", "--seeds", "0"], "--seeds 0"), (["cas", "--steps", "-1"], "--steps -1"),
    (["embeddings", "-n", "0"], "-n 0"), (["embeddings", "-n", "-5"], "-n -5"),
    (["project", "--restarts", "0"], "--restarts 0"), (["project", "--feature-weight", "inf"], "--feature-weight inf"),
    (["project", "--feature-weight", "nan"], "--feature-weight nan"), (["project", "--feature-weight", "-1"], "-1"),
])
def test_analysis_counts_and_seeds_are_checked(ckpt, tmp_path, argv, needle, cli_error):
    err = cli_error(["analyze", argv[0], str(ckpt), *argv[1:], "--out", str(tmp_path / "an")])
    assert needle in err and ("out of range" in err or "finite" in err), err
    assert not (tmp_path / "an").exists() or not any((tmp_path / "an").iterdir())


@pytest.mark.parametrize("real,gen,needle", [("0", "0", "trains no classifier"), ("-5", "0,10", "negative"),
                                             ("inf%", "0", "counts or shares")])
def test_cas_sizes_are_checked(ckpt, tmp_path, real, gen, needle, cli_error):
    err = cli_error(["analyze", "cas", str(ckpt), "--real", real, "--gen", gen, "--out", str(tmp_path / "an")])
    assert needle in err


def test_arithmetic_refuses_a_pick_sheet_of_another_model(ckpt, tmp_path, cli_error, capsys, tiny_argv):
    other = tmp_path / "uncond"
    assert main(["train", "--steps", "1", "--out", str(other), *tiny_argv, "--quiet", "--set", "model.conditioning=none",
                 "--set", "model.z_dim=12"]) == 0
    sheet = tmp_path / "sh"
    assert main(["analyze", "pick", str(ckpt), "-n", "8", "--out", str(sheet / "pick")]) == 0
    err = cli_error(["analyze", "arithmetic", str(other / "checkpoints" / "step-0000001.pt"), "--a", "1", "--b", "2",
                     "--c", "3", "--out", str(sheet / "arithmetic")])
    assert "drawn by another model" in err and "z_dim 16 vs 12" in err
    # the same checkpoint, named by another path, is the same model
    assert main(["analyze", "arithmetic", str(ckpt.resolve()), "--a", "1", "--b", "2", "--c", "3",
                 "--out", str(sheet / "arithmetic")]) == 0


# -- F: domain classifiers ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_classifier(tmp_path_factory) -> Path:
    """A classifier whose file says it was trained on mnist (a 1-epoch digits one, relabelled: same shapes)."""
    from fastgan.config import DataConfig
    from fastgan.metrics.classifier import ClassifierConfig, save_classifier, train_classifier

    model, _ = train_classifier(DataConfig(dataset="digits"), ClassifierConfig(epochs=1), quiet=True)
    model.meta = {**model.meta, "dataset": "mnist"}
    path = tmp_path_factory.mktemp("clf") / "mnist.pt"
    save_classifier(model, path)
    return path


@pytest.mark.parametrize("argv", [["classifier", "eval", "{ckpt}", "--samples", "20", "--classifier", "{clf}"],
                                  ["analyze", "embeddings", "{ckpt}", "-n", "4", "--classifier", "{clf}"],
                                  ["analyze", "neighbours", "{ckpt}", "-n", "4", "--features", "classifier",
                                   "--classifier", "{clf}"]])
def test_a_classifier_of_another_dataset_is_refused(ckpt, mnist_classifier, tmp_path, argv, cli_error):
    argv = [a.format(ckpt=ckpt, clf=mnist_classifier) for a in argv]
    if argv[0] == "analyze":
        argv += ["--out", str(tmp_path / "an")]
    err = cli_error(argv)
    assert "trained on 'mnist', not 'digits'" in err


def test_a_folder_as_classifier_is_named_as_a_folder(ckpt, tmp_path, cli_error):
    err = cli_error(["classifier", "eval", str(ckpt), "--samples", "20", "--classifier", str(tmp_path)])
    assert "is a folder, not a file" in err


@pytest.mark.parametrize("lr", ["inf", "nan", "1e30"])
def test_classifier_train_never_saves_a_diverged_classifier(tmp_path, lr, cli_error):
    out = tmp_path / "c.pt"
    err = cli_error(["classifier", "train", "--data", "digits", "--epochs", "1", "--lr", lr, "--out", str(out),
                     "--quiet"])
    assert "--lr" in err and not out.exists()


def test_classifier_eval_names_samples_before_printing(ckpt, cli_error):
    err = cli_error(["classifier", "eval", str(ckpt), "--samples", "0"])
    assert "--samples 0" in err and "eval.samples" not in err


# -- G: report ----------------------------------------------------------------------------------------------------

@pytest.fixture
def run_copy(ckpt, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent, run)
    return run


def test_report_never_opens_fifos_or_devices(run_copy, capsys):
    import os

    os.mkfifo(run_copy / "samples" / "step-0000005.png")
    (run_copy / "samples" / "step-0000006.png").symlink_to("/dev/zero")
    (run_copy / "analysis" / "odd").mkdir(parents=True)
    os.mkfifo(run_copy / "analysis" / "odd" / "x.png")
    os.mkfifo(run_copy / "analysis" / "odd" / "y.json")
    (run_copy / "config.json").rename(run_copy / "config.saved")
    os.mkfifo(run_copy / "config.json")
    import threading

    done = []
    t = threading.Thread(target=lambda: done.append(main(["report", str(run_copy)])), daemon=True)
    t.start()
    t.join(60)
    if not done:  # the reader blocks forever (a daemon thread, so the test process still ends)
        pytest.fail("report hung on a FIFO or a link to /dev/zero")
    assert done == [0]
    page = (run_copy / "report.html").read_text()
    assert "step-0000005.png" not in page and "step-0000006.png" not in page


def test_report_survives_any_json_shape(run_copy, capsys):
    with (run_copy / "metrics.jsonl").open("a") as f:
        f.write('{"step":1,"d_loss":{"x":1},"g_loss":1}\n{"step":2,"d_loss":1,"g_loss":"a","d_real":[1,2],'
                '"d_fake":1,"fid":"x"}\n[1,2]\n5\n')
    (run_copy / "analysis" / "odd").mkdir(parents=True)
    (run_copy / "analysis" / "odd" / "odd.json").write_text('{"table":[{"a":1},5],"protocol":5,"results":[3,{"b":[1]}]}')
    assert main(["report", str(run_copy)]) == 0
    assert "odd.json" in (run_copy / "report.html").read_text()


def test_report_out_must_be_html(run_copy, cli_error):
    err = cli_error(["report", str(run_copy), "--out", str(run_copy / "x.txt")])
    assert ".html" in err and not (run_copy / "x.txt").exists()


# -- C: fid sources, and folders named where a file belongs --------------------------------------------------------

@pytest.fixture
def ten(tmp_path) -> Path:
    from PIL import Image

    d = tmp_path / "ten"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(d / f"{i}.png")
    return d


@pytest.mark.parametrize("spec,needle", [("digits:bogus", "unknown split 'bogus'"), ("folder:test", "names no folder")])
def test_fid_dataset_specs_are_checked(ten, spec, needle, cli_error):
    err = cli_error(["fid", spec, str(ten), "--samples", "5", "--weights", str(ten / "none.pth")])
    assert needle in err


def test_fid_samples_one_is_named_as_the_cause(ten, cli_error):
    err = cli_error(["fid", str(ten), str(ten), "--samples", "1"])
    assert "--samples 1" in err and "holds 1 images" not in err


def test_classifier_train_on_a_decoded_source_needs_no_cache_resolution(ten, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))  # the decoded cache is built away from ~/.cache
    assert main(["classifier", "train", "--data", "folder", "--root", str(ten), "--out", str(tmp_path / "c.pt"),
                 "--quiet", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the cache-building note
    assert "cache_resolution" not in err and "no labels" in err  # a folder without class subfolders: nothing to learn


@pytest.mark.parametrize("argv,needle", [
    (["fid", "{ten}", "{ten}", "--weights", "{tmp}"], "Inception weights file"),
    (["analyze", "project", "{ckpt}", "--image", "{tmp}", "--out", "{tmp}/an"], "image"),
    (["analyze", "interpolate", "{tmp}/m.onnx"], "model"),
])
def test_a_folder_where_a_file_belongs_is_named_as_a_folder(ckpt, ten, tmp_path, argv, needle, cli_error):
    (tmp_path / "m.onnx").mkdir()
    err = cli_error([a.format(ten=ten, tmp=tmp_path, ckpt=ckpt) for a in argv])
    assert needle in err and "is a folder, not a file" in err
