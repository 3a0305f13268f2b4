"""The WGAN-GP gradient penalty's memory-bound pieces as fused ops: references, Triton paths, dispatch.

``interpolate``: x_hat = eps * real + (1 - eps) * fake with one eps per sample (torch.lerp's formula,
eps rounded to the images' dtype as the reference does). ``gradient_norm_penalty``: from g = dD/dx_hat,
``weight * mean_b (||g_b||_2 - 1)^2`` with the per-sample norms in fp32, and its backward to g in the same
kernel family, so the penalty's gradient flows on through ``autograd.grad(..., create_graph=True)`` into
D's parameters (``fastgan.losses.gradient_penalty`` puts the pieces together).

Differentiability: ``interpolate`` to any order (it is linear and its backward is plain torch).
``gradient_norm_penalty`` first order only: its backward is a custom op without a derivative of its own,
so a second backward raises; the penalty needs only its gradient with respect to g. Both proven in
tests/kernels/test_gradient_penalty.py.

Layouts: any dense layout with the batch outermost (NCHW-contiguous, channels-last) is read in place;
others are copied to contiguous first. Custom ops with fake functions (one op each under torch.compile;
see bn_leaky_relu.py for why not triton_op), no host syncs: usable inside a captured CUDA graph.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fastgan.kernels.runtime import acc_dtype, cdiv, jit, next_pow2, num_programs_target, tl, use_triton

Tensor = torch.Tensor

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
BLOCK = 1024  # elements per program of the elementwise kernels and per step of the norm reduction
BATCH_BLOCK = 1024  # samples per step of the final reduction (one program)


def interpolate_ref(real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    """x_hat = eps * real + (1 - eps) * fake with one eps per sample, shape (B,)."""
    e = eps.view(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    return torch.lerp(fake, real, e)


def gradient_norm_penalty_ref(grad: Tensor, weight: float) -> Tensor:
    """``weight * mean((||grad_b|| - 1)^2)`` over the batch, norms in fp32 (fp64 for fp64 input)."""
    norm = grad.to(_stat_dtype(grad.dtype)).flatten(1).norm(2, dim=1)
    return weight * (norm - 1.0).pow(2).mean()


# ---------------------------------------------------------------------------------------------- kernels
@jit
def _interpolate_kernel(
    real_ptr,  # (B, per_sample) real images, batch outermost
    fake_ptr,  # (B, per_sample) generated images, same strides
    eps_ptr,  # (B,) mixing weight per sample
    out_ptr,  # (B, per_sample) out: x_hat, same strides
    numel,  # B * per_sample
    per_sample,  # elements per sample
    BLOCK: tl.constexpr,  # elements per program
    ACC: tl.constexpr,  # arithmetic dtype
):
    """x_hat = lerp(fake, real, eps[b]), eps rounded to the images' dtype first (as the reference)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    e = tl.load(eps_ptr + i // per_sample, mask=ok, other=0).to(out_ptr.dtype.element_ty).to(ACC)
    r = tl.load(real_ptr + i, mask=ok, other=0).to(ACC)
    f = tl.load(fake_ptr + i, mask=ok, other=0).to(ACC)
    d = r - f
    out = tl.where(tl.abs(e) < 0.5, f + e * d, r - d * (1 - e))  # torch.lerp's two-sided formula
    tl.store(out_ptr + i, out.to(out_ptr.dtype.element_ty), mask=ok)


