"""Distributed training on CPU: torchrun (``python -m torch.distributed.run --standalone --nproc_per_node 2``), gloo.

``worker.py`` runs every in-library case in one torchrun launch (a launch costs seconds of process start-up);
the tests below read what each rank wrote and compare it across ranks and against the same work in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import worker

from fastgan.engine import distributed
from fastgan.errors import ConfigError
from fastgan.metrics.features import extract, uint8_batches
from fastgan.metrics.fid import features_to_stats, stats_to_fid
from fastgan.shard import Shard

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).parent / "worker.py"
TIMEOUT_S = 300  # a hung job fails the test instead of the suite


def torchrun(args: list[str], cwd: Path, nproc: int = 2, env: dict | None = None,
             timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    full = {**os.environ, "FASTGAN_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    """Every worker case run once by 2 ranks; OUT/<case>-rank<r>.* per rank."""
    out = tmp_path_factory.mktemp("ranks")
    p = torchrun([str(WORKER), str(out)], cwd=out)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _load(out: Path, case: str) -> tuple[dict, dict]:
    return torch.load(out / f"{case}-rank0.pt"), torch.load(out / f"{case}-rank1.pt")


@pytest.mark.parametrize("case", list(worker.EQUIV))
def test_two_ranks_half_batch_train_like_one_process_full_batch(ranks: Path, case: str):
    r0, r1 = _load(ranks, case)
    ov, noise = worker.EQUIV[case]
    state, losses = worker.run_steps({**ov, "model.d_norm": "none"}, noise, g_eval=True, float64=True)
    one = worker.snapshot(state, losses)["params"]
    assert one.keys() == r0["params"].keys() and len(one) > 10
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in one)  # the ranks agree bit for bit
    # float64: a wrong average (sum, or one rank's gradient), a shared instead of sliced draw, or a penalty
    # without its double-backward terms all move parameters by ~lr = 2e-4 after 5 steps; rounding, by 1e-16
    worst = max((one[k] - r0["params"][k]).abs().max().item() for k in one)
    assert worst < 1e-10, (case, worst)
    # the logged (all-reduced) losses are the single-process ones (float32 losses: rounding only)
    for a, b in zip(losses, r0["losses"]):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])) for k in a), (a, b)


def test_with_batchnorm_ranks_hold_identical_parameters(ranks: Path):
    r0, r1 = _load(ranks, "bn")
    params = [k for k in r0["params"] if "running" not in k and "num_batches" not in k]
    assert len(params) > 10 and any(k.startswith("G_ema.") for k in params)
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in params)  # G, D and the EMA of G
    # BatchNorm running statistics differ per rank until averaged before the checkpoint: then equal
    running = [k for k in r0["params"] if "running_mean" in k]
    assert running and all(torch.allclose(r0["params"][k], r1["params"][k], atol=1e-7) for k in running)
    assert all(np.isfinite(v) for row in r0["losses"] for v in row.values())


def test_amp_and_channels_last_under_ddp_keep_ranks_identical(ranks: Path):
    r0, r1 = _load(ranks, "fast")
    params = [k for k in r0["params"] if "running" not in k and "num_batches" not in k]  # BN stats: per rank
    assert len(params) > 10 and all(torch.equal(r0["params"][k], r1["params"][k]) for k in params)
    assert r0["params"]["D.features.0.weight"].is_contiguous(memory_format=torch.channels_last)
    assert all(np.isfinite(v) for row in r0["losses"] for v in row.values())


def test_drifted_rank_fails_the_checkpoint_loudly_on_every_rank(ranks: Path):
    for r in (0, 1):
        msg = (ranks / f"consistency-rank{r}.txt").read_text()
        assert "hold different parameters" in msg and "D.features.0.weight" in msg and "\n" not in msg


def test_fid_statistics_across_ranks_equal_one_process(ranks: Path):
    got = torch.load(ranks / "fid-rank0.pt", weights_only=False)
    other = torch.load(ranks / "fid-rank1.pt", weights_only=False)
    ref = features_to_stats(worker.fake_features()["full"] + 0.5)  # a second set to measure against
    for name, feats in worker.fake_features().items():
        mu, sigma, n, kept = got[name]
        one = features_to_stats(feats)
        assert n == one.n == len(feats)
        np.testing.assert_allclose(mu, one.mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sigma, one.sigma, rtol=1e-10, atol=1e-12)
        assert (kept is None) == (one.features is None)  # n <= d: the low-rank form keeps the features
        st = type(one)(mu, sigma, n, kept)
        fid_ranks, fid_one = stats_to_fid(st, ref), stats_to_fid(one, ref)
        assert abs(fid_ranks - fid_one) <= 1e-6 * abs(fid_one), (name, fid_ranks, fid_one)
        np.testing.assert_array_equal(other[name][0], mu)  # every rank holds the combined statistics
    # end to end through extract(across_ranks=True): a feature network on each rank's share of the images
    images = (torch.arange(90 * 16 * 16) * 37 % 256).to(torch.uint8).reshape(90, 1, 16, 16)
    st, logits = extract({"net": (worker.feature_net(), True)}, uint8_batches(images, 8), torch.device("cpu"),
                         quiet=True)["net"]
    mu, sigma, n, logits_ranks = got["extract"]
    assert n == 90
    np.testing.assert_allclose(mu, st.mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sigma, st.sigma, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(logits_ranks, logits)  # gathered in input order


def test_uneven_global_batch_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="does not split evenly across 3 processes"):
        Shard(1, 3).local(16)
    assert Shard(2, 3).span(10) == range(6, 10) and Shard().take(torch.ones(3)).shape == (3,)


def test_nproc_per_node_refuses_an_uneven_batch_before_starting_torchrun(tmp_path: Path):
    from fastgan.cli import main

    assert main(["train", "--nproc-per-node", "3", "--batch-size", "16", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_single_process_is_untouched():
    assert not distributed.active() and distributed.shard() == Shard()
    assert distributed.wrapper(None, torch.device("cpu")) is None
    assert distributed.mean({"a": torch.tensor(2.0)})["a"] == 2.0
    with pytest.raises(ConfigError, match="sync_bn=true needs CUDA"):
        distributed.check_world(16, torch.device("cpu"), sync_bn=True)


def test_sync_bn_conversion_keeps_state_dict_and_activation():
    from fastgan.config import load_config
    from fastgan.models import build_models

    G, _ = build_models(load_config(None, {**worker.TINY, "model.channels": "1", "model.num_classes": "10"}).model)
    G.eval()
    z, y = torch.randn(4, 16), torch.arange(4)
    before, keys = G(z, y), list(G.state_dict())
    distributed.convert_sync_bn(G)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in G.modules())
    assert list(G.state_dict()) == keys  # checkpoints load with and without it
    torch.testing.assert_close(G(z, y), before)  # eval: running statistics, same activation


# -- the command line under torchrun ---------------------------------------------------------------------------

CLI_TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16",
            "--set", "train.grid_size=16", "--set", "train.log_every=2", "--set", "train.sample_every=3",
            "--set", "train.ckpt_every=3", "--batch-size", "16", "--quiet"]


def _steps_logged(run: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]


@pytest.mark.slow  # two torchrun launches: ~20 s on 2 cores
def test_torchrun_cli_run_writes_once_and_resumes_on_one_process(tmp_path: Path):
    from fastgan.config import load_config
    from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint
    from fastgan.engine.loop import train

    run = tmp_path / "run"
    # the convenience flag: fastgan starts `python -m torch.distributed.run ... -m fastgan train` itself
    p = subprocess.run([sys.executable, "-m", "fastgan", "train", "--nproc-per-node", "2", "--steps", "4", "--out",
                        str(run), *CLI_TINY], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                       env={**os.environ, "FASTGAN_DIST_TIMEOUT": "60", "OMP_NUM_THREADS": "1",
                            "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr[-3000:]
    assert _steps_logged(run) == [2, 4]  # one line per log step: rank 1 wrote none
    assert len(p.stdout.strip().splitlines()) == 1  # one JSON summary (rank 0), nothing else
    ckpt = load_checkpoint(list_checkpoints(run)[-1])
    assert ckpt["step"] == 4 and len(ckpt["rng_ranks"]) == 2  # trained by 2 ranks
    assert torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])  # which drew the same numbers
    assert sorted(f.name for f in (run / "samples").iterdir()) == ["final.png", "step-0000003.png",
                                                                   "step-0000004.png"]
    # a 2-rank checkpoint continues on one process (the RNG stream of rank 0, which all ranks shared)
    cfg = load_config(None, {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16", "train.batch_size": "16",
                             "train.grid_size": "16", "train.log_every": "2", "train.sample_every": "3",
                             "train.ckpt_every": "3", "train.steps": "6", "train.out": str(run)})
    result = train(cfg, resume="auto", quiet=True)
    assert result.step == 6 and _steps_logged(run) == [2, 4, 6]
    assert "rng_ranks" not in load_checkpoint(result.checkpoint)


FAULTY = Path(__file__).parent / "faulty.py"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_failing_rank_ends_the_job_then_resume_is_bit_exact(tmp_path: Path, how: str):
    from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint

    args = ["--out", str(tmp_path / "a"), *CLI_TINY, "--set", "optim.ema_decay=0.9"]
    straight = torchrun(["-m", "fastgan", "train", "--steps", "7", *args], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    args[1] = str(tmp_path / "b")
    failed = torchrun([str(FAULTY), "train", "--steps", "7", *args], cwd=tmp_path, timeout=120,
                      env={"FASTGAN_TEST_FAULT": f"{how}:1:5"})  # rank 1 fails in step 5
    assert failed.returncode != 0
    assert "ChildFailedError" in failed.stderr or "failed" in failed.stderr.lower()
    assert [c.name for c in list_checkpoints(tmp_path / "b")] == ["step-0000003.pt"]
    resumed = torchrun(["-m", "fastgan", "train", "--steps", "7", "--resume", "auto", *args], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(list_checkpoints(tmp_path / "a")[-1])
    b = load_checkpoint(list_checkpoints(tmp_path / "b")[-1])
    assert a["step"] == b["step"] == 7
    for part in ("G", "D", "G_ema"):
        for k, v in a["models"][part].items():
            assert torch.equal(v, b["models"][part][k]), (part, k)
    assert _steps_logged(tmp_path / "b") == _steps_logged(tmp_path / "a")


@pytest.mark.slow
def test_fastgan_fid_across_two_ranks_equals_one_process(tmp_path: Path, data_dir: Path):
    """End to end with the FID Inception (pool layer 64: 40 samples < 64 dims, the low-rank form)."""
    args = ["fid", "mnist:test", "fashion-mnist:test", "--samples", "40", "--dims", "64", "--device", "cpu",
            "--no-download", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "fastgan", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=TIMEOUT_S, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(["-m", "fastgan", *args], cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # one JSON document: rank 0 alone printed
    assert abs(a["fid"] - b["fid"]) <= 1e-6 * a["fid"], (a["fid"], b["fid"])
    assert a["protocol"]["a"]["count"] == b["protocol"]["a"]["count"] == 40


@pytest.mark.slow
def test_compiled_step_under_ddp_matches_eager_ddp(tmp_path: Path):
    p = torchrun([str(WORKER), str(tmp_path), "compile"], cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = _load(tmp_path, "compile")
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"] if "running" not in k)
    _, losses = worker.run_steps({"loss.kind": "wgan-gp", "model.d_norm": "none", "model.conditioning": "none"},
                                 None, g_eval=True, steps=3)
    # compiled kernels round differently from eager (and float32 Adam amplifies it, see worker.run_steps):
    # a loose bound that still catches a missing all-reduce or a penalty without its gradient (~lr per step)
    for a, b in zip(losses, r0["losses"]):
        assert all(abs(a[k] - b[k]) <= 1e-3 * max(1.0, abs(a[k])) for k in a), (a, b)


@pytest.mark.slow
def test_single_process_checkpoint_continues_on_two_ranks(tmp_path: Path):
    from fastgan.engine.checkpoint import list_checkpoints, load_checkpoint

    run = tmp_path / "run"
    one = subprocess.run([sys.executable, "-m", "fastgan", "train", "--steps", "3", "--out", str(run), *CLI_TINY],
                         cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(["-m", "fastgan", "train", "--steps", "6", "--out", str(run), "--resume", "auto", *CLI_TINY],
                   cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    ckpt = load_checkpoint(list_checkpoints(run)[-1])
    assert ckpt["step"] == 6 and len(ckpt["rng_ranks"]) == 2
    # every rank took rank 0's (the single process's) generator state: they still draw the same numbers
    assert torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])
    assert _steps_logged(run) == [2, 3, 4, 6]  # 3: the first run's last step


@pytest.mark.slow
def test_in_training_fid_across_ranks_equals_one_process(tmp_path: Path, data_dir: Path):
    """Each rank generates and embeds half of the evaluation samples; the logged FID is the one a single process
    computes for the same generator (the checkpoint of the same step)."""
    from fastgan.data import load_dataset
    from fastgan.engine.checkpoint import list_checkpoints, load_generator
    from fastgan.metrics.training import make_evaluator

    run = tmp_path / "run"
    ev = ["--set", "eval.every=2", "--set", "eval.samples=20", "--set", "eval.reference=40",
          "--set", "eval.batch_size=10", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    p = torchrun(["-m", "fastgan", "train", "--steps", "2", "--out", str(run), *CLI_TINY, *ev], cwd=tmp_path,
                 timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    logged = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"fid"' in ln]
    assert len(logged) == 1 and logged[0]["step"] == 2
    G, cfg, _ = load_generator(list_checkpoints(run)[-1], torch.device("cpu"))
    fid = make_evaluator(cfg, load_dataset(cfg.data), torch.device("cpu"))(G)["fid"]
    assert abs(fid - logged[0]["fid"]) <= 1e-6 * fid + 1e-6, (fid, logged[0]["fid"])  # logged: 6 decimals
