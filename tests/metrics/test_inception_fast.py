"""The onnxruntime Inception backend gives the torch reference's features, and falls back loudly."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.errors import FastganError
from fastgan.fallback import FallbackWarning
from fastgan.metrics import inception as inc

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'fastgan[onnx]')")


@pytest.fixture(scope="module")
def nets(npz_path):
    if not npz_path.is_file():
        pytest.skip(f"Inception weights not found at {npz_path} (set FASTGAN_DATA)")
    return inc.load_inception(npz_path, backend="torch"), inc.load_inception(npz_path, backend="onnxruntime")


def real_images(data_dir, n=4):
    """n MNIST and n Fashion-MNIST test images in [-1, 1] (grey, 28 px: resized and repeated by the net)."""
    out = []
    for name, folder in (("mnist", "mnist"), ("fashion-mnist", "fashion_mnist")):
        ds = load_dataset(DataConfig(dataset=name, root=str(data_dir / folder), split="test"))
        out.append(ds.images[:n].float() / 127.5 - 1)
    return torch.cat(out)


def test_fast_features_equal_the_reference_on_real_images(nets, data_dir):
    ref_net, fast = nets
    assert isinstance(ref_net, inc.FIDInception) and fast.backend == "onnxruntime"
    x = real_images(data_dir)
    with torch.no_grad():
        ref, _ = ref_net(x)
        got, _ = fast(x)
    assert fast.session() is not None and fast.path.is_file()  # onnxruntime ran, from the cached export
    assert got.shape == ref.shape == (8, 2048) and got.dtype == torch.float32
    assert float((got - ref).abs().max()) < 1e-4  # the FID protocol's tolerance; measured ~1e-5
    assert ref.abs().mean() > 0.1 and (ref[0] - ref[4]).abs().max() > 0.1  # real, distinct activations


def test_fast_logits_use_the_same_fc(nets):
    _, fast = nets
    fast.fc = torch.nn.Linear(2048, 1008)
    try:
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
        f, lg = fast(x, logits=True)
        torch.testing.assert_close(lg, f @ fast.fc.weight.T)
    finally:
        fast.fc = None
    with pytest.raises(FastganError, match="no fc layer"):
        fast(torch.zeros(1, 1, 8, 8), logits=True)


def test_auto_picks_onnxruntime_on_cpu_and_torch_stays_available(nets):
    ref_net, _ = nets
    assert inc.with_backend(ref_net, "auto").backend == "onnxruntime"
    assert inc.with_backend(ref_net, "torch") is ref_net
    with pytest.raises(FastganError, match="unknown Inception backend 'tf'"):
        inc.load_inception("unused", backend="tf")


def test_without_onnxruntime_auto_warns_once_and_uses_torch(nets, monkeypatch, fresh_fallbacks):
    ref_net, _ = nets
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.warns(FallbackWarning, match=r"metrics.inception \(onnxruntime\) falls back: onnxruntime is not"):
        assert inc.with_backend(ref_net, "auto") is ref_net
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inc.with_backend(ref_net, "auto")  # no second warning
    with pytest.raises(FastganError, match="onnxruntime Inception backend is unavailable"):
        inc.with_backend(ref_net, "onnxruntime")


def test_a_failed_export_falls_back_to_the_reference(monkeypatch, fresh_fallbacks):
    def broken(net, path):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(inc, "export_onnx", broken)
    monkeypatch.setattr(inc, "_SESSIONS", {})
    ref_net = inc.FIDInception(64).eval()  # random weights, the cheap 64-d layer: only the dispatch matters here
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    auto = inc.with_backend(ref_net, "auto")  # the private cache is empty: the export is needed
    with pytest.warns(FallbackWarning, match="export or session failed .RuntimeError: exporter broke"):
        got, _ = auto(x)
    with torch.no_grad():
        torch.testing.assert_close(got, ref_net(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="exporter broke"):
        inc.with_backend(ref_net, "onnxruntime")(x)


@pytest.fixture
def fresh_fallbacks():
    from fastgan import fallback

    fallback.reset()
    yield
    fallback.reset()
