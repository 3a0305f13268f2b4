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

import torch
import torch.nn.functional as F

from fastgan.kernels.runtime import (
    acc_dtype,
    cdiv,
    jit,
    next_pow2,
    num_programs_target,
    tl,
    use_triton,
)

Tensor = torch.Tensor

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
TILE_ELEMS = 2048  # elements per reduction tile: two fp32 accumulators of this size fit 4 warps' registers
MIN_ROWS = 64  # rows per reduction program at least: the fp32 column partials stay a few % of the traffic
BLOCK = 1024  # elements per program of the elementwise kernels
STAT_ROWS = 5  # per-channel rows of the stats tensor: mean, invstd, unbiased var, scale = w*invstd, bias


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


@jit
def _reduce_kernel(x_ptr, dy_ptr, stat_ptr, part_ptr, C, R, K, inner, rows_per_prog, slope,
                   BWD: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    """Column sums over one slice of rows, stored at part[0 | 1, split, column].

    Forward sums x - pivot and its square, the pivot being the channel's first element (a shift that
    keeps the one-pass variance accurate); backward sums dz and dz * xhat, dz being the gradient at the
    BatchNorm output. Columns are summed per channel afterwards (``_finalize_kernel``, ``_backward``).
    """
    split = tl.program_id(1)
    kk = tl.program_id(0) * BK + tl.arange(0, BK)
    k_ok = kk < K
    ch = kk // inner
    if BWD:
        mean = tl.load(stat_ptr + ch, mask=k_ok, other=0)[None, :]
        invstd = tl.load(stat_ptr + C + ch, mask=k_ok, other=0)[None, :]
        scale = tl.load(stat_ptr + 3 * C + ch, mask=k_ok, other=0)[None, :]
        beta = tl.load(stat_ptr + 4 * C + ch, mask=k_ok, other=0)[None, :]
    else:
        pivot = tl.load(x_ptr + ch * inner, mask=k_ok, other=0).to(ACC)[None, :]
    acc0 = tl.zeros([BR, BK], ACC)
    acc1 = tl.zeros([BR, BK], ACC)
    r_lo = split * rows_per_prog
    for r0 in range(r_lo, r_lo + rows_per_prog, BR):
        rr = r0 + tl.arange(0, BR)
        m = (rr < R)[:, None] & k_ok[None, :]
        off = rr[:, None] * K + kk[None, :]
        x = tl.load(x_ptr + off, mask=m, other=0).to(ACC)
        if BWD:
            dy = tl.load(dy_ptr + off, mask=m, other=0).to(ACC)
            z = (x - mean) * scale + beta
            dz = tl.where(z > 0, dy, dy * slope)
            acc0 += dz
            acc1 += dz * (x - mean) * invstd
        else:
            d = tl.where(m, x - pivot, 0)
            acc0 += d
            acc1 += d * d
    tl.store(part_ptr + split * K + kk, tl.sum(acc0, 0), mask=k_ok)
    tl.store(part_ptr + (tl.num_programs(1) + split) * K + kk, tl.sum(acc1, 0), mask=k_ok)


@jit
def _finalize_kernel(part_ptr, x_ptr, w_ptr, b_ptr, rm_ptr, rv_ptr, stat_ptr, C, K, inner, n_split, count, eps,
                     TRAINING: tl.constexpr, BC: tl.constexpr, BI: tl.constexpr, ACC: tl.constexpr):
    """Per-channel rows of ``stat``: mean, invstd, unbiased var, scale = weight*invstd, bias."""
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
                s += tl.load(part_ptr + off, mask=m, other=0)
                q += tl.load(part_ptr + n_split * K + off, mask=m, other=0)
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
    scale = tl.load(w_ptr + c, mask=ok, other=0).to(ACC) * invstd
    tl.store(stat_ptr + c, mean, mask=ok)
    tl.store(stat_ptr + C + c, invstd, mask=ok)
    tl.store(stat_ptr + 2 * C + c, var_unbiased, mask=ok)
    tl.store(stat_ptr + 3 * C + c, scale, mask=ok)
    tl.store(stat_ptr + 4 * C + c, tl.load(b_ptr + c, mask=ok, other=0).to(ACC), mask=ok)


@jit
def _apply_kernel(x_ptr, y_ptr, stat_ptr, numel, C, inner, slope, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """y = leaky_relu((x - mean) * scale + bias) over the storage in order."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    c = (i // inner) % C
    x = tl.load(x_ptr + i, mask=ok, other=0).to(ACC)
    mean = tl.load(stat_ptr + c, mask=ok, other=0)
    z = (x - mean) * tl.load(stat_ptr + 3 * C + c, mask=ok, other=0) + tl.load(stat_ptr + 4 * C + c, mask=ok, other=0)
    tl.store(y_ptr + i, tl.where(z > 0, z, z * slope).to(y_ptr.dtype.element_ty), mask=ok)


@jit
def _dx_kernel(x_ptr, dy_ptr, dx_ptr, stat_ptr, sums_ptr, numel, C, inner, count, slope,
               TRAINING: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """dx = scale * (dz - (sum dz + xhat * sum dz*xhat) / count) in training, scale * dz in eval."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    c = (i // inner) % C
    x = tl.load(x_ptr + i, mask=ok, other=0).to(ACC)
    dy = tl.load(dy_ptr + i, mask=ok, other=0).to(ACC)
    mean = tl.load(stat_ptr + c, mask=ok, other=0)
    scale = tl.load(stat_ptr + 3 * C + c, mask=ok, other=0)
    z = (x - mean) * scale + tl.load(stat_ptr + 4 * C + c, mask=ok, other=0)
    dz = tl.where(z > 0, dy, dy * slope)
    if TRAINING:
        xhat = (x - mean) * tl.load(stat_ptr + C + c, mask=ok, other=0)
        dbeta = tl.load(sums_ptr + c, mask=ok, other=0)
        dgamma = tl.load(sums_ptr + C + c, mask=ok, other=0)
        dz = dz - (dbeta + xhat * dgamma) / count.to(ACC)
    tl.store(dx_ptr + i, (dz * scale).to(dx_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------ host side
def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _work(x: Tensor) -> Tensor:
    """``x`` when NCHW-contiguous or channels-last (read in place), else a contiguous copy."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _plan(x: Tensor) -> dict:
    """The matrix view of ``x`` (see the kernels' comment), its tiles and the split of rows over programs."""
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    inner = 1 if (x.dim() == 4 and not x.is_contiguous()) or s == 1 else s  # channels-last, or 1x1 spatial
    rows, cols = (n * s, c) if inner == 1 else (n, c * s)
    bk = min(next_pow2(cols), 1024)
    br = min(max(TILE_ELEMS // bk, 1), next_pow2(rows))
    col_progs = cdiv(cols, bk)
    split = max(1, min(cdiv(num_programs_target(x.device), col_progs), cdiv(rows, max(br, MIN_ROWS))))
    rows_per_prog = cdiv(cdiv(rows, split), br) * br
    split = cdiv(rows, rows_per_prog)
    return {"grid": (col_progs, split), "split": split, "R": rows, "K": cols, "inner": inner,
            "rows_per_prog": rows_per_prog, "BR": br, "BK": bk}


def _forward(x, weight, bias, running_mean, running_var, training: bool, eps: float, slope: float):
    xw = _work(x)
    c, numel = x.shape[1], xw.numel()
    acc = acc_dtype(x.dtype)
    p = _plan(xw)
    stats = torch.empty(STAT_ROWS, c, device=x.device, dtype=_stat_dtype(x.dtype))
    part = stats  # unused in eval
    if training:
        part = torch.empty(2, p["split"], p["K"], device=x.device, dtype=stats.dtype)
        _reduce_kernel[p["grid"]](xw, xw, stats, part, c, p["R"], p["K"], p["inner"], p["rows_per_prog"], 0.0,
                                  BWD=False, BR=p["BR"], BK=p["BK"], ACC=acc)
    bi = min(next_pow2(p["inner"]), 1024)
    bc = min(next_pow2(c), max(TILE_ELEMS // bi, 1))
    _finalize_kernel[(cdiv(c, bc),)](
        part, xw, weight, bias, running_mean if running_mean is not None else stats,
        running_var if running_var is not None else stats, stats, c, p["K"], p["inner"], p["split"],
        numel // c, eps, TRAINING=training, BC=bc, BI=bi, ACC=acc)
    y = torch.empty_like(xw)
    _apply_kernel[(cdiv(numel, BLOCK),)](xw, y, stats, numel, c, p["inner"], slope, BLOCK=BLOCK, ACC=acc)
    return y, stats


def _backward(dy, x, stats, training: bool, slope: float):
    xw = _work(x)
    if dy.stride() != xw.stride():
        dy = torch.empty_like(xw).copy_(dy)  # e.g. the expanded ones of a .sum(), or another layout
    c, numel = x.shape[1], xw.numel()
    acc = acc_dtype(x.dtype)
    p = _plan(xw)
    part = torch.empty(2, p["split"], p["K"], device=x.device, dtype=stats.dtype)
    _reduce_kernel[p["grid"]](xw, dy, stats, part, c, p["R"], p["K"], p["inner"], p["rows_per_prog"], slope,
                              BWD=True, BR=p["BR"], BK=p["BK"], ACC=acc)
    sums = part.view(2, p["split"], c, p["inner"]).sum((1, 3))  # rows: dbias, dweight
    dx = torch.empty_like(xw)
    _dx_kernel[(cdiv(numel, BLOCK),)](xw, dy, dx, stats, sums, numel, c, p["inner"], numel // c, slope,
                                      TRAINING=training, BLOCK=BLOCK, ACC=acc)
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
    return dx, sums[1].to(w_dtype), sums[0].to(b_dtype), None, None, None, None, None


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
        torch._foreach_lerp_((running_mean, running_var),
                             (stats[0].to(running_mean.dtype), stats[2].to(running_var.dtype)), momentum)
    return y
