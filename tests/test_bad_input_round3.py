"""Round 3 of bad input: each case used to end in `fastgan: internal error` (exit 1), an abort, lost data or a wrong
message. Now: one line `fastgan: error: ...` naming the problem and the fix, exit 2, no traceback, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastgan import threads
from fastgan.cli import main
from fastgan.data.prepare import read_manifest
from fastgan.engine import runfolder
from fastgan.errors import FastganError
from fastgan.outputs import check_output_dir, user_system_error

DEEP = "[" * 100_000  # deeper than any JSON parser recurses


def user_error(capsys, argv, *needles) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("fastgan: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """A finished 2-step run of the tiny model (copy it before changing it)."""
    return tiny_run


# -- 1. a file where the run folder keeps a folder (and the reverse) ---------------------------------------------

@pytest.mark.parametrize("name", ["checkpoints", "samples"])
def test_a_file_named_like_a_run_subfolder_is_refused_before_step_1(tmp_path, capsys, name, tiny_argv):
    rf = tmp_path / "rf"
    rf.mkdir()
    (rf / name).write_text("mine\n")
    user_error(capsys, ["train", "--steps", 2, "--out", rf, *tiny_argv, "--quiet"], f"{rf / name} is not a folder", "--out")
    assert (rf / name).read_text() == "mine\n"
    assert not (rf / "config.json").exists() and not (rf / "metrics.jsonl").exists()  # refused before any work


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_a_folder_or_fifo_named_like_a_run_file_is_named(tmp_path, capsys, name, tiny_argv):
    rf = tmp_path / "rf"
    (rf / name).mkdir(parents=True)
    err = user_error(capsys, ["train", "--steps", 2, "--out", rf, *tiny_argv, "--quiet"], f"{rf / name} is a folder")
    assert ".tmp" not in err  # never write_atomic's temp file name
    (rf / name).rmdir()
    os.mkfifo(rf / name)
    user_error(capsys, ["train", "--steps", 2, "--out", rf, *tiny_argv, "--quiet"], "not a regular file")
    assert not (rf / "checkpoints").exists()


def test_write_atomic_over_a_folder_names_the_folder(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        runfolder.write_text_atomic(tmp_path / "config.json", "{}")
    assert e.value.filename == str(tmp_path / "config.json")
    assert os.listdir(tmp_path) == ["config.json"]  # no temp file left
    assert "config.json: it is a folder" in user_system_error(e.value)


def test_mkdir_where_a_file_is_is_a_user_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError) as e:
        (tmp_path / "f").mkdir(parents=True, exist_ok=True)
    line = user_system_error(e.value)
    assert line is not None and "a folder belongs there but it is a file" in line and str(tmp_path / "f") in line


@pytest.mark.parametrize(("err", "words"), [
    (errno.EEXIST, "exists already"), (errno.EFBIG, "ulimit -f"), (errno.ELOOP, "symlink loop"),
    (errno.EMFILE, "ulimit -n"), (errno.ENFILE, "too many open files"), (errno.EBUSY, "busy"),
    (errno.ETXTBSY, "running program"), (errno.ENXIO, "no such device"), (errno.ENOTEMPTY, "not empty")])
def test_user_fixable_errnos_are_one_line(err, words):
    line = user_system_error(OSError(err, os.strerror(err), "/some/file"))
    assert line is not None and words in line and "/some/file" in line, line


# -- 2. the file size limit (ulimit -f) ------------------------------------------------------------------------

class FileSizeLimit:
    """RLIMIT_FSIZE for this process (Python ignores SIGXFSZ, so a write past it fails with EFBIG)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __enter__(self):
        self.old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.nbytes, self.old[1]))

    def __exit__(self, *exc) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self.old)


def test_write_atomic_past_the_file_size_limit_is_disk_full_naming_ulimit(tmp_path):
    target = tmp_path / "step.pt"
    target.write_bytes(b"old")
    with FileSizeLimit(50_000), pytest.raises(runfolder.DiskFull) as e:
        runfolder.write_atomic(target, bytes(200_000))
    assert e.value.errno == errno.EFBIG and "ulimit -f" in str(e.value) and "0.2 MB" in str(e.value)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["step.pt"]  # old file intact, no temp file


