"""FID against the pytorch-fid formula (scipy sqrtm of the product), every impl and form."""

from __future__ import annotations

import ctypes.util
import functools
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from fastgan import fallback
from fastgan.errors import FastganError
from fastgan.fallback import FallbackWarning
from fastgan.metrics import fid as fid_mod
from fastgan.metrics.fid import Stats, features_to_stats, load_stats, save_stats, stats_to_fid, trace_sqrt_product

IMPLS = ["native", "numpy", "torch"]


def pytorch_fid_formula(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, written out here as the reference."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products warn; pytorch-fid passes disp=False
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_features(rng, n, d, shift=0.0):
    """Correlated, anisotropic features like a network's (a random mixing of scaled sources)."""
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    scale = np.exp(rng.uniform(-2, 1, d))
    return (rng.standard_normal((n, d)) * scale) @ mix + shift


def make_pair(d, n1, n2, seed=0):
    rng = np.random.default_rng(seed)
    f1, f2 = random_features(rng, n1, d), random_features(rng, n2, d, shift=0.1)
    return features_to_stats(f1), features_to_stats(f2)


@functools.cache
def pair_and_reference(d, n1, n2, seed=0):
    """Statistics and their pytorch-fid value, computed once per case (sqrtm is the slow part)."""
    s1, s2 = make_pair(d, n1, n2, seed)
    return s1, s2, pytorch_fid_formula(s1.mu, s1.sigma, s2.mu, s2.sigma)


def with_covariances_only(s: Stats) -> Stats:
    return Stats(s.mu, s.sigma, s.n, None)


SLOW_SQRTM = pytest.mark.slow  # scipy's sqrtm of the reference takes seconds at d = 512 with many samples
CASES = [  # (d, n1, n2): full rank, and singular (n < d) on one or both sides
    (64, 400, 300),
    (64, 40, 50),
    pytest.param(512, 1500, 1200, marks=SLOW_SQRTM),
    pytest.param(512, 100, 2000, marks=SLOW_SQRTM),
    (512, 90, 120),
]


@pytest.mark.parametrize("d,n1,n2", CASES)
@pytest.mark.parametrize("impl", IMPLS)
def test_fid_matches_pytorch_fid_formula(d, n1, n2, impl):
    s1, s2, ref = pair_and_reference(d, n1, n2)
    assert (s1.features is not None) == (n1 <= d)
    got = stats_to_fid(s1, s2, impl)  # low-rank form where a side has n <= d
    assert got == pytest.approx(ref, rel=1e-6)
    full = stats_to_fid(with_covariances_only(s1), with_covariances_only(s2), impl)  # d x d form (eig fallback)
    assert full == pytest.approx(ref, rel=1e-6)


@pytest.mark.slow  # the reference sqrtm at d = 2048 alone takes most of a minute
@pytest.mark.parametrize("impl", ["native", "torch"])  # numpy shares torch's code (tested at 64 and 512)
def test_fid_2048_every_form(impl):
    """d = 2048, S1 singular (n1 = 1000 < d), S2 full rank: one sqrtm serves every form."""
    s1, s2, ref = pair_and_reference(2048, 1000, 2600, seed=1)
    c1, c2 = with_covariances_only(s1), with_covariances_only(s2)
    assert stats_to_fid(s1, s2, impl) == pytest.approx(ref, rel=1e-6)  # n x n low-rank form
    assert stats_to_fid(c1, c2, impl) == pytest.approx(ref, rel=1e-6)  # S1 singular: eigendecomposition
    assert stats_to_fid(c2, c1, impl) == pytest.approx(ref, rel=1e-6)  # S2 first: Cholesky succeeds


@pytest.mark.parametrize("impl", IMPLS)
def test_cholesky_and_eig_forms_agree(impl):
    s1, s2 = make_pair(64, 500, 400, seed=3)
    a = trace_sqrt_product(s1.sigma, s2.sigma, impl)
    b = trace_sqrt_product(s1.sigma, s2.sigma, impl, method="eig")
    ref = np.trace(scipy.linalg.sqrtm(s1.sigma @ s2.sigma)).real
    assert a == pytest.approx(ref, rel=1e-10) and b == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_cross_form_when_both_sides_low_rank(impl):
    s1, s2 = make_pair(256, 30, 70, seed=4)
    exact = np.linalg.svd(s1.centered() @ s2.centered().T, compute_uv=False).sum()  # nuclear norm of A B^T
    assert fid_mod.trace_sqrt(s1, s2, impl) == pytest.approx(exact, rel=1e-9)


def test_identical_statistics_give_zero():
    s1, _ = make_pair(64, 300, 300)
    assert stats_to_fid(s1, s1) == pytest.approx(0.0, abs=1e-8)


def test_statistics_do_not_depend_on_batch_size():
    feats = torch.from_numpy(random_features(np.random.default_rng(5), 300, 2048)).float()
    ref = features_to_stats(feats)
    for bs in (1, 7, 100):
        s = features_to_stats(feats.split(bs))
        assert s.n == 300
        np.testing.assert_allclose(s.mu, ref.mu, rtol=0, atol=1e-10)
        np.testing.assert_allclose(s.sigma, ref.sigma, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(s.features, ref.features)  # n < d: kept for the low-rank form
    np.testing.assert_allclose(ref.sigma, np.cov(feats.double().numpy(), rowvar=False), rtol=0, atol=1e-10)


def test_features_kept_only_while_n_at_most_d():
    rng = np.random.default_rng(6)
    small = features_to_stats(rng.standard_normal((10, 16)))
    big = features_to_stats([rng.standard_normal((10, 16)), rng.standard_normal((10, 16))])
    assert small.features is not None and small.features.shape == (10, 16)
    assert big.features is None


def test_stats_file_roundtrip_is_pytorch_fid_compatible(tmp_path):
    s1, s2 = make_pair(64, 40, 500)
    save_stats(tmp_path / "a.npz", s1)
    with np.load(tmp_path / "a.npz") as z:  # what pytorch-fid reads
        np.testing.assert_array_equal(z["mu"], s1.mu)
        np.testing.assert_array_equal(z["sigma"], s1.sigma)
    back = load_stats(tmp_path / "a.npz")
    assert back.n == 40 and stats_to_fid(back, s2) == stats_to_fid(s1, s2)
    np.savez(tmp_path / "foreign.npz", mu=s1.mu, sigma=s1.sigma)  # a pytorch-fid file: no n, no features
    foreign = load_stats(tmp_path / "foreign.npz")
    assert foreign.n == 0 and stats_to_fid(foreign, s2) == pytest.approx(stats_to_fid(s1, s2), rel=1e-9)


def test_bad_stats_files(tmp_path):
    np.savez(tmp_path / "x.npz", images=np.zeros(3))
    with pytest.raises(FastganError, match="no 'mu' and 'sigma'"):
        load_stats(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", mu=np.zeros(4), sigma=np.zeros((3, 3)))
    with pytest.raises(FastganError, match="expected"):
        load_stats(tmp_path / "y.npz")
    (tmp_path / "z.npz").write_bytes(b"not a zip")
    with pytest.raises(FastganError, match="not a readable"):
        load_stats(tmp_path / "z.npz")


def test_mismatched_dims_and_too_few_samples():
    a, _ = make_pair(64, 100, 100)
    b, _ = make_pair(32, 100, 100)
    with pytest.raises(FastganError, match="different feature sizes"):
        stats_to_fid(a, b)
    with pytest.raises(FastganError, match="at least 2"):
        features_to_stats(np.zeros((1, 8)))


def test_missing_extension_warns_once_and_falls_back(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("auto picks the torch GPU path when a GPU is present (no fallback warning)")
    s1, s2 = make_pair(64, 300, 300)
    want = stats_to_fid(s1, s2, "numpy")
    monkeypatch.setattr(fid_mod, "_native", None)
    fallback.reset()
    with pytest.warns(FallbackWarning, match=r"fid.trace_sqrt \(native\) falls back: the C\+\+ extension is not built"):
        assert stats_to_fid(s1, s2) == want
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats_to_fid(s1, s2) == want  # no second warning
    with pytest.raises(FastganError, match="not built"):
        stats_to_fid(s1, s2, "native")


def test_native_extension_is_built():
    """The normal editable install builds csrc/ (CI installs LAPACK); auto uses it on CPU. Without LAPACK the
    package installs without it by design (CMakeLists.txt) and the numpy fallback above is what runs."""
    if not fid_mod.native_available() and not any(map(ctypes.util.find_library, ("lapack", "openblas"))):
        pytest.skip("no LAPACK on this machine, so the native FID extension is not built (documented fallback: numpy)")
    assert fid_mod.native_available()
    if not torch.cuda.is_available():
        assert fid_mod.resolve_impl("auto") == "native"
