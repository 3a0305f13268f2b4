"""OnnxGenerator: numpy-only inference on an exported model, its outputs, labels and errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

ONNX_EXTRA = "the onnx extra is not installed (pip install 'fastgan[onnx]')"
onnx = pytest.importorskip("onnx", reason=ONNX_EXTRA)
pytest.importorskip("onnxruntime", reason=ONNX_EXTRA)
from onnx import TensorProto, helper

from fastgan.export import OnnxError, OnnxGenerator, runtime


def test_generate_uint8_and_float(cond_model):
    _, path, G_ema = cond_model
    og = OnnxGenerator(path)
    assert (og.z_dim, og.num_classes, og.resolution, og.channels, og.batch) == (16, 10, 32, 1, None)
    assert og.class_names[3] == "class-3" and og.meta["training_step"] == 1234
    u8 = og.generate(20, seed=1)
    assert u8.dtype == np.uint8 and u8.shape == (20, 32, 32, 1)
    x = og.generate(20, seed=1, output="float")
    assert x.dtype == np.float32 and x.shape == (20, 1, 32, 32) and -1 <= x.min() < x.max() <= 1
    assert np.abs(u8.astype(int) - runtime.to_uint8(x)).max() <= 1  # graph's uint8 output = numpy conversion
    with torch.no_grad():  # default labels: every class in turn
        ref = G_ema(torch.from_numpy(og.latents(20, 1)), torch.arange(20) % 10).numpy()
    np.testing.assert_allclose(x, ref, atol=1e-4, rtol=0)


def test_seed_and_labels(cond_model):
    og = OnnxGenerator(cond_model[1])
    a, b, c = og.generate(6, seed=5), og.generate(6, seed=5), og.generate(6, seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    threes = og.generate(6, labels=3, seed=5, output="float")
    np.testing.assert_array_equal(threes, og.run(og.latents(6, 5), [3] * 6))
    assert np.abs(threes - og.generate(6, labels=4, seed=5, output="float")).max() > 1e-2  # the label matters
    np.testing.assert_array_equal(og.labels(5, [1, 2]), [1, 2, 1, 2, 1])


@pytest.mark.parametrize("labels,match", [([10], "label 10 is out of range: this model has classes 0..9"),
                                           (-1, "label -1 is out of range"), ([0.5], "labels must be integers")])
def test_bad_labels(cond_model, labels, match):
    with pytest.raises(OnnxError, match=match):
        OnnxGenerator(cond_model[1]).generate(4, labels=labels)


def test_bad_calls(cond_model, uncond_model):
    og = OnnxGenerator(cond_model[1])
    with pytest.raises(OnnxError, match=r"latents must have shape \(N >= 1, 16\)"):
        og.run(np.zeros((2, 15), np.float32))
    with pytest.raises(OnnxError, match="output must be 'float' or 'uint8'"):
        og.generate(2, output="png")
    with pytest.raises(OnnxError, match="n must be at least 1"):
        og.generate(0)
    with pytest.raises(OnnxError, match="unconditional: pass labels=None"):
        OnnxGenerator(uncond_model[1]).generate(2, labels=[1])


def test_bad_files(tmp_path, cond_model):
    with pytest.raises(OnnxError, match="does not exist"):
        OnnxGenerator(tmp_path / "missing.onnx")
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(OnnxError, match="is not a loadable ONNX model"):
        OnnxGenerator(tmp_path / "text.onnx")
    with pytest.raises(OnnxError, match="is not a loadable ONNX model"):
        OnnxGenerator(cond_model[0])  # a checkpoint is not ONNX
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "other.onnx")
    with pytest.raises(OnnxError, match="not a fastgan generator"):
        OnnxGenerator(tmp_path / "other.onnx")


def test_provider_preference(monkeypatch):
    monkeypatch.setattr(runtime.ort, "get_available_providers",
                        lambda: ["CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider",
                                 "TensorrtExecutionProvider"])
    assert runtime.best_providers() == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_generate_without_torch(cond_model):
    """The deployment API never imports torch: checked in a fresh interpreter."""
    path = cond_model[1]
    code = (
        "import sys, hashlib\n"
        "from fastgan.export import OnnxGenerator\n"
        f"g = OnnxGenerator({str(path)!r})\n"
        "x = g.generate(5, labels=[1, 2], seed=9)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(x.shape, x.dtype, hashlib.sha256(x.tobytes()).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    import hashlib

    same = OnnxGenerator(path).generate(5, labels=[1, 2], seed=9)
    assert out.stdout.split() == ["(5,", "32,", "32,", "1)", "uint8", hashlib.sha256(same.tobytes()).hexdigest()]


@pytest.mark.parametrize("edit", [{"latent_size": "many"}, {"class_names": "{cut"}, {"class_names": '"0"'},
                                  {"format_version": "x"}, {"resolution": None}])
def test_damaged_metadata(tmp_path, cond_model, edit):
    """A fastgan ONNX file whose metadata was edited or cut: one named error, not a KeyError or ValueError."""
    model = onnx.load(str(cond_model[1]))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in edit.items():
        props.pop(key) if value is None else props.__setitem__(key, value)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, tmp_path / "edited.onnx")
    with pytest.raises(OnnxError, match="has damaged fastgan metadata.*export it again"):
        OnnxGenerator(tmp_path / "edited.onnx")
