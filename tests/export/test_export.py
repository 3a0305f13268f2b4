"""Export from real checkpoints: onnxruntime vs G.eval() for every generator the core builds, and options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fastgan import __version__
from fastgan.export import ExportOptions, OnnxError

ONNX_EXTRA = "the onnx extra is not installed (pip install 'fastgan[onnx]')"
onnx = pytest.importorskip("onnx", reason=ONNX_EXTRA)
pytest.importorskip("onnxruntime", reason=ONNX_EXTRA)
from fastgan.export.onnx_export import export_checkpoint
from fastgan.export.runtime import OnnxGenerator
from fastgan.export.spec import ATOL_FP16, ATOL_FP32


def _torch_images(G, z: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    with torch.no_grad():
        return G.eval()(torch.from_numpy(z), None if y is None else torch.from_numpy(y)).numpy()


def _max_diff(og: OnnxGenerator, G, n: int = 5, seed: int = 7) -> float:
    """Independent of the exporter's own check: other latents, read back through OnnxGenerator."""
    z, y = og.latents(n, seed), og.labels(n, np.random.default_rng(seed).integers(0, 10, n) if og.num_classes else None)
    ref = _torch_images(G, z, y)
    assert ref.std() > 0.1  # a live generator, not a near-constant one
    return float(np.abs(og.run(z, y) - ref).max())


# concat models export one-hot label inputs and acgan models embedding inputs, so both label modes
# are covered at every architecture, resolution and channel count (G is the same for concat and acgan).
MATRIX = [(a, c, r, ch) for a in ("dcgan", "mlp") for c in ("none", "concat", "acgan") for r in (28, 32, 64, 128)
          for ch in (1, 3)]
# The quick lane's share (an export is ~1.5 s): every (arch, conditioning) once, every resolution and channel
# count among them; the other 42 cases run with the slow tests.
QUICK = {("dcgan", "none", 28, 1), ("dcgan", "concat", 32, 3), ("dcgan", "acgan", 128, 1),
         ("mlp", "none", 64, 3), ("mlp", "concat", 128, 1), ("mlp", "acgan", 28, 3)}


@pytest.mark.parametrize("arch,cond,res,ch", [
    pytest.param(*p, id="-".join(map(str, p)), marks=() if p in QUICK else pytest.mark.slow) for p in MATRIX])
def test_onnxruntime_matches_torch(arch, cond, res, ch, tmp_path, write_checkpoint, model_overrides):
    label_mode = "embed" if cond == "acgan" else "onehot"
    ckpt, _, G_ema = write_checkpoint(tmp_path / "ck.pt", model_overrides(arch, cond, res, ch, label_mode))
    rep = export_checkpoint(ckpt, tmp_path / "g.onnx")
    assert rep.max_abs_diff <= ATOL_FP32 and rep.checked == 17
    og = OnnxGenerator(rep.path, ["CPUExecutionProvider"])
    assert _max_diff(og, G_ema) <= ATOL_FP32
    meta = og.meta
    assert (meta["arch"], meta["resolution"], meta["channels"]) == (arch, res, ch)
    assert meta["num_classes"] == (0 if cond == "none" else 10)
    assert meta["label_mode"] == ("" if cond == "none" else label_mode)


def test_metadata_and_graph(cond_model):
    _, path, _ = cond_model
    model = onnx.load(path)
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["format"] == "fastgan.generator" and props["fastgan_version"] == __version__
    assert (props["latent_size"], props["num_classes"], props["resolution"], props["channels"]) == ("16", "10", "32", "1")
    assert json.loads(props["class_names"]) == [f"class-{i}" for i in range(10)]
    assert (props["training_step"], props["weights"], props["conditioning"]) == ("1234", "ema", "concat")
    assert (props["precision"], props["batch"]) == ("fp32", "dynamic")
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "ConvTranspose" in ops  # folded before export
    assert model.opset_import[0].version == 18
    ins = {i.name: i.type.tensor_type for i in model.graph.input}
    assert ins["z"].elem_type == onnx.TensorProto.FLOAT and ins["label"].elem_type == onnx.TensorProto.INT64
    assert ins["z"].shape.dim[0].dim_param and ins["label"].shape.dim[0].dim_param  # dynamic batch axis
    outs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert outs["images_uint8"].elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in outs["images_uint8"].shape.dim[1:]] == [32, 32, 1]


def test_ema_and_raw_weights(tmp_path, write_checkpoint, model_overrides):
    ckpt, G, G_ema = write_checkpoint(tmp_path / "ck.pt", model_overrides("dcgan", "concat", 28, 1))
    rep = export_checkpoint(ckpt, tmp_path / "raw.onnx", ExportOptions(use_ema=False))
    assert rep.meta["weights"] == "raw"
    og = OnnxGenerator(rep.path)
    assert _max_diff(og, G) <= ATOL_FP32
    assert _max_diff(og, G_ema) > 1e-2  # the two weight sets really differ, so the test can tell them apart


def test_fp16_within_stated_tolerance(tmp_path, write_checkpoint, model_overrides):
    ckpt, _, G_ema = write_checkpoint(tmp_path / "ck.pt", model_overrides("dcgan", "acgan", 64, 3, "embed"))
    rep = export_checkpoint(ckpt, tmp_path / "g16.onnx", ExportOptions(fp16=True))
    assert rep.meta["precision"] == "fp16" and rep.tolerance == ATOL_FP16
    weights = [i for i in onnx.load(rep.path).graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert _max_diff(OnnxGenerator(rep.path), G_ema) <= ATOL_FP16


def test_static_batch_pads_and_trims(uncond_model):
    _, path, G_ema = uncond_model
    og = OnnxGenerator(path)
    assert og.batch == 4 and og.meta["batch"] == "4" and og.num_classes == 0
    assert onnx.load(path).opset_import[0].version == 20
    z = og.latents(10, 3)  # 4 + 4 + 2 (padded to 4, then trimmed)
    x = og.run(z)
    assert x.shape == (10, 3, 28, 28)
    np.testing.assert_allclose(x, _torch_images(G_ema, z, None), atol=ATOL_FP32, rtol=0)
    assert og.generate(2, seed=0).shape == (2, 28, 28, 3)  # uint8 computed in numpy: no uint8 output


def test_failed_check_writes_nothing(tmp_path, write_checkpoint, model_overrides, monkeypatch):
    """An export that does not match torch (here: BatchNorm dropped instead of folded) fails loudly."""
    import fastgan.export.onnx_export as ex

    ckpt, _, _ = write_checkpoint(tmp_path / "ck.pt", model_overrides("dcgan", "none", 32, 1))

    def drop_bn(G):
        import copy

        G = copy.deepcopy(G).eval()
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_(), m.running_var.fill_(1.0), m.weight.data.fill_(1.0), m.bias.data.zero_()
        return G

    monkeypatch.setattr(ex, "fold_batchnorm", drop_bn)
    with pytest.raises(OnnxError, match=r"export check failed: max \|onnxruntime - torch\|"):
        export_checkpoint(ckpt, tmp_path / "bad.onnx")
    assert list(tmp_path.glob("*.onnx*")) == []
