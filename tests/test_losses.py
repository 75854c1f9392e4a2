"""Losses against values worked out by hand."""

import math

import pytest
import torch

from ganomaly.losses import discriminator_loss, generator_losses, latent_score


def test_generator_losses_by_hand():
    x = torch.tensor([[0.0, 1.0]])
    x_hat = torch.tensor([[0.5, 0.0]])  # |diff| = 0.5, 1 -> L1 = 0.75
    z = torch.tensor([[1.0, 2.0]])
    z_hat = torch.tensor([[0.0, 0.0]])  # sq = 1, 4 -> MSE = 2.5
    f_real = torch.tensor([[1.0, 1.0]])
    f_fake = torch.tensor([[3.0, 1.0]])  # sq = 4, 0 -> MSE = 2
    losses = generator_losses(x, x_hat, z, z_hat, f_real, f_fake)
    assert losses.l_con.item() == pytest.approx(0.75)
    assert losses.l_enc.item() == pytest.approx(2.5)
    assert losses.l_adv.item() == pytest.approx(2.0)
    assert losses.l_g.item() == pytest.approx(1 * 2.0 + 50 * 0.75 + 1 * 2.5)  # 42.0
    custom = generator_losses(x, x_hat, z, z_hat, f_real, f_fake, w_adv=0, w_con=1, w_enc=0)
    assert custom.l_g.item() == pytest.approx(0.75)


def test_discriminator_loss_by_hand():
    # logit 0 -> p = 0.5: each BCE term is ln 2, and so is their mean.
    assert discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    # logit ln 3 -> p = 0.75 on real: -ln 0.75; logit -ln 3 -> p = 0.25 on fake: -ln 0.75.
    real = torch.full((2,), math.log(3.0))
    fake = torch.full((2,), -math.log(3.0))
    assert discriminator_loss(real, fake).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    # A confident, correct D has a loss near 0 (what triggers the re-init rule).
    assert discriminator_loss(torch.full((2,), 30.0), torch.full((2,), -30.0)).item() < 1e-5


def test_latent_score_by_hand():
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]).view(2, 3, 1, 1)
    z_hat = torch.tensor([[1.0, 0.0, 0.0], [1.0, -1.0, 1.0]]).view(2, 3, 1, 1)
    assert latent_score(z, z_hat, "l2").tolist() == pytest.approx([13 / 3, 1.0])
    assert latent_score(z, z_hat, "l1").tolist() == pytest.approx([5 / 3, 1.0])