def test_append_line_past_the_file_size_limit_leaves_whole_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n' + " " * 999 + "\n")
    with FileSizeLimit(1024), pytest.raises(runfolder.DiskFull, match="ulimit -f"):
        runfolder.append_line(log, json.dumps({"step": 2, "pad": "x" * 100}))
    assert log.read_text().endswith("\n") and log.stat().st_size == 1012


def test_training_past_the_file_size_limit_is_one_line(tmp_path, capsys, tiny_argv):
    with FileSizeLimit(100_000):  # the grid fits, the first checkpoint does not
        user_error(capsys, ["train", "--steps", 2, "--out", tmp_path / "ul", *tiny_argv, "--quiet"], "step-0000002.pt")
    assert not list((tmp_path / "ul" / "checkpoints").iterdir())  # no temp file left behind


# -- 3. a NUL character in a path -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["embedded null byte", "open: embedded null character in path"])
def test_a_nul_in_any_path_is_a_user_error(text):
    line = user_system_error(ValueError(text))
    assert line is not None and "NUL character" in line


def test_a_nul_reaching_an_os_call_is_one_line(capsys, monkeypatch):
    from fastgan.commands import presets

    monkeypatch.setattr(presets, "run", lambda args: os.stat("a\0b"))
    user_error(capsys, ["presets"], "a path contains a NUL character")


def test_a_nul_in_an_output_folder_is_named(tmp_path, capsys, pics):
    user_error(capsys, ["data", "prepare", pics, "--resolution", 16, "--out", tmp_path / "a\0b"],
               "contains a NUL character", "--out")
    with pytest.raises(FastganError, match="NUL"):
        check_output_dir("runs/a\0b")


# -- 4. JSON nested deeper than the parser recurses -------------------------------------------------------------

