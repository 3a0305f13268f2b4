"""GAN losses, all on logits (never Sigmoid + BCELoss: unsafe under autocast).

Each adversarial loss is a pair ``d_loss(real_logits, fake_logits)`` and
``g_loss(fake_logits)``; the gradient penalty and ACGAN's auxiliary loss are added
by the train step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def ns_d_loss(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    """Non-saturating BCE: real target ``1 - smoothing`` (one-sided smoothing), fake target 0."""
    real_term = F.binary_cross_entropy_with_logits(real, torch.full_like(real, 1.0 - smoothing))
    return real_term + F.softplus(fake).mean()


def ns_g_loss(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()


def hinge_d_loss(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def wasserstein_d_loss(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake: Tensor) -> Tensor:
    return -fake.mean()


LOSSES: dict[str, tuple[Callable[..., Tensor], Callable[[Tensor], Tensor]]] = {
    "ns": (ns_d_loss, ns_g_loss),
    "hinge": (hinge_d_loss, wasserstein_g_loss),
    "wgan-gp": (wasserstein_d_loss, wasserstein_g_loss),
}


def interpolate(real: Tensor, fake: Tensor, eps: Tensor, impl: str = "torch") -> Tensor:
    """x_hat = eps * real + (1 - eps) * fake with one eps per sample, shape (B,).

    ``impl``: torch | triton | auto (``model.kernels``): see fastgan/kernels/gradient_penalty.py.
    """
    from fastgan.kernels import gradient_penalty as gpk  # lazy: importing Triton fixes its mode (kernels/runtime.py)

    return gpk.interpolate(real, fake, eps, impl)


def gradient_penalty_ref(critic: Callable[[Tensor], Tensor], x_hat: Tensor, weight: float) -> Tensor:
    """WGAN-GP penalty ``weight * mean((||dD/dx_hat|| - 1)^2)``, plain autograd.

    Differentiable to second order: the returned loss carries gradients into the
    critic's parameters (``create_graph=True``). The norm is taken in fp32.
    """
    x_hat = x_hat.detach().requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return weight * (norm - 1.0).pow(2).mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], x_hat: Tensor, weight: float, impl: str = "torch") -> Tensor:
    """``gradient_penalty_ref`` with the norm penalty as a fused op where ``impl`` asks for one.

    Same math and the same gradients into the critic's parameters (the input gradient keeps
    ``create_graph=True``); ``impl``: torch | triton | auto (``model.kernels``), see
    fastgan/kernels/gradient_penalty.py. The penalty itself is differentiable to first order only
    on the Triton path, which is all the critic's update needs.
    """
    from fastgan.kernels.gradient_penalty import gradient_norm_penalty  # lazy, as in interpolate

    x_hat = x_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return gradient_norm_penalty(grad, weight, impl)


def acgan_aux_loss(aux_logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(aux_logits.float(), labels)
