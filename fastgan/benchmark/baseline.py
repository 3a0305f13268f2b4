"""The baseline the speedups are measured against: a training loop written the way the PyTorch
DCGAN example (pytorch/examples, dcgan/main.py) writes it, on fastgan's own G and D.

What makes it the baseline: eager fp32; D's logit through ``nn.Sigmoid`` into ``nn.BCELoss``;
default Adam; a host float batch copied to the device each step (what the example's DataLoader
yields); ``.item()`` on the losses and D outputs every step; the fake batch of the D step reused
for the G step. The WGAN-GP case follows the improved-WGAN PyTorch loops (critic iterations,
``autograd.grad(create_graph=True)`` penalty, ``requires_grad`` toggled on D). The math is the
step's; only the way it is written differs.
"""

from __future__ import annotations

import torch
from torch import nn

from fastgan.config import Config
from fastgan.data import ImageDataset
from fastgan.data.augment import resize_uint8, to_unit_range
from fastgan.models import build_models

HOST_BATCHES = 4  # pre-made host batches cycled, as if DataLoader workers kept up


class BaselineLoop:
    def __init__(self, cfg: Config, dataset: ImageDataset, device: torch.device) -> None:
        m, o = cfg.model, cfg.optim
        torch.manual_seed(cfg.train.seed)
        self.G, self.D = (net.to(device) for net in build_models(m))
        self.device, self.cfg = device, cfg
        self.B, self.z_dim, self.n_critic = cfg.train.batch_size, m.z_dim, o.n_critic
        self.k = m.label_classes
        self.acgan, self.wgan = m.conditioning == "acgan", cfg.loss.kind == "wgan-gp"
        self.sigmoid, self.criterion, self.aux_criterion = nn.Sigmoid(), nn.BCELoss(), nn.CrossEntropyLoss()
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.d_lr, betas=o.d_betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.g_lr, betas=o.g_betas)
        images = resize_uint8(dataset.images, m.resolution)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        self.host: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for _ in range(HOST_BATCHES):
            idx = torch.randint(len(images), (self.B,), generator=gen)
            y = dataset.labels[idx] if dataset.labels is not None and self.k else None
            self.host.append((to_unit_range(images[idx]), y))
        self.i = 0
        self.log: list[float] = []

    def _real(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = self.host[self.i % HOST_BATCHES]
        self.i += 1
        return x.to(self.device), (None if y is None else y.to(self.device))

    def _d(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logit, aux = self.D(x, y)
        return self.sigmoid(logit).view(-1), aux

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(self.B, self.z_dim, device=self.device)
        return z, (torch.randint(self.k, (self.B,), device=self.device) if self.k else None)

    def step(self) -> None:
        """One training iteration: D update(s), then G update, with the example's host reads."""
        if self.wgan:
            self._wgan_step()
            return
        real, y_real = self._real()
        label = torch.full((self.B,), 1.0, device=self.device)
        self.D.zero_grad()
        out, aux = self._d(real, y_real)
        err_real = self.criterion(out, label) + (self.aux_criterion(aux, y_real) if self.acgan else 0.0)
        err_real.backward()
        d_x = out.mean().item()
        z, y_fake = self._latents()
        fake = self.G(z, y_fake)
        label.fill_(0.0)
        out, aux = self._d(fake.detach(), y_fake)
        err_fake = self.criterion(out, label) + (self.aux_criterion(aux, y_fake) if self.acgan else 0.0)
        err_fake.backward()
        d_g_z1 = out.mean().item()
        err_d = err_real + err_fake
        self.opt_d.step()
        self.G.zero_grad()
        label.fill_(1.0)
        out, aux = self._d(fake, y_fake)
        err_g = self.criterion(out, label) + (self.aux_criterion(aux, y_fake) if self.acgan else 0.0)
        err_g.backward()
        d_g_z2 = out.mean().item()
        self.opt_g.step()
        self.log.append(err_d.item() + err_g.item() + d_x + d_g_z1 + d_g_z2)

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        alpha = torch.rand(self.B, 1, 1, 1, device=self.device)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        out, _ = self.D(x_hat, y)
        (grad,) = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=True, retain_graph=True)
        return self.cfg.loss.gp_weight * ((grad.view(self.B, -1).norm(2, dim=1) - 1) ** 2).mean()

    def _wgan_step(self) -> None:
        for p in self.D.parameters():
            p.requires_grad = True
        for _ in range(self.n_critic):
            real, y_real = self._real()
            self.D.zero_grad()
            d_real = self.D(real, y_real)[0].mean()
            (-d_real).backward()
            z, y_fake = self._latents()
            with torch.no_grad():
                fake = self.G(z, y_fake)
            d_fake = self.D(fake, y_fake)[0].mean()
            d_fake.backward()
            gp = self._penalty(real, fake, y_real)
            gp.backward()
            self.opt_d.step()
            self.log.append((d_fake - d_real + gp).item() + (d_real - d_fake).item())
        for p in self.D.parameters():
            p.requires_grad = False
        self.G.zero_grad()
        z, y_fake = self._latents()
        g = self.D(self.G(z, y_fake), y_fake)[0].mean()
        (-g).backward()
        self.opt_g.step()
        self.log.append(-g.item())

