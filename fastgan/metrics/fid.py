"""Frechet distance: streaming float64 statistics and Tr sqrt(S1 S2) on a symmetric form.

The chain: features -> ``features_to_stats`` (or ``StatsAccumulator``) -> ``Stats`` ->
``stats_to_fid``. FID = |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2). The trace term
never takes sqrtm of the non-symmetric product (slow, and it fails on singular input):
with S1 = L L^T it is the sum of square roots of the eigenvalues of L^T S2 L, or of
sqrt(S1) S2 sqrt(S1) when S1 is singular; with n < d samples, of the n x n matrices
A S2 A^T or (A B^T)(A B^T)^T, A and B the centred features over sqrt(n - 1).

``trace_sqrt(s1, s2, impl="auto")``: ``native`` (csrc/, LAPACK), ``numpy`` or ``torch``
(the reference; float64 on the GPU when one is present). ``auto`` takes torch on a GPU,
else native, else numpy with one warning.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastgan.engine import runfolder
from fastgan.errors import FastganError
from fastgan.fallback import warn_once

try:
    from fastgan.metrics import _trace_sqrt as _native
except ImportError:  # built without LAPACK (see CMakeLists.txt)
    _native = None

FID = "fid"  # result key
IMPLS = ("auto", "native", "numpy", "torch")


@dataclass
class Stats:
    """Mean and covariance (float64) of ``n`` feature vectors; ``features`` keeps the raw vectors
    when n <= d, where the covariance is singular and the exact n x n form needs them."""

    mu: np.ndarray  # (d,)
    sigma: np.ndarray  # (d, d), unbiased (n - 1)
    n: int  # sample count; 0 = unknown (a stats file that does not say)
    features: np.ndarray | None = None  # (n, d) float64, only when n <= d

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def centered(self) -> np.ndarray | None:
        """A with A^T A = sigma: the centred features over sqrt(n - 1), or None without features."""
        if self.features is None:
            return None
        return (self.features - self.mu) / np.sqrt(self.n - 1)


class StatsAccumulator:
    """Streaming mean and covariance in float64. Sums are taken around the first vector (a shift
    that avoids cancellation in E[xx^T] - mu mu^T) and do not depend on how batches split."""

    def __init__(self) -> None:
        self.n = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None
        self._kept: list[torch.Tensor] | None = []

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        x = torch.as_tensor(feats).detach().to(torch.float64)
        if x.dim() != 2:
            raise FastganError(f"features must be (batch, dim), got shape {tuple(x.shape)}")
        if len(x) == 0:
            return
        if self._shift is None:
            d = x.shape[1]
            self._shift = x[0].clone()
            self._sum = x.new_zeros(d)
            self._outer = x.new_zeros(d, d)
        elif x.shape[1] != self._shift.shape[0]:
            raise FastganError(f"feature size changed from {self._shift.shape[0]} to {x.shape[1]} within one set")
        xc = x - self._shift
        self._sum += xc.sum(0)
        self._outer.addmm_(xc.T, xc)
        self.n += len(x)
        if self._kept is not None:
            self._kept.append(x.cpu())
            if self.n > x.shape[1]:
                self._kept = None  # enough samples for a full-rank covariance: no need for them

    def all_reduce(self) -> None:
        """Combine with the accumulators of the other ranks of the torch.distributed group (a no-op without one):
        afterwards every rank holds the statistics of all ranks' features. The float64 sums (count, sum, sum of
        outer products) are moved to one common shift (the first rank's that saw features) and all-reduced;
        kept features, needed only while n <= d, are gathered in rank order."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        shifts: list = [None] * world
        dist.all_gather_object(shifts, None if self._shift is None else self._shift.cpu())
        seen = [s for s in shifts if s is not None]
        if not seen:
            return
        shift = seen[0]
        d = shift.shape[0]
        if self._shift is None:  # this rank saw nothing: zero sums around the common shift
            n, s, o = 0, torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64)
        else:
            if self._shift.shape[0] != d:
                raise FastganError(f"feature size {self._shift.shape[0]} on rank {dist.get_rank()}, {d} on another")
            shift = shift.to(self._shift.device)
            delta = self._shift - shift  # x - shift = (x - own shift) + delta
            n, s, o = self.n, self._sum, self._outer
            o = o + torch.outer(s, delta) + torch.outer(delta, s) + n * torch.outer(delta, delta)
            s = s + n * delta
        dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else s.device
        flat = torch.cat([torch.tensor([float(n)], dtype=torch.float64), s.cpu(), o.cpu().reshape(-1)]).to(dev)
        dist.all_reduce(flat)
        here = self._shift.device if self._shift is not None else torch.device("cpu")
        flat = flat.to(here)
        kept: list = [None] * world
        dist.all_gather_object(kept, None if self._kept is None else [k.cpu() for k in self._kept])
        self.n = round(float(flat[0]))
        self._shift = shift.to(here)
        self._sum, self._outer = flat[1 : d + 1].clone(), flat[d + 1 :].reshape(d, d).clone()
        self._kept = None if any(k is None for k in kept) or self.n > d else [t for k in kept for t in k]

    def result(self) -> Stats:
        if self.n < 2:
            raise FastganError(f"FID statistics need at least 2 images, got {self.n}")
        mean_c = self._sum / self.n
        cov = (self._outer - self.n * torch.outer(mean_c, mean_c)) / (self.n - 1)
        cov = (cov + cov.T) / 2  # exact symmetry for the solvers
        feats = torch.cat(self._kept).numpy() if self._kept is not None else None
        return Stats((self._shift + mean_c).cpu().numpy(), cov.cpu().numpy(), self.n, feats)


