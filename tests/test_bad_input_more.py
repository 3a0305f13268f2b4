"""Every input that used to end in `fastgan: internal error` (exit 1) or was accepted silently but wrong: one line
`fastgan: error: ...` naming the problem and the fix, exit 2, no traceback, and nothing written or lost."""

from __future__ import annotations

import copy
import errno
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgan.cli import main

TINY = ["--set", "model.g_width=8", "--set", "model.d_width=8", "--set", "model.z_dim=16", "--batch-size", "16",
        "--set", "train.grid_size=20", "--set", "optim.ema_decay=0.9", "--quiet"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of `fastgan train` (2 steps of the tiny conditional digits model)."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--steps", "2", "--out", str(out), *TINY]) == 0
    return out / "checkpoints" / "step-0000002.pt"


@pytest.fixture
def payload(ckpt) -> dict:
    return torch.load(ckpt, weights_only=True)


def user_error(capsys, argv, *needles) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("fastgan: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err and "Warning" not in err, err
    for n in needles:
        assert n in err, err
    return err


def commands(path: Path, tmp_path: Path, pics: Path) -> dict[str, list]:
    """Each command that reads a checkpoint, pointed at ``path``."""
    return {"sample": ["sample", path, "--out", tmp_path / "s.png"],
            "export": ["export", path, "--onnx", tmp_path / "g.onnx"],
            "fid": ["fid", path, pics, "--samples", 4, "--no-download", "--quiet"],
            "train": ["train", "--resume", path, "--steps", 4, "--out", tmp_path / "resumed", "--quiet"]}


COMMANDS = ("sample", "export", "fid", "train")


def _skip_export(cmd: str) -> None:
    if cmd == "export":
        pytest.importorskip("onnx", reason="export needs the onnx extra")


def save(obj, tmp_path: Path, name: str = "bad.pt") -> Path:
    p = tmp_path / name
    torch.save(obj, p)
    return p


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "g.onnx").exists()
    assert not (tmp_path / "resumed").exists()


# -- checkpoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("key", ["config", "step", "rng", "models", "optim"])
def test_checkpoint_missing_a_key(payload, tmp_path, pics, capsys, cmd, key):
    _skip_export(cmd)
    del payload[key]
    path = save(payload, tmp_path)
    user_error(capsys, commands(path, tmp_path, pics)[cmd], str(path), f"it has no {key}",
               "use another checkpoint of the run")
    assert_nothing_written(tmp_path)


BROKEN = {
    "G is a tensor": (lambda c: c["models"].__setitem__("G", torch.zeros(3)), "models.G is a tensor, not a state dict"),
    "optim is a list": (lambda c: c.__setitem__("optim", [1, 2]), "optim is a list, not a dict"),
    "D state dict is a string": (lambda c: c["models"].__setitem__("D", "D"), "models.D is a str"),
    "Adam moment of another shape": (lambda c: c["optim"]["G"]["state"][0].__setitem__("exp_avg", torch.zeros(2)),
                                     "optim.G.state[0].exp_avg has shape (2,)"),
    "config of wrong types": (lambda c: c["config"]["model"].__setitem__("z_dim", "16"),
                              "config model.z_dim must be an integer"),
    "config section is a list": (lambda c: c["config"].__setitem__("train", []), "config.train is a list"),
    "resolution 48": (lambda c: c["config"]["model"].__setitem__("resolution", 48),
                      "bad value for model.resolution: 48"),
    "step is a string": (lambda c: c.__setitem__("step", "2"), "step is '2', not a step count"),
    "rng of another layout": (lambda c: c["rng"].__setitem__("torch", torch.zeros(7)), "rng.torch is not"),
    "weight of another shape": (lambda c: c["models"]["G"].__setitem__(
        next(iter(c["models"]["G"])), torch.zeros(1, 2)), "does not match its config"),
    "weight of another dtype": (lambda c: c["models"]["G"].__setitem__(
        next(iter(c["models"]["G"])), c["models"]["G"][next(iter(c["models"]["G"]))].double()), "is torch.float64"),
    "dataset is a list": (lambda c: c.__setitem__("dataset", ["digits"]), "dataset is a list"),
}


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("case", list(BROKEN))
def test_checkpoint_with_a_wrong_type_or_value(payload, tmp_path, pics, capsys, cmd, case):
    _skip_export(cmd)
    edit, needle = BROKEN[case]
    edit(payload)
    path = save(payload, tmp_path)
    user_error(capsys, commands(path, tmp_path, pics)[cmd], str(path), needle)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("how", ["nan", "inf", "negative variance"])
