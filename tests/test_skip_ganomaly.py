"""Skip-GANomaly: networks, losses, training step, D re-initialisation and scorer.

Expected values are worked out here, independently of ganomaly/losses.py, from the authors'
code (samet-akcay/skip-ganomaly: lib/models/networks.py, lib/models/skipganomaly.py).
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganomaly.config import ConfigError, DetectorConfig
from ganomaly.losses import skip_discriminator_loss, skip_generator_losses
from ganomaly.model import (
    SkipDiscriminator,
    UnetGenerator,
    count_parameters,
    make_skip_networks,
    unet_sizes,
)
from ganomaly.scoring import SkipAnomalyScorer, score_tensor
from ganomaly.training import (
    TrainState,
    history_columns,
    make_optimizers,
    recompute_batchnorm_statistics,
    run_epoch,
    skip_train_step,
    train_step,
)

SIZES = [(16, 16), (28, 28), (32, 32), (48, 48), (64, 64), (100, 60)]
NZ, NGF = 8, 4


def tiny_state(size=(16, 16), channels=1, seed=0, **overrides):
    # fp32: the steps are compared with float32 references
    config = DetectorConfig(
        model="skip-ganomaly", image_size=f"{size[0]}x{size[1]}", nz=NZ, ngf=NGF,
        epochs=1, batch_size=4, progress=False, **{"precision": "fp32", **overrides},
    )  # fmt: skip
    generator, discriminator = make_skip_networks(size, channels, NZ, NGF, seed)
    optimizer_g, optimizer_d = make_optimizers(generator, discriminator, config)
    return TrainState(generator, discriminator, optimizer_g, optimizer_d, config)


def digit_images(n):
    """scikit-learn's first n digits, 16x16 in [-1, 1]: images a reconstruction can learn."""
    import sklearn.datasets

    digits = torch.tensor(sklearn.datasets.load_digits().images[:n], dtype=torch.float32)
    return F.interpolate(digits[:, None] / 8 - 1, size=(16, 16), mode="bilinear")


def images(n, channels=1, size=(16, 16), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, *size, generator=generator) * 2 - 1


# -- networks --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_output_has_the_input_shape(size, channels):
    generator, discriminator = make_skip_networks(size, channels, NZ, NGF, seed=0)
    x = images(2, channels, size)
    x_hat = generator(x)
    assert x_hat.shape == x.shape
    assert x_hat.min() >= -1 and x_hat.max() <= 1  # Tanh, to match inputs in [-1, 1]
    assert discriminator.features(x).shape == (2, NZ, 1, 1)
    assert discriminator(x).shape == (2,)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((32, 32), [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]),  # reference: log2(32)
        ((28, 28), [(28, 28), (14, 14), (7, 7), (3, 3), (1, 1)]),
        ((100, 60), [(100, 60), (50, 30), (25, 15), (12, 7), (6, 3), (3, 1)]),
    ],
)
def test_unet_halves_until_the_shorter_side_is_one(size, expected):
    assert unet_sizes(*size) == expected


def test_reference_layout_at_32x32():
    """The reference's UnetGenerator(3, 3, num_downs=5, ngf=64) and BasicDiscriminator."""
    generator = UnetGenerator((32, 32), channels=3, ngf=64)
    downs = [m for m in generator.down.modules() if isinstance(m, nn.Conv2d)]
    ups = [m for m in generator.up.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in downs] == [
        (3, 64), (64, 128), (128, 256), (256, 512), (512, 512),
    ]  # fmt: skip
    # Outermost first; every up conv but the innermost reads [skip, up] (twice the channels).
    assert [(c.in_channels, c.out_channels) for c in ups] == [
        (128, 3), (256, 64), (512, 128), (1024, 256), (512, 512),
    ]  # fmt: skip
    assert [c.bias is not None for c in downs + ups] == [False] * 5 + [True] + [False] * 4
    batch_norms = [m.num_features for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(batch_norms) == sorted([128, 256, 512] + [64, 128, 256, 512])
    assert not any(isinstance(m, nn.Dropout) for m in generator.modules())
    # Parameter counts of the reference's networks, summed by hand from their layers.
    convs = 3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 512  # down, 4x4 each
    deconvs = 128 * 3 + 256 * 64 + 512 * 128 + 1024 * 256 + 512 * 512
    norms = 2 * (128 + 256 + 512) + 2 * (64 + 128 + 256 + 512)
    assert count_parameters(generator) == 16 * (convs + deconvs) + 3 + norms
    discriminator = SkipDiscriminator((32, 32), nz=100, channels=3, ngf=64)
    d_convs = 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 100) + 9 * 100
    assert count_parameters(discriminator) == d_convs + 2 * (128 + 256)