@jit
def _sumsq_kernel(
    g_ptr,  # (B, per_sample) gradient of D at x_hat, batch outermost
    part_ptr,  # (B, n_split) out: partial sums of g^2
    per_sample,  # elements per sample
    per_prog,  # elements of a sample summed by one program (a multiple of BLOCK)
    BLOCK: tl.constexpr,  # elements per step
    ACC: tl.constexpr,  # accumulation dtype
):
    """part[b, split] = sum of g^2 over one slice of sample b (program (b, split))."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    acc = tl.zeros([BLOCK], ACC)
    lo = split * per_prog
    for k in range(lo, lo + per_prog, BLOCK):
        j = k + tl.arange(0, BLOCK)
        v = tl.load(g_ptr + b * per_sample + j, mask=j < per_sample, other=0).to(ACC)
        acc += v * v
    tl.store(part_ptr + b * tl.num_programs(1) + split, tl.sum(acc, 0))


@jit
def _penalty_kernel(
    part_ptr,  # (B, n_split) partial sums of g^2
    norm_ptr,  # (B,) out: ||g_b||
    loss_ptr,  # () out: the penalty
    B,  # samples
    n_split,  # partial sums per sample
    weight,  # lambda
    BB: tl.constexpr,  # samples per step
    ACC: tl.constexpr,  # accumulation dtype
):
    """norms[b] = sqrt(sum of part[b, :]); loss = weight * mean((norm - 1)^2). One program."""
    acc = tl.zeros([BB], ACC)
    for b0 in range(0, B, BB):
        b = b0 + tl.arange(0, BB)
        ok = b < B
        s = tl.zeros([BB], ACC)
        for i in range(n_split):
            s += tl.load(part_ptr + b * n_split + i, mask=ok, other=0)
        n = tl.sqrt(s)
        tl.store(norm_ptr + b, n, mask=ok)
        acc += tl.where(ok, (n - 1) * (n - 1), 0)
    tl.store(loss_ptr, tl.sum(acc, 0) * weight / B)


@jit
def _penalty_grad_kernel(
    g_ptr,  # (B, per_sample) gradient of D at x_hat
    norm_ptr,  # (B,) ||g_b|| from the forward
    dloss_ptr,  # () gradient at the penalty
    out_ptr,  # (B, per_sample) out: gradient at g, same strides
    numel,  # B * per_sample
    per_sample,  # elements per sample
    B,  # samples
    weight,  # lambda
    BLOCK: tl.constexpr,  # elements per program
    ACC: tl.constexpr,  # arithmetic dtype
):
    """dg = dloss * 2 * weight / B * (n - 1) / n * g; 0 for a zero-norm sample, as torch's norm backward."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < numel
    n = tl.load(norm_ptr + i // per_sample, mask=ok, other=1)
    coef = tl.where(n > 0, (n - 1) / tl.where(n > 0, n, 1), 0) * (2 * weight / B)
    coef = coef * tl.load(dloss_ptr).to(ACC)
    g = tl.load(g_ptr + i, mask=ok, other=0).to(ACC)
    tl.store(out_ptr + i, (g * coef).to(out_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------ host side
def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _batch_major(t: Tensor) -> Tensor:
    """``t`` when dense with the batch outermost (NCHW-contiguous or channels-last), else a contiguous copy."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` in ``ref``'s strides (copied only when they differ)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


@torch.library.custom_op("fastgan::gp_interpolate", mutates_args=())
def _interpolate_op(real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    real = _batch_major(real)
    fake = _like(fake, real)
    out = torch.empty_like(real)
    numel = real.numel()
    _interpolate_kernel[(cdiv(numel, BLOCK),)](real, fake, eps.contiguous(), out, numel, numel // real.shape[0],
                                               BLOCK=BLOCK, ACC=acc_dtype(real.dtype))
    return out


@_interpolate_op.register_fake
def _(real, fake, eps):
    return torch.empty_like(_batch_major(real))


def _interpolate_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _interpolate_grad(ctx, g):
    real, fake, eps = ctx.saved_tensors
    e = eps.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
    d_eps = (g * (real - fake)).flatten(1).sum(1).to(eps.dtype) if ctx.needs_input_grad[2] else None
    return g * e, g * (1 - e), d_eps


_interpolate_op.register_autograd(_interpolate_grad, setup_context=_interpolate_setup)


class NormPlan(NamedTuple):
    """How ``_sumsq_kernel`` splits the per-sample sums of squares over programs."""

    samples: int  # B
    per_sample: int  # elements per sample
    split: int  # programs per sample
    per_prog: int  # elements per program, a multiple of block
    block: int  # elements per step


def _norm_plan(g: Tensor) -> NormPlan:
    b = g.shape[0]
    per_sample = g.numel() // b
    block = min(next_pow2(per_sample), BLOCK)
    split = max(1, min(cdiv(per_sample, block), cdiv(num_programs_target(g.device), b)))
    per_prog = cdiv(cdiv(per_sample, split), block) * block
    return NormPlan(b, per_sample, cdiv(per_sample, per_prog), per_prog, block)


@torch.library.custom_op("fastgan::grad_norm_penalty", mutates_args=())
def _penalty_op(grad: Tensor, weight: float) -> tuple[Tensor, Tensor]:
    g = _batch_major(grad)
    p = _norm_plan(g)
    acc = acc_dtype(g.dtype)
    part = torch.empty(p.samples, p.split, device=g.device, dtype=_stat_dtype(g.dtype))
    _sumsq_kernel[(p.samples, p.split)](g, part, p.per_sample, p.per_prog, BLOCK=p.block, ACC=acc)
    norms = torch.empty(p.samples, device=g.device, dtype=part.dtype)
    loss = torch.empty((), device=g.device, dtype=part.dtype)
    _penalty_kernel[(1,)](part, norms, loss, p.samples, p.split, weight, BB=min(next_pow2(p.samples), BATCH_BLOCK),
                          ACC=acc)
    return loss, norms


@_penalty_op.register_fake
def _(grad, weight):
    dtype = _stat_dtype(grad.dtype)
    return grad.new_empty((), dtype=dtype), grad.new_empty((grad.shape[0],), dtype=dtype)


@torch.library.custom_op("fastgan::grad_norm_penalty_backward", mutates_args=())
def _penalty_backward_op(dloss: Tensor, grad: Tensor, norms: Tensor, weight: float) -> Tensor:
    g = _batch_major(grad)
    out = torch.empty_like(g)
    numel = g.numel()
    _penalty_grad_kernel[(cdiv(numel, BLOCK),)](g, norms, dloss.contiguous(), out, numel, numel // g.shape[0],
                                                g.shape[0], weight, BLOCK=BLOCK, ACC=acc_dtype(g.dtype))
    return out


@_penalty_backward_op.register_fake
def _(dloss, grad, norms, weight):
    return torch.empty_like(_batch_major(grad))


def _penalty_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(inputs[0], output[1])
    ctx.weight = inputs[1]


def _penalty_grad(ctx, dloss, _dnorms):
    grad, norms = ctx.saved_tensors
    return torch.ops.fastgan.grad_norm_penalty_backward(dloss, grad, norms, ctx.weight), None


_penalty_op.register_autograd(_penalty_grad, setup_context=_penalty_setup)


# ----------------------------------------------------------------------------------------------- public
def interpolate(real: Tensor, fake: Tensor, eps: Tensor, impl: str = "auto") -> Tensor:
    """``interpolate_ref`` as one fused kernel; ``impl`` = auto | triton | torch. Any order of gradient."""
    same = real.shape == fake.shape and real.dtype == fake.dtype and eps.shape == real.shape[:1]
    if same and real.dim() > 1 and use_triton("interpolate", impl, real, DTYPES):
        return _interpolate_op(real, fake, eps)
    return interpolate_ref(real, fake, eps)  # also raises torch's own error on mismatched inputs


def gradient_norm_penalty(grad: Tensor, weight: float, impl: str = "auto") -> Tensor:
    """``gradient_norm_penalty_ref`` as two fused kernels forward, one backward; ``impl`` = auto | triton | torch.

    First-order gradients only on the Triton path (enough for the penalty; see the module docstring).
    """
    if grad.dim() > 1 and use_triton("gradient_norm_penalty", impl, grad, DTYPES):
        return _penalty_op(grad, float(weight))[0]
    return gradient_norm_penalty_ref(grad, weight)