def test_non_finite_weights_are_refused_naming_the_checkpoint(payload, tmp_path, pics, capsys, cmd, how):
    _skip_export(cmd)
    for name in ("G", "G_ema"):
        for k, t in payload["models"][name].items():
            if how == "negative variance":
                if k.endswith("running_var"):
                    t.fill_(-1.0)  # finite, but sqrt(var) makes every image NaN
            elif t.is_floating_point():
                t.fill_(float(how))
    path = save(payload, tmp_path)
    err = user_error(capsys, commands(path, tmp_path, pics)[cmd], str(path))
    assert ("NaN or inf" in err or "negative variance" in err) and "please report" not in err, err
    assert_nothing_written(tmp_path)


def test_generator_that_makes_nan_images_is_refused_before_sampling(payload, tmp_path, capsys, monkeypatch):
    """Finite, valid-looking weights can still make NaN images: the load tries two latents first."""
    from fastgan.engine import ckpt_check

    monkeypatch.setattr(ckpt_check, "validate_checkpoint", lambda c, p: None)  # as if validation had missed it
    for k, t in payload["models"]["G_ema"].items():
        if k.endswith("running_var"):
            t.fill_(-1.0)
    path = save(payload, tmp_path)
    monkeypatch.setattr("fastgan.engine.checkpoint.validate_checkpoint", lambda c, p: None)
    user_error(capsys, ["sample", path, "--out", tmp_path / "s.png"], "generator whose images are NaN or inf")


class _Payload:
    def __reduce__(self):
        return os.system, ("touch PWNED",)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_pickle_payload_is_refused_in_plain_words(tmp_path, pics, capsys, cmd):
    _skip_export(cmd)
    path = save({"format": "fastgan.checkpoint", "evil": _Payload()}, tmp_path)
    err = user_error(capsys, commands(path, tmp_path, pics)[cmd])
    assert err == (f"fastgan: error: {path} is not a fastgan checkpoint: loading it would execute code (it holds "
                   "pickled Python objects), so fastgan refuses\n")
    assert not Path("PWNED").exists() and not (tmp_path / "PWNED").exists()