def features_to_stats(batches: Iterable[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray) -> Stats:
    """Stats of a (N, d) array or of an iterable of (B, d) batches (same result either way)."""
    acc = StatsAccumulator()
    if isinstance(batches, (torch.Tensor, np.ndarray)):
        batches = [batches]
    for b in batches:
        acc.update(b)
    return acc.result()


# -- Tr sqrt(S1 S2), written once for numpy and torch (their linalg APIs agree here) -------------

def _sum_sqrt(xp: Any, w) -> float:
    """Eigenvalues below the rank tolerance (n eps max) are rounding noise of exact zeros."""
    if len(w) == 0:
        return 0.0
    tol = len(w) * np.finfo(np.float64).eps * float(abs(w).max())
    return float(xp.sqrt(w[w > tol]).sum())


def _eig_form(xp: Any, s1, s2) -> float:
    w, v = xp.linalg.eigh(s1)
    keep = w > len(w) * np.finfo(np.float64).eps * float(abs(w).max())
    wv = v[:, keep] * xp.sqrt(w[keep])  # W with W W^T = S1; W^T S2 W ~ sqrt(S1) S2 sqrt(S1)
    return _sum_sqrt(xp, xp.linalg.eigvalsh(wv.T @ s2 @ wv))


def _cholesky(xp: Any, s):
    if xp is torch:
        L, info = torch.linalg.cholesky_ex(s)
        return L if int(info) == 0 else None
    try:
        return np.linalg.cholesky(s)
    except np.linalg.LinAlgError:
        return None


def _product(xp: Any, s1, s2, method: str = "auto") -> float:
    L = _cholesky(xp, s1) if method == "auto" else None
    if L is None:
        return _eig_form(xp, s1, s2)
    c = L.T @ s2 @ L
    return _sum_sqrt(xp, xp.linalg.eigvalsh((c + c.T) / 2))


def _lowrank(xp: Any, a, s2) -> float:
    c = a @ s2 @ a.T
    return _sum_sqrt(xp, xp.linalg.eigvalsh((c + c.T) / 2))


def _cross(xp: Any, a, b) -> float:
    m = a @ b.T
    return _sum_sqrt(xp, xp.linalg.eigvalsh(m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m))


def resolve_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise FastganError(f"unknown trace-sqrt impl '{impl}': choose one of {', '.join(IMPLS)}")
    if impl == "native" and _native is None:
        raise FastganError("the native FID extension is not built: install LAPACK (apt-get install libopenblas-dev) "
                           "and reinstall fastgan, or use impl='numpy'")
    if impl != "auto":
        return impl
    if torch.cuda.is_available():
        return "torch"
    if _native is not None:
        return "native"
    warn_once("fid.trace_sqrt (native)", "the C++ extension is not built (no LAPACK at install time), so numpy "
              "computes it, slower: install libopenblas-dev and reinstall fastgan to build it")
    return "numpy"


def _run(impl: str, form: str, *args: np.ndarray, method: str = "auto") -> float:
    impl = resolve_impl(impl)
    if impl == "native":
        fn = {"product": _native.trace_sqrt_product, "lowrank": _native.trace_sqrt_lowrank,
              "cross": _native.trace_sqrt_cross}[form]
        return float(fn(*args, method) if form == "product" else fn(*args))
    if impl == "torch":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        args = tuple(torch.as_tensor(a, dtype=torch.float64, device=dev) for a in args)
        xp = torch
    else:
        xp = np
    fn = {"product": _product, "lowrank": _lowrank, "cross": _cross}[form]
    return fn(xp, *args, method) if form == "product" else fn(xp, *args)


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, impl: str = "auto", method: str = "auto") -> float:
    """Tr sqrt(S1 S2) of two covariances. ``method="eig"`` skips the Cholesky attempt."""
    return _run(impl, "product", np.asarray(s1, np.float64), np.asarray(s2, np.float64), method=method)


