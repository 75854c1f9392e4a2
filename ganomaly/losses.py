"""GANomaly's losses, with the reference code's weights (w_adv=1, w_con=50, w_enc=1), and
Skip-GANomaly's (below).

L_adv = MSE(f(x), f(x_hat))       feature matching on D's penultimate map, not BCE
L_con = L1(x, x_hat)              reconstruction
L_enc = MSE(z, z_hat)             latent consistency
L_G   = w_adv L_adv + w_con L_con + w_enc L_enc
L_D   = (BCE(D(x), 1) + BCE(D(x_hat), 0)) / 2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class GeneratorLosses:
    l_adv: Tensor
    l_con: Tensor
    l_enc: Tensor
    l_g: Tensor


def generator_losses(
    x: Tensor,
    x_hat: Tensor,
    z: Tensor,
    z_hat: Tensor,
    features_real: Tensor,
    features_fake: Tensor,
    w_adv: float = 1.0,
    w_con: float = 50.0,
    w_enc: float = 1.0,
) -> GeneratorLosses:
    """The three generator losses and their weighted sum."""
    l_adv = F.mse_loss(features_fake, features_real)
    l_con = F.l1_loss(x_hat, x)
    l_enc = F.mse_loss(z_hat, z)
    l_g = w_adv * l_adv + w_con * l_con + w_enc * l_enc
    return GeneratorLosses(l_adv=l_adv, l_con=l_con, l_enc=l_enc, l_g=l_g)


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """0.5 * (BCE(D(x), 1) + BCE(D(x_hat), 0)), from logits (same value, numerically safer)."""
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return 0.5 * (real + fake)


def latent_score(z: Tensor, z_hat: Tensor, metric: str = "l2") -> Tensor:
    """Anomaly score per image: mean over the latent of (z - z_hat)^2 (l2) or |z - z_hat| (l1)."""
    diff = (z - z_hat).flatten(1)  # (B, nz)
    return diff.pow(2).mean(1) if metric == "l2" else diff.abs().mean(1)


# -- Skip-GANomaly (samet-akcay/skip-ganomaly, lib/models/skipganomaly.py) --------------------
#
# L_adv = BCE(D(x_hat), 1)          the generator fools D (a BCE, unlike GANomaly's L_adv)
# L_con = L1(x, x_hat)
# L_lat = MSE(f(x), f(x_hat))       f = D's features, (B, nz, 1, 1)
# L_G   = w_adv L_adv + w_con L_con + w_lat L_lat
# L_D   = BCE(D(x), 1) + BCE(D(x_hat), 0) + w_lat L_lat    (the reference adds the weighted
#                                                           latent loss and halves nothing)


@dataclass
class SkipGeneratorLosses:
    l_adv: Tensor
    l_con: Tensor
    l_lat: Tensor
    l_g: Tensor


def skip_generator_losses(
    x: Tensor,
    x_hat: Tensor,
    logits_fake: Tensor | None,
    features_real: Tensor,
    features_fake: Tensor,
    *,
    w_adv: float,
    w_con: float,
    w_lat: float,
) -> SkipGeneratorLosses:
    """Skip-GANomaly's three generator losses and their weighted sum (weights: the config's).

    `logits_fake` None: D did not run (`training.generator_only_step`), L_adv is 0."""
    if logits_fake is None:
        l_adv = x.new_zeros(())
    else:
        l_adv = F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))
    l_con = F.l1_loss(x_hat, x)
    l_lat = F.mse_loss(features_fake, features_real)
    l_g = w_adv * l_adv + w_con * l_con + w_lat * l_lat
    return SkipGeneratorLosses(l_adv=l_adv, l_con=l_con, l_lat=l_lat, l_g=l_g)


def skip_discriminator_loss(
    logits_real: Tensor,
    logits_fake: Tensor,
    features_real: Tensor,
    features_fake: Tensor,
    *,
    w_lat: float,
) -> Tensor:
    """BCE(D(x), 1) + BCE(D(x_hat), 0) + w_lat * MSE(f(x), f(x_hat)), from logits: the
    reference's `err_d`, which its re-initialisation rule (`err_d < 1e-5`) also reads."""
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return real + fake + w_lat * F.mse_loss(features_fake, features_real)


def skip_anomaly_score(
    x: Tensor, x_hat: Tensor, features_real: Tensor, features_fake: Tensor, weight: float
) -> Tensor:
    """Per image: weight * mean (x - x_hat)^2 + (1 - weight) * mean (f(x) - f(x_hat))^2,
    the means over all of an image's pixels and channels and all of its features."""
    reconstruction = (x - x_hat).flatten(1).pow(2).mean(1)  # (B,)
    latent = (features_real - features_fake).flatten(1).pow(2).mean(1)  # (B,)
    return weight * reconstruction + (1.0 - weight) * latent