def test_raw_pickle_and_garbage_are_refused_and_nothing_runs(tmp_path, capsys):
    import pickle

    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"evil": _Payload()}))  # not even a torch file
    (tmp_path / "png.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    for name in ("raw.pt", "png.pt"):
        err = user_error(capsys, ["sample", tmp_path / name, "--out", tmp_path / "s.png"], "truncated or corrupt")
        assert "In PyTorch 2.6" not in err, err  # torch's advice paragraph is not the reason
    assert not Path("PWNED").exists()


def test_a_fifo_is_never_opened_as_a_checkpoint(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.pt")
    signal.alarm(20)  # opening a FIFO blocks: fail instead of hanging
    try:
        user_error(capsys, ["sample", tmp_path / "pipe.pt", "--out", tmp_path / "s.png"], "is not a regular file")
    finally:
        signal.alarm(0)


def test_old_and_intact_checkpoints_still_load(ckpt, tmp_path, capsys):
    assert main(["sample", str(ckpt), "--out", str(tmp_path / "s.png"), "-n", "10"]) == 0
    assert (tmp_path / "s.png").is_file()


# -- npz inputs --------------------------------------------------------------------------------------

def test_npz_with_an_object_array(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", mu=np.array([{"x": 1}, None], dtype=object), sigma=np.eye(2))
    np.savez(tmp_path / "b.npz", mu=np.zeros(2), sigma=np.eye(2))
    user_error(capsys, ["fid", tmp_path / "a.npz", tmp_path / "b.npz"], "a.npz does not hold numeric mu and sigma",
               "Object arrays cannot be loaded", "--save-stats")


def test_fid_dims_that_the_stats_files_do_not_have(tmp_path, capsys):
    for name, d in (("a", 192), ("b", 192), ("c", 64)):
        np.savez(tmp_path / f"{name}.npz", mu=np.zeros(d), sigma=np.eye(d))
    user_error(capsys, ["fid", tmp_path / "a.npz", tmp_path / "b.npz", "--dims", 64],
               "a.npz has d=192 features but --dims 64 asks for d=64")
    user_error(capsys, ["fid", tmp_path / "a.npz", tmp_path / "c.npz", "--dims", 192], "c.npz has d=64 features")
    assert main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--dims", "192"]) == 0  # matching: fine


# -- outputs -----------------------------------------------------------------------------------------

FILE_OUTS = {"sample": ("sample", "{ckpt}", "--out", "{out}.png"), "export": ("export", "{ckpt}", "--onnx", "{out}.onnx"),
             "fid": ("fid", "{pics}", "--save-stats", "{out}.npz", "--no-download", "--quiet")}
DIR_OUTS = {"train": ("train", "--steps", "1", "--out", "{out}", *TINY),
            "prepare": ("data", "prepare", "{pics}", "--resolution", "16", "--out", "{out}", "--quiet")}


def argv(template, ckpt, pics, out) -> list[str]:
    return [str(a).format(ckpt=ckpt, pics=pics, out=out) for a in template]


@pytest.mark.parametrize("cmd", list(FILE_OUTS))
def test_file_output_that_is_a_folder(ckpt, pics, tmp_path, capsys, cmd):
    _skip_export(cmd)
    ext = {"sample": ".png", "export": ".onnx", "fid": ".npz"}[cmd]
    folder = tmp_path / f"taken{ext}"
    (folder / "keep").mkdir(parents=True)
    user_error(capsys, argv(FILE_OUTS[cmd], ckpt, pics, tmp_path / "taken"), f"taken{ext} is a folder")
    assert (folder / "keep").is_dir()  # nothing lost


@pytest.mark.parametrize("cmd", list(FILE_OUTS))
def test_file_output_that_is_a_fifo_is_never_opened(ckpt, pics, tmp_path, capsys, cmd):
    _skip_export(cmd)
    ext = {"sample": ".png", "export": ".onnx", "fid": ".npz"}[cmd]
    os.mkfifo(tmp_path / f"pipe{ext}")
    signal.alarm(30)  # writing into a FIFO nobody reads blocks: fail instead of hanging
    try:
        user_error(capsys, argv(FILE_OUTS[cmd], ckpt, pics, tmp_path / "pipe"), f"pipe{ext} is not a regular file")
    finally:
        signal.alarm(0)


@pytest.mark.parametrize("cmd", [*FILE_OUTS, *DIR_OUTS])
def test_output_below_a_regular_file(ckpt, pics, tmp_path, capsys, cmd):
    _skip_export(cmd)
    (tmp_path / "afile").write_text("precious")
    user_error(capsys, argv({**FILE_OUTS, **DIR_OUTS}[cmd], ckpt, pics, tmp_path / "afile" / "sub" / "out"),
               "afile, which is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "precious"


@pytest.mark.parametrize("cmd", list(DIR_OUTS))
def test_folder_output_that_is_a_file(ckpt, pics, tmp_path, capsys, cmd):
    (tmp_path / "afile").write_text("precious")
    user_error(capsys, argv(DIR_OUTS[cmd], ckpt, pics, tmp_path / "afile"), "afile is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "precious"


def _read_only(monkeypatch, folder: Path) -> None:
    """A read-only location: chmod 0555, and, since root ignores that, os.access answering as the kernel would for
    a read-only filesystem (EROFS makes access(W_OK) fail for every user)."""
    folder.chmod(0o555)
    real = os.access

    def access(path, mode, *a, **k):
        if mode & os.W_OK and Path(path).absolute().is_relative_to(folder):
            return False
        return real(path, mode, *a, **k)
    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("cmd", [*FILE_OUTS, *DIR_OUTS])
def test_output_on_a_read_only_location(ckpt, pics, tmp_path, capsys, monkeypatch, cmd):
    _skip_export(cmd)
    ro = tmp_path / "ro"
    ro.mkdir()
    _read_only(monkeypatch, ro)
    try:
        user_error(capsys, argv({**FILE_OUTS, **DIR_OUTS}[cmd], ckpt, pics, ro / "out"), "is read-only")
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_resume_without_out_checks_the_checkpoints_own_run_folder(ckpt, payload, tmp_path, capsys, monkeypatch):
    """Not the current folder: resuming from anywhere must work when the run folder is writable."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent, run)
    payload["config"]["train"]["out"] = ""  # no run folder recorded: the checkpoint's own folder is the run's
    torch.save(payload, run / "checkpoints" / ckpt.name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _read_only(monkeypatch, cwd)  # the current folder is read-only...
    try:
        rc = main(["train", "--resume", str(run / "checkpoints" / ckpt.name), "--steps", "3", "--quiet"])  # ...the run
    finally:  # folder is not
        cwd.chmod(0o755)
    assert rc == 0, capsys.readouterr().err
    assert (run / "checkpoints" / "step-0000003.pt").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0555; the os.access test above covers it")
def test_output_in_a_chmod_0555_folder_without_help(ckpt, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        user_error(capsys, ["sample", ckpt, "--out", ro / "s.png"], "is read-only")
    finally:
        ro.chmod(0o755)


@pytest.fixture
def read_only_mount(tmp_path):
    """A real read-only filesystem (a tmpfs mounted ro), where mounting is allowed (root in a privileged box)."""
    import subprocess

    mnt = tmp_path / "romnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({r.stderr.decode().strip()[:80]}); the os.access test "
                    "above covers the check")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("cmd", [*FILE_OUTS, *DIR_OUTS])
def test_output_on_a_real_read_only_filesystem(ckpt, pics, capsys, read_only_mount, cmd):
    _skip_export(cmd)
    user_error(capsys, argv({**FILE_OUTS, **DIR_OUTS}[cmd], ckpt, pics, read_only_mount / "out"), "is read-only")


def test_user_caused_os_errors_are_one_line_and_bugs_stay_bugs(ckpt, tmp_path, capsys, monkeypatch):
    import fastgan.images

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.png"))
    monkeypatch.setattr(fastgan.images, "save_png", full)
    user_error(capsys, ["sample", ckpt, "-n", 10, "--out", tmp_path / "s.png"], "s.png: no space left on the device",
               "free some space")

    for exc in (MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:118] . DefaultCPUAllocator: can't "
                                           "allocate memory: you tried to allocate 192000000000 bytes")):
        def oom(*a, exc=exc, **k):
            raise exc
        monkeypatch.setattr(fastgan.images, "save_png", oom)
        user_error(capsys, ["sample", ckpt, "-n", 10, "--out", tmp_path / "s.png"], "out of memory", "fewer images")

    def bug(*a, **k):
        raise ZeroDivisionError("a real bug")
    monkeypatch.setattr(fastgan.images, "save_png", bug)
    assert main(["sample", str(ckpt), "-n", "10", "--out", str(tmp_path / "s.png")]) == 1
    assert "internal error: ZeroDivisionError" in capsys.readouterr().err


def test_sample_count_beyond_memory_is_refused_before_allocating(ckpt, tmp_path, capsys):
    """Past free memory Linux kills the process with no message (tried: -n 3e9 was SIGKILLed): refuse up front."""
    user_error(capsys, ["sample", ckpt, "-n", 3_000_000_000, "--out", tmp_path / "s.npz"], "-n 3000000000 needs about",
               "GiB are free")
    assert not (tmp_path / "s.npz").exists()
    user_error(capsys, ["fid", ckpt, "--samples", 30_000_000_000, "--save-stats", tmp_path / "s.npz", "--no-download"],
               "--samples 30000000000 needs", "GiB are free")
    assert not (tmp_path / "s.npz").exists()


# -- options -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["train", "sample", "fid"])
def test_device_meta(ckpt, pics, tmp_path, capsys, cmd):
    a = {"train": ["train", "--steps", 1, *TINY], "sample": ["sample", ckpt, "--out", tmp_path / "s.png"],
         "fid": ["fid", pics, pics, "--no-download"]}[cmd]
    user_error(capsys, [*a, "--device", "meta"], "bad device 'meta'", "cpu or cuda")


@pytest.mark.parametrize("cmd", ["train", "sample", "fid"])
def test_seed_beyond_64_bits(ckpt, pics, tmp_path, capsys, cmd):
    a = {"train": ["train", "--steps", 1, *TINY], "sample": ["sample", ckpt, "--out", tmp_path / "s.png"],
         "fid": ["fid", pics, pics, "--no-download"]}[cmd]
    user_error(capsys, [*a, "--seed", 2**70], str(2**70), "2**63-1")


@pytest.mark.parametrize("key", ["eval.every", "eval.samples", "eval.patience", "eval.reference"])
def test_negative_eval_settings(capsys, key):
    user_error(capsys, ["train", "--steps", 1, "--set", f"{key}=-1", *TINY], f"bad value for {key}: -1", ">= 0")
    assert not Path("runs").exists()


@pytest.mark.parametrize("key,value,most", [("model.z_dim", 2**40, 65536), ("model.g_width", 10**6, 8192),
                                            ("train.batch_size", 10**9, 65536), ("train.steps", 2**70, 2**63 - 1),
                                            ("eval.samples", 10**12, 10**7)])
def test_absurdly_large_settings(capsys, key, value, most):
    """Past these the run dies in an allocation error or is killed by the kernel without a word."""
    user_error(capsys, ["train", "--dry-run", "--set", f"{key}={value}"], f"bad value for {key}: {value}",
               f"at most {most}")
    assert not Path("runs").exists()


def test_batch_larger_than_the_dataset_warns_in_one_line(pics, tmp_path, capsys):
    rc = main(["train", "--steps", "1", "--out", str(tmp_path / "r"), "--set", "data.dataset=folder", "--set",
               f"data.root={pics}", "--set", "model.conditioning=none", *TINY])
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "larger than the dataset" in ln]
    want = ("warning: batch size 16 is larger than the dataset (4 images): each batch repeats images (drawn with "
            "replacement); a smaller --batch-size repeats fewer")
    assert lines == [want], err


def test_checkpoint_keys_dropped_from_a_copy_do_not_touch_the_original(ckpt, payload, tmp_path, capsys):
    """Validation reads, never repairs: the file on disk is byte-identical afterwards."""
    before = ckpt.read_bytes()
    bad = copy.deepcopy(payload)
    del bad["optim"]
    user_error(capsys, ["sample", save(bad, tmp_path), "--out", tmp_path / "s.png"], "it has no optim")
    assert ckpt.read_bytes() == before
