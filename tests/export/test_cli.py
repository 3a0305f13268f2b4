"""`fastgan export` and `fastgan sample --onnx` through fastgan.cli.main: outputs and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgan.cli import main

ONNX_EXTRA = "the onnx extra is not installed (pip install 'fastgan[onnx]')"
onnx = pytest.importorskip("onnx", reason=ONNX_EXTRA)
pytest.importorskip("onnxruntime", reason=ONNX_EXTRA)


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastgan: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_export_flags(tmp_path, capsys, write_checkpoint, model_overrides):
    ckpt, _, _ = write_checkpoint(tmp_path / "ck.pt", model_overrides("mlp", "concat", 32, 3))
    out = tmp_path / "deploy" / "g.onnx"
    rc = main(["export", str(ckpt), "--onnx", str(out), "--no-ema", "--opset", "19", "--batch", "3", "--no-uint8"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "wrote" in err and "raw weights" in err and "max |onnxruntime - torch| =" in err
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert (props["weights"], props["batch"], props["arch"]) == ("raw", "3", "mlp")
    assert model.opset_import[0].version == 19 and [o.name for o in model.graph.output] == ["images"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3


@pytest.mark.parametrize("ext", ["npz", "png"])
def test_sample_onnx_matches_checkpoint_sample(cond_model, capsys, ext):
    ckpt, path, _ = cond_model
    args = ["-n", "12", "--seed", "5", "--labels", "2,7"]
    assert main(["sample", "--onnx", str(path), "--out", f"onnx.{ext}", *args]) == 0
    assert "onnxruntime provider: CPUExecutionProvider" in capsys.readouterr().err
    assert main(["sample", str(ckpt), "--out", f"torch.{ext}", *args]) == 0
    if ext == "npz":
        a, b = np.load("onnx.npz"), np.load("torch.npz")
        assert a["images"].shape == (12, 32, 32, 1) and np.array_equal(a["labels"], b["labels"])
        assert np.abs(a["images"].astype(int) - b["images"]).max() <= 1  # same latents: same images
    else:
        from PIL import Image

        a, b = np.asarray(Image.open("onnx.png")), np.asarray(Image.open("torch.png"))
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1


def test_export_not_a_generator_checkpoint(tmp_path, capsys, cond_model):
    torch.save({"weights": torch.randn(3)}, tmp_path / "random.pt")
    _one_line_error(capsys, main(["export", str(tmp_path / "random.pt")]), "is not a fastgan checkpoint")
    (tmp_path / "image.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    _one_line_error(capsys, main(["export", str(tmp_path / "image.pt")]), "truncated or corrupt")
    ckpt = torch.load(cond_model[0], weights_only=True)
    ckpt["models"] = {"D": ckpt["models"]["D"]}
    torch.save(ckpt, tmp_path / "d-only.pt")
    _one_line_error(capsys, main(["export", str(tmp_path / "d-only.pt")]), "without generator weights")
    ckpt["models"] = {"G": ckpt["models"]["D"], "G_ema": None}
    torch.save(ckpt, tmp_path / "d-as-g.pt")
    _one_line_error(capsys, main(["export", str(tmp_path / "d-as-g.pt")]), "does not match its config")
    _one_line_error(capsys, main(["export", str(cond_model[1])]), "is an ONNX model already")
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.parametrize("argv,needle", [
    (["--opset", "99"], "--opset 99 is not supported: choose one of 18..23"),
    (["--opset", "11"], "--opset 11 is not supported"),
    (["--batch", "0"], "expected 'dynamic' or a positive integer, got '0'"),
    (["--onnx", "g.pt"], "--onnx must end in .onnx"),
])
def test_export_bad_options(cond_model, capsys, argv, needle):
    try:
        rc = main(["export", str(cond_model[0]), *argv])
    except SystemExit as e:  # argparse rejects a malformed value itself, also with one line and exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_sample_onnx_bad_input(tmp_path, capsys, cond_model, uncond_model):
    onnx_path = str(cond_model[1])
    _one_line_error(capsys, main(["sample", "--onnx", onnx_path, "--labels", "10"]),
                    "label 10 is out of range: this model has classes 0..9")
    _one_line_error(capsys, main(["sample", "--onnx", str(uncond_model[1]), "--labels", "1"]), "unconditional")
    (tmp_path / "fake.onnx").write_bytes(b"\x00\x01 not protobuf")
    _one_line_error(capsys, main(["sample", "--onnx", str(tmp_path / "fake.onnx")]), "is not a loadable ONNX model")
    _one_line_error(capsys, main(["sample", "--onnx", str(cond_model[0])]), "is not a loadable ONNX model")
    _one_line_error(capsys, main(["sample"]), "give a checkpoint or --onnx")
    _one_line_error(capsys, main(["sample", str(cond_model[0]), "--onnx", onnx_path]), "exactly one of them")
    assert not list(tmp_path.glob("samples.*"))


def test_missing_onnx_packages(cond_model, capsys, monkeypatch):
    """Without the onnx extra the CLI still loads and says what to install."""
    import sys

    for name in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # `import onnx` now raises ImportError
    for name in ("fastgan.export.onnx_export", "fastgan.export.runtime"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    _one_line_error(capsys, main(["export", str(cond_model[0])]), "needs the 'onnx' package", "fastgan[onnx]")
    _one_line_error(capsys, main(["sample", "--onnx", str(cond_model[1])]), "needs the 'onnxruntime' package")
