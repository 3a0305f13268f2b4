"""One builder for every generator/discriminator pair."""

from __future__ import annotations

from torch import nn

from fastgan.config import ModelConfig
from fastgan.errors import ConfigError
from fastgan.models.dcgan import Discriminator, Generator
from fastgan.models.layers import BatchNormAct, init_weights
from fastgan.models.mlp import MLPDiscriminator, MLPGenerator

__all__ = ["BatchNormAct", "Discriminator", "Generator", "build_discriminator", "build_generator", "build_models"]


def _check(m: ModelConfig) -> None:
    if m.channels not in (1, 3):
        raise ConfigError(f"model.channels must be 1 or 3 when building a model, got {m.channels}")
    if m.conditioning != "none" and m.num_classes < 2:
        has = "one class" if m.num_classes == 1 else "none"
        raise ConfigError(f"conditioning '{m.conditioning}' needs labels of at least 2 classes: the dataset has {has} "
                          "(add classes, or use --set model.conditioning=none)")
    if m.d_norm == "spectral" and m.arch != "dcgan":
        raise ConfigError(f"model.d_norm=spectral is for the dcgan discriminator, not arch '{m.arch}' "
                          "(drop --set model.d_norm=spectral)")
    if m.d_mbstd and m.arch != "dcgan":
        raise ConfigError(f"model.d_mbstd is a layer of the dcgan discriminator, not of arch '{m.arch}' "
                          "(drop --set model.d_mbstd=true)")


def build_generator(m: ModelConfig) -> nn.Module:
    _check(m)
    k = m.label_classes
    if m.arch == "mlp":
        g = MLPGenerator(m.resolution, m.channels, m.z_dim, m.g_width, k, m.label_mode, m.embed_dim)
    else:
        g = Generator(m.resolution, m.channels, m.z_dim, m.g_width, k, m.label_mode, m.embed_dim, m.kernels)
    init_weights(g)
    return g


def build_discriminator(m: ModelConfig) -> nn.Module:
    _check(m)
    k = m.label_classes
    if m.arch == "mlp":
        d = MLPDiscriminator(m.resolution, m.channels, m.d_width, k, m.conditioning, m.d_dropout)
    else:
        d = Discriminator(m.resolution, m.channels, m.d_width, k, m.conditioning, m.d_norm, m.d_dropout, m.kernels,
                          mbstd=m.d_mbstd)
    init_weights(d)
    return d


def build_models(m: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for a fully resolved model config (channels and num_classes set)."""
    return build_generator(m), build_discriminator(m)
