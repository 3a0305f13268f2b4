"""`fastgan export --layout torch-fidelity`: checked against a stand-in of torch-fidelity's ONNX generator loader
(torch_fidelity/generative_model_onnx.py: inputs fed by position from ``session.get_inputs()``, output 0 taken as
the images), with the sample draw of its generator input (normal z float32, int64 labels) and the dtype/shape
contract its feature extractors assert (uint8, (N, 3, H, W)). torch-fidelity itself needs a torchvision build
that is not installable here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")
pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")

import onnxruntime as ort
import torch

from fastgan.cli import main
from fastgan.config import load_config
from fastgan.engine.checkpoint import make_payload, save_atomic
from fastgan.engine.state import build_state
from fastgan.export import OnnxGenerator

SHAPE = {"model.g_width": "8", "model.d_width": "8", "model.z_dim": "16"}


class FidelityStandIn:
    """What torch-fidelity does with an ONNX generator: positional inputs, output 0, uint8 (N, 3, H, W)."""

    def __init__(self, path: Path, z_size: int, num_classes: int) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_names = [a.name for a in self.session.get_inputs()]
        self.z_size, self.num_classes = z_size, num_classes

    def forward(self, *args: np.ndarray) -> np.ndarray:
        assert len(args) == len(self.input_names), (args, self.input_names)
        return self.session.run(None, {self.input_names[i]: a for i, a in enumerate(args)})[0]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.RandomState(seed)
        args = [rng.randn(n, self.z_size).astype(np.float32)]
        if self.num_classes:
            args.append(rng.randint(0, self.num_classes, size=(n,)).astype(np.int64))
        x = self.forward(*args)
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[:2] == (n, 3), (x.dtype, x.shape)
        return x


def checkpoint(tmp_path: Path, **overrides: str) -> Path:
    cfg = load_config(None, {**SHAPE, "optim.ema_decay": "0", **overrides})
    st = build_state(cfg, torch.device("cpu"))
    with torch.no_grad():  # off DCGAN's near-zero init, so the images span the grey levels
        for m in st.G.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.mul_(15)
    path = tmp_path / "g.pt"
    save_atomic(make_payload(st, cfg, {"name": "test", "class_names": []}), path)
    return path


@pytest.mark.parametrize("kind", ["grey-conditional", "rgb-unconditional"])
def test_torch_fidelity_reads_the_export(tmp_path, capsys, kind):
    ov = ({"model.channels": "1", "model.num_classes": "10"} if kind == "grey-conditional"
          else {"model.channels": "3", "model.conditioning": "none"})
    ckpt, out = checkpoint(tmp_path, **ov), tmp_path / "gen.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--layout", "torch-fidelity"]) == 0
    err = capsys.readouterr().err
    k = 10 if kind == "grey-conditional" else 0
    assert f"--input1 {out} --input1-model-z-type normal --input1-model-z-size 16" in err
    assert ("--input1-model-num-classes 10" in err) == bool(k)
    tf = FidelityStandIn(out, 16, k)
    assert tf.input_names == (["z", "label"] if k else ["z"])
    x = tf.sample(5)
    assert x.shape == (5, 3, 32, 32) and x.std() > 10  # real images, not a constant
    # the same images as fastgan's own runtime (uint8 NHWC), transposed and with grey repeated
    g = OnnxGenerator(out)
    rng = np.random.RandomState(0)
    z = rng.randn(5, 16).astype(np.float32)
    y = rng.randint(0, k, size=(5,)).astype(np.int64) if k else None
    ref = g.run(z, y, output="uint8").transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(tf.forward(*([z, y] if k else [z])), np.broadcast_to(ref, (5, 3, 32, 32)))
    assert g.meta["layout"] == "torch-fidelity"


def test_default_layout_fails_the_contract(tmp_path):
    """Negative control: the stand-in would catch today's float, 1-channel first output."""
    ckpt, out = checkpoint(tmp_path, **{"model.channels": "1", "model.num_classes": "10"}), tmp_path / "gen.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out)]) == 0
    with pytest.raises(AssertionError):
        FidelityStandIn(out, 16, 10).sample(2)


def test_bad_layout_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's choices: the CLI's one-line usage error
        main(["export", str(tmp_path / "g.pt"), "--layout", "fidelity"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(err) == 1 and "--layout" in err[0] and "torch-fidelity" in err[0], err