def test_read_jsonl_counts_a_too_deep_line_as_unreadable(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n' + DEEP + "\n" + '{"step": 2}\n')
    rows, bad = runfolder.read_jsonl(p)
    assert [r["step"] for r in rows] == [1, 2] and bad == 1


def test_a_too_deep_lock_file_and_manifest_are_unreadable_not_fatal(tmp_path):
    (tmp_path / ".lock").write_text(DEEP)
    with runfolder.RunLock(tmp_path) as lock:
        assert lock.previous is None
    (tmp_path / "manifest.json").write_text(DEEP)
    assert read_manifest(tmp_path) is None


def test_resume_with_a_too_deep_metrics_line(run, tmp_path, capsys, tiny_argv):
    import shutil

    rf = tmp_path / "rf"
    shutil.copytree(run, rf)
    with open(rf / "metrics.jsonl", "a") as f:
        f.write(DEEP + "\n")
    assert main(["train", "--resume", "auto", "--out", str(rf), "--steps", "3", *tiny_argv, "--quiet"]) == 0
    assert "dropped 1 unreadable line" in capsys.readouterr().err


def test_a_too_deep_config_file_is_one_line(tmp_path, capsys):
    (tmp_path / "deep.json").write_text(DEEP)
    user_error(capsys, ["train", "--config", tmp_path / "deep.json", "--out", tmp_path / "o"], "nested too deeply")


# -- 5./6. data download: --mirror, --timeout, --root -----------------------------------------------------------

@pytest.mark.parametrize(("mirror", "words"), [
    ("notaurl", "not an http, https or file URL"), ("http://[::1", "Invalid IPv6 URL"), ("ftp://h/x", "not an http"),
    ("http://", "names no server"), ("http://h:99999/", "Port out of range")])
def test_a_bad_mirror_is_one_line(tmp_path, capsys, mirror, words):
    user_error(capsys, ["data", "download", "mnist", "--root", tmp_path / "dl", "--mirror", mirror, "--timeout", 2],
               "--mirror", words)
    assert not (tmp_path / "dl").exists()


def test_a_bad_mirror_from_the_environment_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTGAN_MIRROR", "notaurl")
    user_error(capsys, ["data", "download", "mnist", "--root", tmp_path / "dl"], "$FASTGAN_MIRROR")


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_a_bad_timeout_is_refused(tmp_path, capsys, timeout):
    user_error(capsys, ["data", "download", "mnist", "--root", tmp_path / "dl", "--timeout", timeout], "--timeout",
               "positive number of seconds")


def test_download_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x\n")
    user_error(capsys, ["data", "download", "mnist", "--root", tmp_path / "afile", "--timeout", 2],
               "--root", "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x\n"


# -- 7. prepare --resolution and data.cache_resolution are capped -----------------------------------------------

def test_prepare_resolution_is_capped(tmp_path, capsys, pics):
    user_error(capsys, ["data", "prepare", pics, "--resolution", 100_000, "--out", tmp_path / "p"], "--resolution",
               "too large", "1024")
    user_error(capsys, ["data", "prepare", pics, "--resolution", 4, "--out", tmp_path / "p"], "too small")
    assert not (tmp_path / "p").exists()


def test_cache_resolution_is_capped(tmp_path, capsys, pics, tiny_argv):
    user_error(capsys, ["train", "--steps", 1, "--out", tmp_path / "o", "--set", "data.dataset=folder", "--set",
                        f"data.root={pics}", "--set", "data.cache_resolution=100000", "--set",
                        f"data.cache_dir={tmp_path / 'cache'}", *tiny_argv, "--quiet"], "bad value for data.cache_resolution: 100000 (8 to 1024 px")
    assert not (tmp_path / "cache").exists()


# -- 8. the lock file is never written through a link -----------------------------------------------------------

def test_a_symlinked_lock_never_truncates_its_target(tmp_path, capsys, tiny_argv):
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    (tmp_path / "lk").mkdir()
    (tmp_path / "lk" / ".lock").symlink_to(precious)
    user_error(capsys, ["train", "--steps", 2, "--out", tmp_path / "lk", *tiny_argv, "--quiet"], ".lock is a symlink",
               "rm ")
    assert precious.read_text() == "precious\n"
    assert not (tmp_path / "lk" / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["hardlink", "fifo", "folder"])
def test_a_lock_that_is_not_a_plain_file_is_refused(tmp_path, kind):
    precious = tmp_path / "precious.txt"
    precious.write_text("precious\n")
    rf = tmp_path / "rf"
    rf.mkdir()
    {"hardlink": lambda p: os.link(precious, p), "fifo": os.mkfifo, "folder": os.mkdir}[kind](rf / ".lock")
    with pytest.raises(runfolder.RunFolderUnusable, match=r"\.lock .*(hard link|not a regular file|is a folder)"):
        runfolder.RunLock(rf).acquire()
    assert precious.read_text() == "precious\n"
    assert not runfolder.is_busy(rf)


# -- 9. Ctrl-C while torch (or any heavy native module) imports -------------------------------------------------

def test_sigint_during_a_heavy_import_waits_for_the_import(tmp_path):
    """The module sends SIGINT to its own process in the middle of its import, then finishes (writes a marker):
    the import must complete (a KeyboardInterrupt inside torch's pybind11 start-up aborts the process), then the
    CLI stops with its usual line and 130."""
    (tmp_path / "slowmod.py").write_text(textwrap.dedent("""
        import os, signal
        os.kill(os.getpid(), signal.SIGINT)
        total = sum(range(100_000))  # a KeyboardInterrupt not deferred is raised here
        open(os.environ["MARKER"], "w").write("imported")
        """))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import fastgan.cli as cli
        import fastgan.commands.presets as presets
        cli.HEAVY_MODULES = cli.HEAVY_MODULES | {{"slowmod"}}
        def run(args):
            import slowmod
            print("not reached: the deferred Ctrl-C stops the command after the import")
            return 0
        presets.run = run
        sys.exit(cli.main(["presets"]))
        """)
    marker = tmp_path / "marker"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MARKER": str(marker)},
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 130, out.stderr
    assert out.stderr.strip().startswith("fastgan: interrupted") and "Traceback" not in out.stderr, out.stderr
    assert marker.read_text() == "imported" and "not reached" not in out.stdout


# -- 10. invalid OpenMP / MKL thread counts ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "0", "-3", "", "2,x", "1.5"])
@pytest.mark.parametrize("name", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_an_invalid_thread_count_is_dropped_with_one_warning(capsys, name, value):
    env = {name: value}
    threads.configure(env)
    err = capsys.readouterr().err
    assert name not in env and err.count("\n") == 1 and err.startswith(f"fastgan: warning: {name}="), err
    for good in ("4", " 2 ", "+3", "4,2" if name == "OMP_NUM_THREADS" else "16"):  # what the runtimes accept stays
        env = {name: good}
        threads.configure(env)
        assert env[name] == good and capsys.readouterr().err == ""


def test_libgomp_never_sees_an_invalid_thread_count():
    code = "from fastgan import threads\nthreads.configure()\nimport torch\ntorch.ones(4).sum()\n"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "abc"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "libgomp" not in out.stderr and "fastgan: warning: OMP_NUM_THREADS='abc'" in out.stderr, out.stderr


# -- 11. messages that named the wrong problem ------------------------------------------------------------------

def test_out_a_broken_symlink_or_a_loop_is_named(tmp_path, capsys, pics, tiny_argv):
    (tmp_path / "dang").symlink_to(tmp_path / "nonexistent")
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    for name, words in (("dang", "a broken symlink"), ("l1", "a symlink loop")):
        err = user_error(capsys, ["data", "prepare", pics, "--resolution", 16, "--out", tmp_path / name], words)
        assert "is a file" not in err
        err = user_error(capsys, ["train", "--steps", 2, "--out", tmp_path / name, *tiny_argv, "--quiet"], words)


@pytest.mark.parametrize("dataset", ["folder", "mnist", "cifar10"])
def test_data_root_that_is_a_file(tmp_path, capsys, dataset, tiny_argv):
    (tmp_path / "afile").write_text("x\n")
    user_error(capsys, ["train", "--steps", 1, "--out", tmp_path / "o", "--set", f"data.dataset={dataset}", "--set",
                        f"data.root={tmp_path / 'afile'}", *tiny_argv, "--quiet"], "is a file, not a folder", "data.root")


def test_one_class_folder_with_conditioning_says_one_class(tmp_path, capsys, pics, tiny_argv):
    (tmp_path / "one").mkdir()
    pics.rename(tmp_path / "one" / "cats")
    rc = main([str(a) for a in ["train", "--steps", 1, "--out", tmp_path / "o", "--set", "data.dataset=folder",
                                "--set", f"data.root={tmp_path / 'one'}", "--set", "data.class_folders=true", "--set",
                                f"data.cache_dir={tmp_path / 'cache'}", *tiny_argv, "--quiet"]])
    err = capsys.readouterr().err.splitlines()[-1]  # after the cache build's progress lines
    assert rc == 2 and err.startswith("fastgan: error: conditioning 'concat' needs at least 2 classes"), err
    assert "has 1 (cats)" in err and "model.conditioning=none" in err and "has none" not in err


def test_a_text_file_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.pt").write_text("hello this is text\n")
    err = user_error(capsys, ["sample", tmp_path / "notes.pt", "--out", tmp_path / "s.png"],
                     "is not a fastgan checkpoint", "neither a zip nor a pickle file")
    assert "(101)" not in err
    (tmp_path / "empty.pt").write_bytes(b"")
    user_error(capsys, ["sample", tmp_path / "empty.pt", "--out", tmp_path / "s.png"], "is empty (0 bytes")


def test_a_cut_checkpoint_message_has_no_torch_advice(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "step-0000002.pt"
    (tmp_path / "cut.pt").write_bytes(ckpt.read_bytes()[:3000])
    err = user_error(capsys, ["sample", tmp_path / "cut.pt", "--out", tmp_path / "s.png"], "truncated or corrupt",
                     "failed finding central directory)")
    assert "If yo" not in err and "miniz" not in err
