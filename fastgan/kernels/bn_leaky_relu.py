"""BatchNorm + LeakyReLU as one op (``negative_slope=0`` gives BN + ReLU): reference, Triton path, dispatch.

Training: per-channel batch statistics, then normalise, affine and activation in one pass over the
output; the running statistics move by the module's momentum in one foreach lerp after the op (a custom
op with autograd may not mutate its inputs). Eval: the running statistics. Backward: dx, dweight, dbias
from one reduction pass and one elementwise pass (z is recomputed, y is not kept).

Differentiability: first order only. The backward is a custom op without a derivative of its own, so a
second backward through it raises. DCGAN needs no more: the WGAN-GP critic, the one double-backward
user, has no BatchNorm. tests/kernels/test_bn_leaky_relu.py proves both.

Layouts: NCHW-contiguous and channels-last are read in place and the output keeps the input's layout;
any other layout is copied to contiguous first. Inputs fp32, bf16, fp16 (statistics and arithmetic in
fp32) or fp64 (all fp64, for gradcheck); weight, bias and running statistics keep their own dtype.

torch.compile sees one op per call: torch.library custom ops with fake functions and autograd. Custom ops
that launch Triton rather than ``torch.library.triton_op``: triton_op traces its body with fake tensors,
which interpreter-mode kernels (``TRITON_INTERPRET=1``, the CPU tests) cannot run, so only a custom op
works on both the CPU interpreter and the GPU. Launches use the current stream and allocate through the
caching allocator with no host sync, so the ops can sit inside a captured CUDA graph (checked by a
GPU-only test, tests/kernels/test_bn_leaky_relu.py::test_cuda_graph_capture).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fastgan.kernels.runtime import acc_dtype, cdiv, jit, next_pow2, num_programs_target, tl, use_triton

Tensor = torch.Tensor

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
TILE_ELEMS = 2048  # elements per reduction tile: two fp32 accumulators of this size fit 4 warps' registers
MIN_ROWS = 64  # rows per reduction program at least: the fp32 column partials stay a few % of the traffic
BLOCK = 1024  # elements per program of the elementwise kernels


def bn_leaky_relu_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.0,
) -> Tensor:
    """``F.batch_norm`` then ``F.leaky_relu``: the reference, any order of gradient."""
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return F.leaky_relu(y, negative_slope)


# ---------------------------------------------------------------------------------------------- kernels
# Both layouts are a matrix of R rows x K contiguous columns whose column k holds channel k // inner:
# NCHW is (N, C*HW) with inner = HW, channels-last is (N*HW, C) with inner = 1.
# The per-channel statistics are one (STAT_ROWS, C) tensor; the kernels get its rows as named pointers
# (``StatRows``), the column partial sums of the reduction likewise (``part_a``, ``part_b``).


@jit
def _reduce_kernel(
    x_ptr,  # (R, K) the input as the matrix above
    dy_ptr,  # (R, K) gradient at the activation's output (backward; the forward passes x_ptr)
    mean_ptr,  # (C,) stats rows, read by the backward only
    invstd_ptr,  # (C,)
    scale_ptr,  # (C,) weight * invstd
    shift_ptr,  # (C,) bias
    part_a_ptr,  # (n_split, K) out: per-column sums of x - pivot (forward) or dz (backward)
    part_b_ptr,  # (n_split, K) out: per-column sums of (x - pivot)^2 (forward) or dz * xhat (backward)
    R,  # rows
    K,  # columns
    inner,  # columns per channel: HW (NCHW) or 1 (channels-last)
    rows_per_prog,  # rows summed by one program along axis 1 (a multiple of BR)
    slope,  # LeakyReLU negative slope (backward)
    BWD: tl.constexpr,  # the backward's sums instead of the forward's
    BR: tl.constexpr,  # rows per tile
    BK: tl.constexpr,  # columns per tile (and per program along axis 0)
    ACC: tl.constexpr,  # accumulation dtype
):
    """Column sums over one slice of rows (program (column block, split)), stored at row ``split`` of part_a/b.

    Forward sums x - pivot and its square, the pivot being the channel's first element (a shift that
    keeps the one-pass variance accurate); backward sums dz and dz * xhat, dz being the gradient at the
    BatchNorm output. Columns are summed per channel afterwards (``_finalize_kernel``, ``_backward``).
    """
    split = tl.program_id(1)
    kk = tl.program_id(0) * BK + tl.arange(0, BK)
    k_ok = kk < K
    ch = kk // inner
    if BWD:
        mean = tl.load(mean_ptr + ch, mask=k_ok, other=0)[None, :]
        invstd = tl.load(invstd_ptr + ch, mask=k_ok, other=0)[None, :]
        scale = tl.load(scale_ptr + ch, mask=k_ok, other=0)[None, :]
        shift = tl.load(shift_ptr + ch, mask=k_ok, other=0)[None, :]
    else:
        pivot = tl.load(x_ptr + ch * inner, mask=k_ok, other=0).to(ACC)[None, :]
    acc_a = tl.zeros([BR, BK], ACC)
    acc_b = tl.zeros([BR, BK], ACC)
    r_lo = split * rows_per_prog
    for r0 in range(r_lo, r_lo + rows_per_prog, BR):
        rr = r0 + tl.arange(0, BR)
        m = (rr < R)[:, None] & k_ok[None, :]
        off = rr[:, None] * K + kk[None, :]
        x = tl.load(x_ptr + off, mask=m, other=0).to(ACC)
        if BWD:
            dy = tl.load(dy_ptr + off, mask=m, other=0).to(ACC)
            z = (x - mean) * scale + shift
            dz = tl.where(z > 0, dy, dy * slope)
            acc_a += dz
            acc_b += dz * (x - mean) * invstd
        else:
            d = tl.where(m, x - pivot, 0)
            acc_a += d
            acc_b += d * d
    tl.store(part_a_ptr + split * K + kk, tl.sum(acc_a, 0), mask=k_ok)
    tl.store(part_b_ptr + split * K + kk, tl.sum(acc_b, 0), mask=k_ok)


@jit
def _finalize_kernel(
    part_a_ptr,  # (n_split, K) column sums of x - pivot (training)
    part_b_ptr,  # (n_split, K) column sums of (x - pivot)^2 (training)
    x_ptr,  # (R, K) the input, for the pivots (training)
    w_ptr,  # (C,) BatchNorm weight
    b_ptr,  # (C,) BatchNorm bias
    rm_ptr,  # (C,) running mean (eval)
    rv_ptr,  # (C,) running variance (eval)
    mean_ptr,  # (C,) out: the stats rows
    invstd_ptr,  # (C,) out
    var_ptr,  # (C,) out: unbiased variance (what the running variance moves towards)
    scale_ptr,  # (C,) out: weight * invstd
    shift_ptr,  # (C,) out: bias
    C,  # channels
    K,  # columns
    inner,  # columns per channel
    n_split,  # rows of part_a / part_b
    count,  # elements per channel (N*H*W)
    eps,  # BatchNorm epsilon
    TRAINING: tl.constexpr,  # batch statistics (else the running ones)
    BC: tl.constexpr,  # channels per program
    BI: tl.constexpr,  # columns of a channel per step
    ACC: tl.constexpr,  # accumulation dtype
):
    """The stats rows of BC channels per program."""
    c = tl.program_id(0) * BC + tl.arange(0, BC)
    ok = c < C
    if TRAINING:
        s = tl.zeros([BC, BI], ACC)
        q = tl.zeros([BC, BI], ACC)
        for sp in range(n_split):
            for i0 in range(0, inner, BI):
                i = i0 + tl.arange(0, BI)
                m = ok[:, None] & (i < inner)[None, :]
                off = sp * K + c[:, None] * inner + i[None, :]
                s += tl.load(part_a_ptr + off, mask=m, other=0)
                q += tl.load(part_b_ptr + off, mask=m, other=0)
        n = count.to(ACC)
        mu = tl.sum(s, 1) / n
        var = tl.maximum(tl.sum(q, 1) / n - mu * mu, 0.0)
        mean = tl.load(x_ptr + c * inner, mask=ok, other=0).to(ACC) + mu
        var_unbiased = var * n / (n - 1)
    else:
        mean = tl.load(rm_ptr + c, mask=ok, other=0).to(ACC)
        var = tl.load(rv_ptr + c, mask=ok, other=1).to(ACC)
        var_unbiased = var
    invstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + c, mean, mask=ok)
    tl.store(invstd_ptr + c, invstd, mask=ok)
    tl.store(var_ptr + c, var_unbiased, mask=ok)
    tl.store(scale_ptr + c, tl.load(w_ptr + c, mask=ok, other=0).to(ACC) * invstd, mask=ok)
    tl.store(shift_ptr + c, tl.load(b_ptr + c, mask=ok, other=0).to(ACC), mask=ok)


@jit
def _apply_kernel(
    x_ptr,  # (numel,) the input's storage, in order
    y_ptr,  # (numel,) out: same layout
    mean_ptr,  # (C,) stats rows
    scale_ptr,  # (C,)
    shift_ptr,  # (C,)
    numel,  # elements
    C,  # channels
    inner,  # consecutive elements of one channel
    slope,  # LeakyReLU negative slope
    BLOCK: tl.constexpr,  # elements per program
    ACC: tl.constexpr,  # arithmetic dtype
):
    """y = leaky_relu((x - mean) * scale + shift)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    c = (i // inner) % C
    x = tl.load(x_ptr + i, mask=ok, other=0).to(ACC)
    mean = tl.load(mean_ptr + c, mask=ok, other=0)
    z = (x - mean) * tl.load(scale_ptr + c, mask=ok, other=0) + tl.load(shift_ptr + c, mask=ok, other=0)
    tl.store(y_ptr + i, tl.where(z > 0, z, z * slope).to(y_ptr.dtype.element_ty), mask=ok)


@jit
def _dx_kernel(
    x_ptr,  # (numel,) the input's storage
    dy_ptr,  # (numel,) gradient at the output, same strides
    dx_ptr,  # (numel,) out: gradient at the input, same strides
    mean_ptr,  # (C,) stats rows
    invstd_ptr,  # (C,)
    scale_ptr,  # (C,)
    shift_ptr,  # (C,)
    dbias_ptr,  # (C,) sum of dz per channel (training)
    dweight_ptr,  # (C,) sum of dz * xhat per channel (training)
    numel,  # elements
    C,  # channels
    inner,  # consecutive elements of one channel
    count,  # elements per channel
    slope,  # LeakyReLU negative slope
    TRAINING: tl.constexpr,  # batch statistics: their gradient terms too
    BLOCK: tl.constexpr,  # elements per program
    ACC: tl.constexpr,  # arithmetic dtype
):
    """dx = scale * (dz - (dbias + xhat * dweight) / count) in training, scale * dz in eval."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    c = (i // inner) % C
    x = tl.load(x_ptr + i, mask=ok, other=0).to(ACC)
    dy = tl.load(dy_ptr + i, mask=ok, other=0).to(ACC)
    mean = tl.load(mean_ptr + c, mask=ok, other=0)
    scale = tl.load(scale_ptr + c, mask=ok, other=0)
    z = (x - mean) * scale + tl.load(shift_ptr + c, mask=ok, other=0)
    dz = tl.where(z > 0, dy, dy * slope)
    if TRAINING:
        xhat = (x - mean) * tl.load(invstd_ptr + c, mask=ok, other=0)
        dbias = tl.load(dbias_ptr + c, mask=ok, other=0)
        dweight = tl.load(dweight_ptr + c, mask=ok, other=0)
        dz = dz - (dbias + xhat * dweight) / count.to(ACC)
    tl.store(dx_ptr + i, (dz * scale).to(dx_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------ host side
class StatRows(NamedTuple):
    """The rows of the (STAT_ROWS, C) stats tensor the forward returns (and the backward reads)."""

    mean: Tensor
    invstd: Tensor
    var: Tensor  # unbiased: what the running variance moves towards
    scale: Tensor  # weight * invstd
    shift: Tensor  # bias


STAT_ROWS = len(StatRows._fields)


class GradSums(NamedTuple):
    """The rows of the (2, C) per-channel sums the backward returns: bias's and weight's gradients."""

    dbias: Tensor  # sum of dz
    dweight: Tensor  # sum of dz * xhat


class Plan(NamedTuple):
    """The matrix view of ``x`` (see the kernels' comment), its tiles and the split of rows over programs."""

    rows: int  # R
    cols: int  # K
    inner: int  # columns per channel
    split: int  # programs along the rows (axis 1 of the reduction grid)
    rows_per_prog: int  # a multiple of BR
    BR: int  # rows per tile
    BK: int  # columns per tile

    @property
    def grid(self) -> tuple[int, int]:
        return cdiv(self.cols, self.BK), self.split


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _work(x: Tensor) -> Tensor:
    """``x`` when NCHW-contiguous or channels-last (read in place), else a contiguous copy."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _plan(x: Tensor) -> Plan:
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    inner = 1 if (x.dim() == 4 and not x.is_contiguous()) or s == 1 else s  # channels-last, or 1x1 spatial
    rows, cols = (n * s, c) if inner == 1 else (n, c * s)
    bk = min(next_pow2(cols), 1024)
    br = min(max(TILE_ELEMS // bk, 1), next_pow2(rows))
    split = max(1, min(cdiv(num_programs_target(x.device), cdiv(cols, bk)), cdiv(rows, max(br, MIN_ROWS))))
    rows_per_prog = cdiv(cdiv(rows, split), br) * br
    return Plan(rows, cols, inner, cdiv(rows, rows_per_prog), rows_per_prog, br, bk)


def _forward(x, weight, bias, running_mean, running_var, training: bool, eps: float, slope: float):
    xw = _work(x)
    c, numel = x.shape[1], xw.numel()
    acc = acc_dtype(x.dtype)
    p = _plan(xw)
    stats = torch.empty(STAT_ROWS, c, device=x.device, dtype=_stat_dtype(x.dtype))
    st = StatRows(*stats)
    part = stats.new_empty((2, p.split, p.cols)) if training else stats[:2]  # eval: never read
    if training:
        _reduce_kernel[p.grid](xw, xw, st.mean, st.invstd, st.scale, st.shift, part[0], part[1], p.rows, p.cols,
                               p.inner, p.rows_per_prog, 0.0, BWD=False, BR=p.BR, BK=p.BK, ACC=acc)
    bi = min(next_pow2(p.inner), 1024)
    bc = min(next_pow2(c), max(TILE_ELEMS // bi, 1))
    _finalize_kernel[(cdiv(c, bc),)](
        part[0], part[1], xw, weight, bias, running_mean if running_mean is not None else st.mean,
        running_var if running_var is not None else st.var, *st, c, p.cols, p.inner, p.split, numel // c, eps,
        TRAINING=training, BC=bc, BI=bi, ACC=acc)
    y = torch.empty_like(xw)
    _apply_kernel[(cdiv(numel, BLOCK),)](xw, y, st.mean, st.scale, st.shift, numel, c, p.inner, slope,
                                         BLOCK=BLOCK, ACC=acc)
    return y, stats


def _backward(dy, x, stats, training: bool, slope: float):
    xw = _work(x)
    if dy.stride() != xw.stride():
        dy = torch.empty_like(xw).copy_(dy)  # e.g. the expanded ones of a .sum(), or another layout
    c, numel = x.shape[1], xw.numel()
    acc = acc_dtype(x.dtype)
    p = _plan(xw)
    st = StatRows(*stats)
    part = stats.new_empty((2, p.split, p.cols))
    _reduce_kernel[p.grid](xw, dy, st.mean, st.invstd, st.scale, st.shift, part[0], part[1], p.rows, p.cols,
                           p.inner, p.rows_per_prog, slope, BWD=True, BR=p.BR, BK=p.BK, ACC=acc)
    sums = part.view(2, p.split, c, p.inner).sum((1, 3))  # GradSums rows
    g = GradSums(*sums)
    dx = torch.empty_like(xw)
    _dx_kernel[(cdiv(numel, BLOCK),)](xw, dy, dx, st.mean, st.invstd, st.scale, st.shift, g.dbias, g.dweight,
                                      numel, c, p.inner, numel // c, slope, TRAINING=training, BLOCK=BLOCK, ACC=acc)
    return dx, sums


@torch.library.custom_op("fastgan::bn_leaky_relu", mutates_args=())
def _bn_op(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
           training: bool, eps: float, negative_slope: float) -> tuple[Tensor, Tensor]:
    return _forward(x, weight, bias, running_mean, running_var, training, eps, negative_slope)


@_bn_op.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps, negative_slope):
    return torch.empty_like(_work(x)), x.new_empty((STAT_ROWS, x.shape[1]), dtype=_stat_dtype(x.dtype))


@torch.library.custom_op("fastgan::bn_leaky_relu_backward", mutates_args=())
def _bn_backward_op(dy: Tensor, x: Tensor, stats: Tensor, training: bool,
                    negative_slope: float) -> tuple[Tensor, Tensor]:
    return _backward(dy, x, stats, training, negative_slope)


@_bn_backward_op.register_fake
def _(dy, x, stats, training, negative_slope):
    return torch.empty_like(_work(x)), stats.new_empty((2, x.shape[1]))


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, _, training, _, slope = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1])
    ctx.training, ctx.slope, ctx.dtypes = training, slope, (weight.dtype, bias.dtype)


def _bn_grad(ctx, dy, _dstats):
    x, stats = ctx.saved_tensors
    dx, sums = torch.ops.fastgan.bn_leaky_relu_backward(dy, x, stats, ctx.training, ctx.slope)
    w_dtype, b_dtype = ctx.dtypes
    g = GradSums(*sums)
    return dx, g.dweight.to(w_dtype), g.dbias.to(b_dtype), None, None, None, None, None


_bn_op.register_autograd(_bn_grad, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------- public
def bn_leaky_relu(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.0,
    impl: str = "auto",
) -> Tensor:
    """``leaky_relu(batch_norm(x), negative_slope)`` with ``F.batch_norm``'s arguments.

    ``training``: batch statistics, and the running statistics (when given) move towards them by
    ``momentum`` (a float: the cumulative average of ``momentum=None`` is refused on the Triton path).
    Otherwise the running statistics normalise. ``impl``: ``torch`` (the reference), ``triton``, or
    ``auto`` (Triton on CUDA, torch on the CPU; unmeasured choice, see bench/test_bench_bn_leaky_relu.py).
    First-order gradients only on the Triton path (see the module docstring).
    """
    if not use_triton("bn_leaky_relu", impl, x, DTYPES):
        return bn_leaky_relu_ref(x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope)
    if training and x.numel() // x.shape[1] <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    if momentum is None:
        raise ValueError("bn_leaky_relu: momentum=None (cumulative average) needs impl='torch'; give a float momentum")
    if not training and running_mean is None:
        raise ValueError("bn_leaky_relu: eval mode (training=False) needs running_mean and running_var")
    y, stats = torch.ops.fastgan.bn_leaky_relu(x, weight, bias, running_mean, running_var, training, eps,
                                               negative_slope)
    if training and running_mean is not None:
        st = StatRows(*stats)
        torch._foreach_lerp_((running_mean, running_var),
                             (st.mean.to(running_mean.dtype), st.var.to(running_var.dtype)), momentum)
    return y
