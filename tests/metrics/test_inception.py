"""The FID Inception: features against an independent float64 forward, weights checks, and the
golden FID between MNIST and Fashion-MNIST."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import torch
import torch.nn.functional as F

from fastgan.config import DataConfig
from fastgan.data import load_dataset
from fastgan.errors import FastganError
from fastgan.metrics import inception as inc
from fastgan.metrics.features import extract, uint8_batches
from fastgan.metrics.fid import stats_to_fid


@pytest.fixture(scope="module")
def npz_path(data_dir):
    return data_dir / "inception" / inc.NPZ_NAME


@pytest.fixture(scope="module")
def net(npz_path):
    return inc.load_inception(npz_path)


# -- an independent forward: the TF graph read straight off the state dict, in float64 ---------

VALID = {  # convolutions without padding (TF "VALID"); every other one pads to keep the size
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_4a_3x3", "Mixed_6a.branch3x3", "Mixed_6a.branch3x3dbl_3",
    "Mixed_7a.branch3x3_2", "Mixed_7a.branch7x7x3_4",
}
STRIDE2 = {"Conv2d_1a_3x3", "Mixed_6a.branch3x3", "Mixed_6a.branch3x3dbl_3", "Mixed_7a.branch3x3_2",
           "Mixed_7a.branch7x7x3_4"}


def ref_conv(sd, name, x):
    w = sd[f"{name}.conv.weight"]
    kh, kw = w.shape[-2:]
    pad = (0, 0) if name in VALID else (kh // 2, kw // 2)
    y = F.conv2d(x, w, stride=2 if name in STRIDE2 else 1, padding=pad)
    g, b, m, v = (sd[f"{name}.bn.{k}"][:, None, None] for k in ("weight", "bias", "running_mean", "running_var"))
    return torch.relu((y - m) / torch.sqrt(v + 1e-3) * g + b)


def ref_chain(sd, block, names, x):
    for n in names:
        x = ref_conv(sd, f"{block}.{n}", x)
    return x


def ref_avgpool(x):  # TF average pooling: padded cells do not count
    ones = torch.ones_like(x[:, :1])
    return F.avg_pool2d(x, 3, 1, 1) / F.avg_pool2d(ones, 3, 1, 1)


def ref_forward(sd, x):
    x = F.interpolate(x.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear", align_corners=False)
    for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
        x = ref_conv(sd, n, x)
    x = F.max_pool2d(x, 3, 2)
    x = F.max_pool2d(ref_conv(sd, "Conv2d_4a_3x3", ref_conv(sd, "Conv2d_3b_1x1", x)), 3, 2)
    for b in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = torch.cat([ref_conv(sd, f"{b}.branch1x1", x), ref_chain(sd, b, ["branch5x5_1", "branch5x5_2"], x),
                       ref_chain(sd, b, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
                       ref_conv(sd, f"{b}.branch_pool", ref_avgpool(x))], 1)
    x = torch.cat([ref_conv(sd, "Mixed_6a.branch3x3", x),
                   ref_chain(sd, "Mixed_6a", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
                   F.max_pool2d(x, 3, 2)], 1)
    for b in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = torch.cat([ref_conv(sd, f"{b}.branch1x1", x),
                       ref_chain(sd, b, [f"branch7x7_{i}" for i in (1, 2, 3)], x),
                       ref_chain(sd, b, [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)], x),
                       ref_conv(sd, f"{b}.branch_pool", ref_avgpool(x))], 1)
    x = torch.cat([ref_chain(sd, "Mixed_7a", ["branch3x3_1", "branch3x3_2"], x),
                   ref_chain(sd, "Mixed_7a", [f"branch7x7x3_{i}" for i in (1, 2, 3, 4)], x),
                   F.max_pool2d(x, 3, 2)], 1)
    for b, pool in (("Mixed_7b", ref_avgpool), ("Mixed_7c", lambda t: F.max_pool2d(t, 3, 1, 1))):
        h3 = ref_conv(sd, f"{b}.branch3x3_1", x)
        hd = ref_chain(sd, b, ["branch3x3dbl_1", "branch3x3dbl_2"], x)
        x = torch.cat([ref_conv(sd, f"{b}.branch1x1", x),
                       ref_conv(sd, f"{b}.branch3x3_2a", h3), ref_conv(sd, f"{b}.branch3x3_2b", h3),
                       ref_conv(sd, f"{b}.branch3x3dbl_3a", hd), ref_conv(sd, f"{b}.branch3x3dbl_3b", hd),
                       ref_conv(sd, f"{b}.branch_pool", pool(x))], 1)
    return x.mean((2, 3))


def test_features_match_independent_float64_forward(net, npz_path):
    import numpy as np

    with np.load(npz_path) as z:
        sd = {k: torch.from_numpy(z[k]).double() for k in z.files}
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        got, _ = net(x)
        ref = ref_forward(sd, x.double())
    assert got.shape == (2, 2048) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
    assert ref.abs().mean() > 0.1  # real activations, not a degenerate all-zero comparison


def test_smaller_feature_layers(npz_path):
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for d in (64, 192, 768):
            f, _ = inc.load_inception(npz_path, dim=d)(x)
            assert f.shape == (1, d) and torch.isfinite(f).all()
    with pytest.raises(FastganError, match="does not exist"):
        inc.FIDInception(100)


def test_loading_leaves_global_rng_alone(npz_path):
    before = torch.get_rng_state()
    inc.load_inception(npz_path)
    assert torch.equal(before, torch.get_rng_state())


def test_no_fc_refuses_inception_score(net):
    assert not net.has_fc
    with pytest.raises(FastganError, match="no fc layer, so no Inception Score"):
        net(torch.zeros(1, 1, 8, 8), logits=True)


def test_logits_are_fc_without_bias(npz_path):
    net = inc.load_inception(npz_path)
    net.fc = torch.nn.Linear(2048, 1008)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        f, lg = net(x, logits=True)
    torch.testing.assert_close(lg, f @ net.fc.weight.T)


def test_wrong_checksum_and_missing_file(tmp_path):
    bad = tmp_path / inc.PTH_NAME
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(FastganError, match="has sha256 .* damaged or a different network"):
        inc.load_inception(bad)
    with pytest.raises(FastganError, match="does not exist"):
        inc.load_inception(tmp_path / "nope.pth")


def test_search_order_and_offline_message(tmp_path, monkeypatch, npz_path):
    monkeypatch.setenv("FASTGAN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FastganError, match=f"put {inc.PTH_NAME} .* in {tmp_path / 'cache' / 'inception'}"):
        inc.find_weights()
    (tmp_path / "data" / "inception").mkdir(parents=True)
    (tmp_path / "data" / "inception" / inc.NPZ_NAME).symlink_to(npz_path)
    assert inc.find_weights() == tmp_path / "data" / "inception" / inc.NPZ_NAME


# -- golden value ------------------------------------------------------------------------------

GOLDEN_N = 1000  # images per side (~2 minutes of Inception on an idle 2-core CPU: the bulk of this suite)
GOLDEN_FID = 193.534503  # from `fastgan fid mnist:test fashion-mnist:test --samples 1000` (batch 250, native)
# A cheaper pin if the suite budget tightens: --samples 100 gives 234.225338.


@pytest.mark.slow  # 2000 Inception forwards: minutes on a CPU (the quick lane checks the network against float64)
def test_golden_fid_mnist_vs_fashion(net, data_dir):
    """FID(first 1000 MNIST test, first 1000 Fashion-MNIST test): uint8 -> [-1, 1] -> 299 bilinear -> pool3
    -> float64 statistics -> low-rank trace-sqrt (n < d). Computed once through the CLI and pinned; here
    with another batch size, so the fp32 network's batch-dependent rounding stays inside the tolerance.
    """
    torch.set_num_threads(torch.get_num_threads())  # all cores (the default); fp32 on CPU
    stats = []
    for name, folder in (("mnist", "mnist"), ("fashion-mnist", "fashion_mnist")):
        ds = load_dataset(DataConfig(dataset=name, root=str(data_dir / folder), split="test"))
        out = extract({"n": (net, False)}, uint8_batches(ds.images[:GOLDEN_N], 100), torch.device("cpu"), quiet=True)
        stats.append(out["n"][0])
    value = stats_to_fid(*stats)
    print(f"golden FID at N={GOLDEN_N}: {value:.6f}")
    assert value == pytest.approx(GOLDEN_FID, rel=1e-4)