def test_initialisation_is_the_references():
    generator, discriminator = make_skip_networks((32, 32), 3, 100, 64, seed=0)
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(generator.up[0][1].bias == 0)
    norms = [m for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.bias == 0) for m in norms)
    assert torch.cat([m.weight for m in norms]).mean().item() == pytest.approx(1.0, abs=0.01)


def _level_inputs(generator):
    """The up conv of every level but the innermost reads [skip, deeper]: (conv, skip width)."""
    convs = [up[1] for up in generator.up]
    return [(conv, conv.in_channels // 2) for conv in convs[:-1]]


def _reconstruction_error(generator, train, held_out, steps):
    """L1 on held-out images after `steps` Adam steps of L1 reconstruction on `train`."""
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2, betas=(0.5, 0.999))
    for _ in range(steps):
        loss = (generator(train) - train).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (generator(held_out) - held_out).abs().mean().item()


def _freeze_at_zero(weight, mask):
    with torch.no_grad():
        weight.mul_(mask)
    weight.register_hook(lambda grad: grad * mask)


def test_skip_connections_carry_the_image():
    """With the bottleneck cut, the skips alone reconstruct unseen digits far better than the
    same U-Net with its skips cut (a plain encoder-decoder through a 1x1 bottleneck)."""
    digits = digit_images(64)
    train, held_out = digits[:32], digits[32:]
    bottleneck_cut, _ = make_skip_networks((16, 16), 1, NZ, NGF, seed=0)
    skips_cut = copy.deepcopy(bottleneck_cut)
    innermost = bottleneck_cut.down[-1][1]
    _freeze_at_zero(innermost.weight, torch.zeros_like(innermost.weight))
    for conv, skip_width in _level_inputs(skips_cut):
        mask = torch.ones_like(conv.weight)
        mask[:skip_width] = 0  # the skip's half of the concatenation [skip, deeper]
        _freeze_at_zero(conv.weight, mask)
    error_skips_only = _reconstruction_error(bottleneck_cut, train, held_out, steps=20)
    error_no_skips = _reconstruction_error(skips_cut, train, held_out, steps=20)
    assert error_skips_only < 0.5 * error_no_skips, (error_skips_only, error_no_skips)


def test_every_skip_reaches_the_output():
    """Cut everything below level k: the output still depends on the input, through level k's
    skip alone (eval mode, so BatchNorm does not carry batch information)."""
    generator, _ = make_skip_networks((32, 32), 1, NZ, NGF, seed=0)
    generator.eval()
    x1, x2 = images(1, seed=1, size=(32, 32)), images(1, seed=2, size=(32, 32))
    for level in range(len(generator.down) - 1, 0, -1):
        with torch.no_grad():
            generator.down[level][1].weight.zero_()  # nothing below `level` sees the input
        assert not torch.allclose(generator(x1), generator(x2)), level


# -- losses ----------------------------------------------------------------------------------
def test_losses_match_the_reference_formulas():
    torch.manual_seed(5)
    x, x_hat = torch.rand(3, 1, 16, 16) * 2 - 1, torch.rand(3, 1, 16, 16) * 2 - 1
    logits_real, logits_fake = torch.randn(3), torch.randn(3)
    f_real, f_fake = torch.randn(3, NZ, 1, 1), torch.randn(3, NZ, 1, 1)
    # The reference: D outputs sigmoid probabilities; nn.BCELoss; nn.L1Loss; l2_loss = mean sq.
    p_real, p_fake = torch.sigmoid(logits_real), torch.sigmoid(logits_fake)
    bce_fake_as_real = -torch.log(p_fake).mean()
    l_con = (x - x_hat).abs().mean()
    l_lat = ((f_real - f_fake) ** 2).mean()
    g = skip_generator_losses(x, x_hat, logits_fake, f_real, f_fake, w_adv=2, w_con=40, w_lat=3)
    assert g.l_adv.item() == pytest.approx(bce_fake_as_real.item(), rel=1e-5)
    assert g.l_con.item() == pytest.approx(l_con.item(), rel=1e-6)
    assert g.l_lat.item() == pytest.approx(l_lat.item(), rel=1e-6)
    expected_g = 2 * bce_fake_as_real + 40 * l_con + 3 * l_lat
    assert g.l_g.item() == pytest.approx(expected_g.item(), rel=1e-5)
    err_d = -torch.log(p_real).mean() - torch.log(1 - p_fake).mean() + 3 * l_lat
    l_d = skip_discriminator_loss(logits_real, logits_fake, f_real, f_fake, w_lat=3)
    assert l_d.item() == pytest.approx(err_d.item(), rel=1e-5)


# -- training step ---------------------------------------------------------------------------
def test_step_matches_the_reference_update():
    """The reference's order: D on x and x_hat; G step on L_G; then L_D with a third D pass on
    x_hat.detach() and its `err_g_lat`, back-propagated into D (sigmoid + BCELoss as there)."""
    x = images(4, seed=11)
    state = tiny_state(w_con=40.0)
    g_ref, d_ref = copy.deepcopy(state.generator), copy.deepcopy(state.discriminator)
    opt_g = torch.optim.Adam(g_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce, ones, zeros = nn.BCELoss(), torch.ones(4), torch.zeros(4)

    fake = g_ref(x)
    feat_real, feat_fake = d_ref.features(x), d_ref.features(fake)
    pred_real = torch.sigmoid(d_ref.classify(feat_real))
    pred_fake = torch.sigmoid(d_ref.classify(feat_fake))
    err_g_lat = 1.0 * ((feat_fake - feat_real) ** 2).mean()
    err_g = 1.0 * bce(pred_fake, ones) + 40.0 * (fake - x).abs().mean() + err_g_lat
    opt_g.zero_grad()
    err_g.backward(retain_graph=True)
    opt_g.step()
    opt_d.zero_grad()
    pred_fake_d = torch.sigmoid(d_ref(fake.detach()))
    err_d = bce(pred_real, ones) + bce(pred_fake_d, zeros) + err_g_lat
    # The reference's backward also reaches G (whose step already ran); those gradients are
    # zeroed before G's next step, so only D's are taken here.
    err_d.backward(inputs=list(d_ref.parameters()))
    opt_d.step()

    losses = skip_train_step(state, x)
    assert losses["l_d"].item() == pytest.approx(err_d.item(), rel=1e-5)
    assert losses["l_g"].item() == pytest.approx(err_g.item(), rel=1e-5)
    for ours, theirs in ((state.generator, g_ref), (state.discriminator, d_ref)):
        for (name, param), expected in zip(
            ours.named_parameters(), theirs.parameters(), strict=True
        ):
            assert torch.allclose(param, expected, atol=1e-7), name


def test_train_step_follows_the_config_model():
    state = tiny_state()
    assert set(train_step(state, images(4))) == {"l_lat", "l_con", "l_adv", "l_g", "l_d"}
    assert history_columns(state.config)[:6] == ("epoch", "l_lat", "l_con", "l_adv", "l_g", "l_d")


def test_a_few_steps_reduce_the_contextual_loss():
    state = tiny_state(lr=2e-3)
    x = digit_images(8)
    first = skip_train_step(state, x)["l_con"].item()
    for _ in range(19):
        last = skip_train_step(state, x)["l_con"].item()
    assert last < 0.7 * first, (first, last)


def _first_step_d_loss_parts(state, x):
    """(BCE(D(x), 1) + BCE(D(x_hat), 0), L_lat) of the first step, worked out by hand."""
    with torch.no_grad():
        generator = copy.deepcopy(state.generator)
        discriminator = copy.deepcopy(state.discriminator)
        x_hat = generator(x)
        f_real, f_fake = discriminator.features(x), discriminator.features(x_hat)
        p_real = torch.sigmoid(discriminator.classify(f_real))
        p_fake = torch.sigmoid(discriminator.classify(f_fake))
        bce = -torch.log(p_real).mean() - torch.log(1 - p_fake).mean()
        return bce.item(), ((f_real - f_fake) ** 2).mean().item()


@pytest.mark.parametrize(("latent_share", "reinit"), [(0.5, False), (2.0, True)])
def test_reinit_rule_reads_the_references_err_d(latent_share, reinit):
    """The rule compares BCE + BCE + w_lat L_lat (the reference's err_d) with the threshold:
    a threshold between the BCE terms alone and the full sum must not fire."""
    x = images(4, seed=4)
    probe = tiny_state(w_lat=1e3)
    bce, l_lat = _first_step_d_loss_parts(probe, x)
    threshold = bce + latent_share * 1e3 * l_lat
    state = tiny_state(w_lat=1e3, d_reinit_threshold=threshold)
    row = run_epoch(state, x, batch_size=4, progress=False)
    assert row["d_reinits"] == int(reinit) and state.d_reinits == int(reinit)
    assert row["l_lat"] == pytest.approx(l_lat, rel=1e-4)


def test_reinit_draws_fresh_weights_and_keeps_adam_moments():
    state = tiny_state(d_reinit_threshold=1e9)  # every step's L_D is "below" it
    row = run_epoch(state, images(12, seed=5), batch_size=4, progress=False)
    assert row["d_reinits"] == 3 and state.d_reinits == 3
    assert all(s["step"].item() == 3 for s in state.optimizer_d.state.values())
    weight = state.discriminator.encoder.features[0].weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_precise_statistics_of_d_average_real_images_and_reconstructions():
    state = tiny_state()
    for _ in range(3):
        skip_train_step(state, images(4, seed=6))
    x = images(8, seed=7)
    generator, discriminator = state.generator, state.discriminator
    generator.train()
    recompute_batchnorm_statistics(discriminator, x, batch_size=4, reconstruct=generator)
    assert generator.training  # its mode is given back
    # Expected: the mean of the four batch means at D's first BatchNorm, in the order
    # real 0-3, reconstructed 0-3, real 4-7, reconstructed 4-7.
    expected = copy.deepcopy(discriminator)
    first_norm = next(m for m in expected.modules() if isinstance(m, nn.BatchNorm2d))
    means = []
    first_norm.register_forward_hook(lambda m, inputs, out: means.append(inputs[0].mean((0, 2, 3))))
    with torch.no_grad():
        reconstructor = copy.deepcopy(generator).eval()
        for batch in (x[:4], x[4:]):
            expected(batch)
            expected(reconstructor(batch))
    ours = next(m for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.allclose(ours.running_mean, torch.stack(means).mean(0), atol=1e-6)


# -- scoring ---------------------------------------------------------------------------------
def trained_scorer(score_lambda=0.9, channels=1):
    state = tiny_state(channels=channels)
    for _ in range(3):
        skip_train_step(state, images(4, channels, seed=8))
    return SkipAnomalyScorer(state.generator, state.discriminator, score_lambda, 2.0, 0.5, 1.0)


@pytest.mark.parametrize("score_lambda", [0.9, 0.25])
def test_score_is_lambda_reconstruction_plus_latent(score_lambda):
    scorer = trained_scorer(score_lambda).eval()
    x = images(5, seed=9)
    with torch.no_grad():
        generator = copy.deepcopy(scorer.generator).eval()
        discriminator = copy.deepcopy(scorer.discriminator).eval()
        x_hat = generator(x)
        rec = ((x - x_hat) ** 2).mean(dim=(1, 2, 3))
        lat = ((discriminator.features(x) - discriminator.features(x_hat)) ** 2).mean(1).flatten()
        expected = score_lambda * rec + (1 - score_lambda) * lat
        score, normalized, amap = scorer(x)
    assert torch.allclose(score, expected, rtol=1e-5, atol=1e-7)
    assert torch.allclose(normalized, (expected - 0.5) / (2.0 - 0.5), rtol=1e-5, atol=1e-6)
    assert amap.shape == (5, 16, 16)
    assert torch.equal(scorer.scores(x)[0], score)
    with torch.no_grad():
        assert torch.equal(scorer.reconstruct(x), x_hat)  # the image, not the first of a tuple
    # rec and lat differ, so a swapped or ignored lambda would fail the first check
    assert not torch.allclose(rec, lat)


def test_a_score_does_not_depend_on_the_batch():
    scorer = trained_scorer(channels=3)
    x = images(7, channels=3, seed=10)
    together = score_tensor(scorer, x, batch_size=7)[0]
    alone = score_tensor(scorer, x, batch_size=1)[0]
    assert together == pytest.approx(alone, rel=1e-5, abs=1e-7)
    # ... while the reference's batch statistics do make it depend on the batch.
    batch_mode = score_tensor(scorer, x, batch_size=7, bn_mode="batch")[0]
    assert batch_mode != pytest.approx(together, rel=1e-3)


# -- configuration ---------------------------------------------------------------------------
def test_w_con_default_is_per_model():
    assert DetectorConfig().setting("w_con") == 50.0
    assert DetectorConfig(model="skip-ganomaly").setting("w_con") == 40.0
    assert DetectorConfig(model="skip-ganomaly", w_con=50.0).setting("w_con") == 50.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"extra_layers": 1}, "extra-layers"),
        ({"score_metric": "l1"}, "score-metric"),
        ({"score_lambda": 1.5}, "score-lambda"),
        ({"model": "skipganomaly"}, "choose one of ganomaly, skip-ganomaly"),
    ],
)
def test_invalid_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        DetectorConfig(**{"model": "skip-ganomaly", **settings}).validate()


