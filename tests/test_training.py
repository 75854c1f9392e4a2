"""One training step's update order, and the discriminator re-initialisation rule."""

import copy

import pytest
import torch

from ganomaly.config import DetectorConfig
from ganomaly.losses import discriminator_loss
from ganomaly.model import make_networks
from ganomaly.training import (
    TrainingError,
    TrainState,
    check_finite,
    make_optimizers,
    run_epoch,
    train_step,
)


def tiny_state(**overrides):
    config = DetectorConfig(  # fp32: the steps are compared with float32 computations
        image_size="16", nz=8, ngf=4, epochs=1, batch_size=4, progress=False,
        **{"precision": "fp32", **overrides},
    )  # fmt: skip
    generator, discriminator = make_networks((16, 16), 1, config.nz, config.ngf, 0, seed=0)
    optimizer_g, optimizer_d = make_optimizers(generator, discriminator, config)
    return TrainState(generator, discriminator, optimizer_g, optimizer_d, config)


def test_discriminator_update_uses_only_its_own_loss():
    torch.manual_seed(1)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    state = tiny_state()
    generator0 = copy.deepcopy(state.generator)
    discriminator0 = copy.deepcopy(state.discriminator)

    # Expected D update: the gradient of L_D alone, on x_hat from the generator *before* its step.
    with torch.no_grad():
        x_hat = generator0(x)[0]
    expected_d = copy.deepcopy(discriminator0)
    loss = discriminator_loss(expected_d(x), expected_d(x_hat))
    loss.backward()
    torch.optim.Adam(expected_d.parameters(), lr=2e-4, betas=(0.5, 0.999)).step()

    losses = train_step(state, x)
    assert losses["l_d"].item() == pytest.approx(loss.item(), rel=1e-5)
    for name, param in state.discriminator.named_parameters():
        assert torch.allclose(param, dict(expected_d.named_parameters())[name], atol=1e-7), name
    # ... and the generator moved, while the discriminator's L_adv gradient never reached D.
    assert any(
        not torch.equal(a, b)
        for a, b in zip(state.generator.parameters(), generator0.parameters(), strict=True)
    )


def test_generator_update_matches_its_weighted_loss():
    torch.manual_seed(2)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    state = tiny_state(w_adv=0.0, w_enc=0.0, w_con=1.0)
    expected_g = copy.deepcopy(state.generator)
    x_hat = expected_g(x)[0]
    (x_hat - x).abs().mean().backward()  # L1 only, worked out independently of losses.py
    torch.optim.Adam(expected_g.parameters(), lr=2e-4, betas=(0.5, 0.999)).step()
    train_step(state, x)
    for (name, param), expected in zip(
        state.generator.named_parameters(), expected_g.parameters(), strict=True
    ):
        assert torch.allclose(param, expected, atol=1e-7), name


def test_discriminator_reinit_fires_and_is_counted():
    state = tiny_state(d_reinit_threshold=1e9)  # every step's L_D is "below" it
    images = torch.rand(12, 1, 16, 16) * 2 - 1
    row = run_epoch(state, images, batch_size=4, progress=False)
    assert row["d_reinits"] == 3 and state.d_reinits == 3
    # Adam's moments are kept across a re-init, as in the reference.
    assert all(s["step"].item() == 3 for s in state.optimizer_d.state.values())
    # After a re-init D's weights are fresh DCGAN draws: conv weights have std ~0.02 again.
    conv = state.discriminator.encoder.features[0]
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_no_reinit_with_default_threshold():
    state = tiny_state()
    row = run_epoch(state, torch.rand(8, 1, 16, 16) * 2 - 1, batch_size=4, progress=False)
    assert row["d_reinits"] == 0


def test_non_finite_loss_is_named():
    losses = {"l_enc": 0.1, "l_con": float("nan"), "l_adv": 0.1, "l_g": 0.1, "l_d": 0.1}
    with pytest.raises(TrainingError, match=r"l_con=nan at epoch 3, step 7"):
        check_finite(losses, 3, 7)
