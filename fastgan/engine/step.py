"""The training step: ``d_step`` and ``g_step``, plain PyTorch (the reference path).

The loss math lives in ``d_losses``/``g_losses``, shared with the fast paths
(``fastgan.engine.fast``), which differ only in how they run it (compiled modules,
autocast, a gradient scaler, one CUDA graph) and in how they apply the update.

Static shapes and no host syncs: losses and statistics come back as detached
device tensors and the loop reads them every ``log_every`` steps, so the same
functions can later run compiled or inside a captured CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastgan.config import Config
from fastgan.data.diffaugment import diff_augment
from fastgan.engine.state import TrainState
from fastgan.losses import LOSSES, acgan_aux_loss, gradient_penalty, interpolate
from fastgan.shard import WHOLE, Shard

Tensor = torch.Tensor

D_KEYS = ("d_loss", "d_real", "d_fake", "acc_real", "acc_fake")
G_KEYS = ("g_loss",)


@dataclass(frozen=True)
class StepSpec:
    """What the step needs from the config, flattened for the hot path."""

    loss: str
    z_dim: int
    num_classes: int  # 0 for unconditional models
    acgan: bool
    smoothing: float
    gp_weight: float
    aux_weight: float
    batch_size: int
    kernels: str = "torch"  # model.kernels: gradient-penalty kernels, torch | triton | auto
    shard: Shard = WHOLE  # this process's slice of every global draw (batch_size is the global batch)
    diffaugment: str = ""  # data.diffaugment: the policy applied to every image D sees (fastgan/data/diffaugment.py)

    @classmethod
    def from_config(cls, cfg: Config) -> StepSpec:
        m = cfg.model
        return cls(
            loss=cfg.loss.kind,
            z_dim=m.z_dim,
            num_classes=m.label_classes,
            acgan=m.conditioning == "acgan",
            smoothing=cfg.loss.label_smoothing,
            gp_weight=cfg.loss.gp_weight,
            aux_weight=cfg.loss.aux_weight,
            batch_size=cfg.train.batch_size,
            kernels=m.kernels,
            diffaugment=cfg.data.diffaugment,
        )

    @property
    def keys(self) -> tuple[str, ...]:
        extra = ("gp",) if self.loss == "wgan-gp" else ()
        extra += ("aux_acc_real", "aux_acc_fake") if self.acgan else ()
        return D_KEYS + G_KEYS + extra


def sample_latents(spec: StepSpec, n: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """``n`` latents (and labels) for this process: its slice of the ``n * world`` a single process would draw."""
    w, take = spec.shard.world, spec.shard.take
    z = take(torch.randn(n * w, spec.z_dim, device=device))
    y = take(torch.randint(spec.num_classes, (n * w,), device=device)) if spec.num_classes else None
    return z, y


def _with_noise(x: Tensor, std: Tensor | None, shard: Shard) -> Tensor:
    return x if std is None else x + std * shard.randn_like(x)


def d_losses(
    G: Callable, D: Callable, spec: StepSpec, real: Tensor, labels: Tensor | None, noise_std: Tensor | None = None,
    critic: Callable | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """D's loss on a real batch and a fresh fake batch, and its detached statistics.

    ``critic`` is the module the gradient penalty differentiates twice (default ``D``):
    a compiled D passes its uncompiled original here, since compiled double backward
    is unsupported.
    """
    d_loss_fn, _ = LOSSES[spec.loss]
    y_real = labels if spec.num_classes else None
    z, y_fake = sample_latents(spec, real.shape[0], real.device)
    with torch.no_grad():
        fake = G(z, y_fake)
    aug = spec.diffaugment  # the same policy on both inputs of D, each image with its own draw
    real_logit, real_aux = D(_with_noise(diff_augment(real, aug, spec.shard), noise_std, spec.shard), y_real)
    fake_logit, fake_aux = D(_with_noise(diff_augment(fake, aug, spec.shard), noise_std, spec.shard), y_fake)
    loss = d_loss_fn(real_logit.float(), fake_logit.float(), spec.smoothing)
    out: dict[str, Tensor] = {}
    if spec.loss == "wgan-gp":
        gp_critic = D if critic is None else critic
        eps = spec.shard.rand(real.shape[0], real.device)
        # under autocast G's fake is bf16/fp16 while the real batch is fp32: mix in fp32
        x_hat = interpolate(real, fake.to(real.dtype), eps, impl=spec.kernels)
        gp = gradient_penalty(lambda x: gp_critic(x, y_real)[0], x_hat, spec.gp_weight, impl=spec.kernels)
        loss = loss + gp
        out["gp"] = gp.detach()
    if spec.acgan:
        loss = loss + spec.aux_weight * (acgan_aux_loss(real_aux, y_real) + acgan_aux_loss(fake_aux, y_fake))
        out["aux_acc_real"] = (real_aux.argmax(1) == y_real).float().mean()
        out["aux_acc_fake"] = (fake_aux.argmax(1) == y_fake).float().mean()
    rl, fl = real_logit.detach().float(), fake_logit.detach().float()
    prob = spec.loss == "ns"  # D(x) as a probability where D is a classifier, raw critic value otherwise
    out.update(
        d_loss=loss.detach(),
        d_real=torch.sigmoid(rl).mean() if prob else rl.mean(),
        d_fake=torch.sigmoid(fl).mean() if prob else fl.mean(),
        acc_real=(rl > 0).float().mean(),
        acc_fake=(fl < 0).float().mean(),
    )
    return loss, out


def g_losses(G: Callable, D: Callable, spec: StepSpec, device: torch.device) -> tuple[Tensor, dict[str, Tensor]]:
    """G's loss on a fresh fake batch, and its detached value."""
    _, g_loss_fn = LOSSES[spec.loss]
    z, y = sample_latents(spec, spec.shard.local(spec.batch_size), device)
    fake = G(z, y)
    logit, aux = D(diff_augment(fake, spec.diffaugment, spec.shard), y)  # the policy D trains on; G's grads pass it
    loss = g_loss_fn(logit.float())
    if spec.acgan:
        loss = loss + spec.aux_weight * acgan_aux_loss(aux, y)
    return loss, {"g_loss": loss.detach()}


def d_step(
    state: TrainState, spec: StepSpec, real: Tensor, labels: Tensor | None, noise_std: Tensor | None = None
) -> dict[str, Tensor]:
    """One discriminator (critic) update on a real batch and a fresh fake batch."""
    loss, out = d_losses(state.G, state.D, spec, real, labels, noise_std)
    state.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    state.opt_d.step()
    return out


def g_step(state: TrainState, spec: StepSpec, device: torch.device) -> dict[str, Tensor]:
    """One generator update; only G's parameters receive gradients."""
    loss, out = g_losses(state.G, state.D, spec, device)
    state.opt_g.zero_grad(set_to_none=True)
    loss.backward(inputs=list(state.G.parameters()))
    state.opt_g.step()
    return out