def trace_sqrt(s1: Stats, s2: Stats, impl: str = "auto") -> float:
    """Tr sqrt(S1 S2), in the n x n form when a side kept its features (n <= d)."""
    a, b = s1.centered(), s2.centered()
    if a is not None and b is not None:
        return _run(impl, "cross", a, b)
    if a is not None:
        return _run(impl, "lowrank", a, s2.sigma)
    if b is not None:  # Tr sqrt(S1 S2) = Tr sqrt(S2 S1)
        return _run(impl, "lowrank", b, s1.sigma)
    return trace_sqrt_product(s1.sigma, s2.sigma, impl)


def stats_to_fid(s1: Stats, s2: Stats, impl: str = "auto") -> float:
    if s1.dim != s2.dim:
        raise FastganError(
            f"the two statistics have different feature sizes ({s1.dim} vs {s2.dim}): compute both with the same "
            "network and layer"
        )
    diff = s1.mu - s2.mu
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named below, not warned about
        value = float(diff @ diff + np.trace(s1.sigma) + np.trace(s2.sigma) - 2.0 * trace_sqrt(s1, s2, impl))
    if not np.isfinite(value):  # never printed as NaN (invalid JSON) or as a number that means nothing
        raise FastganError(f"the FID came out {value} (the statistics hold values too large for float64): check that "
                           "both sides are FID statistics or images")
    return max(value, 0.0)  # a true distance; only rounding could push it below 0


def native_available() -> bool:
    return _native is not None


# -- pytorch-fid compatible .npz files (mu, sigma; fastgan adds n and, when n <= d, the features) --

def save_stats(path: str | Path, stats: Stats) -> None:
    arrays: dict[str, Any] = {"mu": stats.mu, "sigma": stats.sigma, "n": np.int64(stats.n)}
    if stats.features is not None:
        arrays["features"] = stats.features
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # to a buffer: np.savez would add .npz to a path without it
    runfolder.write_atomic(Path(path), buf.getbuffer())  # an existing file survives a full disk


def _unreadable(p: Path, why: str) -> FastganError:
    return FastganError(f"{p} is not a readable statistics file ({why}): write one with "
                        "`fastgan fid SOURCE --save-stats PATH` (or pytorch-fid --save-stats)")


# What a damaged, cut or foreign .npz raises while it is opened or a member is read (bad CRC, cut zip, empty file,
# a bare .npy under an .npz name, a header that claims more than memory).
_DAMAGED = (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, MemoryError,
            NotImplementedError)