# -- torchrun --------------------------------------------------------------------------------
def test_ddp_step_equals_the_single_process_step():
    """The DDP path (one gloo process: averaging is the identity) updates both networks as the
    plain step does."""
    import torch.distributed as dist

    from ganomaly import distributed

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        x = images(4, seed=12)
        plain, wrapped = tiny_state(), tiny_state()
        wrapped.ddp = distributed.DDPModules(
            generator=nn.parallel.DistributedDataParallel(wrapped.generator),
            discriminator_passes=nn.parallel.DistributedDataParallel(
                distributed.SkipDiscriminatorPasses(wrapped.discriminator)
            ),
        )
        for _ in range(2):
            expected = skip_train_step(plain, x)
            got = skip_train_step(wrapped, x)
            assert got["l_d"].item() == pytest.approx(expected["l_d"].item(), rel=1e-5)
        for ours, theirs in (
            (wrapped.generator, plain.generator),
            (wrapped.discriminator, plain.discriminator),
        ):
            for (name, param), other in zip(
                ours.named_parameters(), theirs.parameters(), strict=True
            ):
                assert torch.allclose(param, other, atol=1e-6), name
    finally:
        dist.destroy_process_group()


def test_bad_image_size_is_refused():
    with pytest.raises(ValueError, match="too small"):
        UnetGenerator((15, 64), 1, 4)