def _real_array(p: Path, name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "fiu":  # bool, complex, strings, objects: not statistics
        raise FastganError(f"{p}: '{name}' holds {a.dtype} values, not real numbers: not an FID statistics file; "
                           "write one with `fastgan fid SOURCE --save-stats PATH`")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise FastganError(f"{p}: '{name}' holds NaN or infinite values: the statistics are damaged; recompute them "
                           "with `fastgan fid SOURCE --save-stats PATH`")
    return a


def check_stats(p: Path | str, st: Stats) -> None:
    """A covariance must be symmetric and positive semi-definite, ``n`` (when stored) at least 2, and stored
    features must be the ones mu and sigma were computed from (within rounding, float32 files included)."""
    fix = "recompute them with `fastgan fid SOURCE --save-stats PATH`"
    scale = float(np.abs(st.sigma).max(initial=0.0))
    if float(np.abs(st.sigma - st.sigma.T).max(initial=0.0)) > 1e-5 * scale:
        raise FastganError(f"{p}: sigma is not symmetric, so it is not a covariance: {fix}")
    w = np.linalg.eigvalsh((st.sigma + st.sigma.T) / 2)
    if len(w) and w.min() < -1e-4 * max(float(np.abs(w).max()), 1e-300):
        raise FastganError(f"{p}: sigma has a negative eigenvalue ({w.min():.3g}), so it is not a covariance: {fix}")
    if st.n < 0 or st.n == 1:
        raise FastganError(f"{p}: n = {st.n} images, but a covariance needs at least 2: {fix}")
    if st.features is not None:
        f = st.features
        tol = 1e-5 * max(float(np.abs(f).max(initial=0.0)), 1e-12)
        if float(np.abs(f.mean(0) - st.mu).max(initial=0.0)) > tol:
            raise FastganError(f"{p}: the stored features do not average to mu: the file mixes two statistics; {fix}")
        c = f - st.mu
        cov = c.T @ c / (st.n - 1)
        if float(np.abs(cov - st.sigma).max(initial=0.0)) > 1e-4 * max(float(np.abs(cov).max(initial=0.0)), 1e-300):
            raise FastganError(f"{p}: the stored features do not give sigma: the file mixes two statistics; {fix}")


def load_stats(path: str | Path) -> Stats:
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except _DAMAGED as e:
        raise _unreadable(p, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array under an .npz name
        raise _unreadable(p, "a single .npy array, not an .npz archive of mu and sigma")
    with z:
        if "mu" not in z.files or "sigma" not in z.files:
            raise FastganError(
                f"{p} has no 'mu' and 'sigma' arrays (it holds {', '.join(z.files) or 'nothing'}): not an FID "
                "statistics file; write one with `fastgan fid SOURCE --save-stats PATH` or pytorch-fid --save-stats"
            )
        try:
            raw = {k: np.asarray(z[k]) for k in ("mu", "sigma", "n", "features") if k in z.files}
        except _DAMAGED as e:  # object arrays (pickles) are refused, never loaded; bad CRC, cut members
            why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]}"
            if isinstance(e, (ValueError, TypeError)):
                raise FastganError(f"{p} does not hold numeric mu and sigma arrays ({why}): write statistics with "
                                   "`fastgan fid SOURCE --save-stats PATH`") from None
            raise _unreadable(p, why) from None
    mu, sigma = _real_array(p, "mu", raw["mu"]), _real_array(p, "sigma", raw["sigma"])
    feats = _real_array(p, "features", raw["features"]) if "features" in raw else None
    n = 0
    if "n" in raw:
        if raw["n"].dtype.kind not in "iu" or raw["n"].size != 1:
            raise FastganError(f"{p}: 'n' must be one integer (the image count), got {raw['n'].dtype} of shape "
                               f"{raw['n'].shape}: write statistics with `fastgan fid SOURCE --save-stats PATH`")
        n = int(raw["n"].reshape(-1)[0])
    d = mu.shape[0] if mu.ndim == 1 else -1
    if d < 1 or sigma.shape != (d, d) or (feats is not None and feats.shape != (n, d)):
        got = f" and features of shape {feats.shape} for n = {n}" if feats is not None else ""
        raise FastganError(f"{p} holds mu of shape {mu.shape} and sigma of shape {sigma.shape}{got}: expected (d,) "
                           "and (d, d) (and features (n, d))")
    st = Stats(mu, sigma, n, feats)
    check_stats(p, st)
    return st
