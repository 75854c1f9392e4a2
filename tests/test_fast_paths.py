"""The speed-ups are exact: the training step and the scoring path equal plain reference code.

Training (ganomaly/training.py) runs channels_last networks and batches, fused Adam, latent
layers as matrix multiplies, one D pass each over x and x_hat serving both losses, and
backward passes restricted to the network each loss trains. The reference below is the
textbook step: contiguous NCHW, `Adam(foreach=False)`, G step first, then D's passes
recomputed on x and x_hat.detach() for the D step, D's gradients zeroed right before the D
backward. Scoring (ganomaly/scoring.py) runs under inference_mode on channels_last batches of
256; the reference is one plain eval-mode forward over all the images.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from ganomaly.config import DetectorConfig
from ganomaly.model import Discriminator, Generator, make_networks
from ganomaly.optim import FusedAdam
from ganomaly.scoring import AnomalyScorer, score_tensor
from ganomaly.training import TrainState, make_optimizers, train_step, use_channels_last

SIZE, NZ, NGF, BATCH = (16, 16), 16, 8, 8
LR, BETAS, ADAM_EPS = 2e-4, (0.5, 0.999), 1e-8
W_ADV, W_CON, W_ENC = 1.0, 50.0, 1.0


def close(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str, atol: float = 1e-7
) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def fast_state(seed: int) -> TrainState:
    """The state `train()` trains: channels_last networks, fused Adam."""
    config = DetectorConfig(  # fp32, as the plain float32 step it is compared with
        image_size="16", nz=NZ, ngf=NGF, batch_size=BATCH, progress=False, precision="fp32"
    )
    generator, discriminator = make_networks(SIZE, 1, NZ, NGF, 0, seed)
    state = TrainState(
        generator, discriminator, *make_optimizers(generator, discriminator, config), config
    )
    use_channels_last(state)
    return state


def reference_step(
    generator: Generator, discriminator: Discriminator, x: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One plain GANomaly step; returns the losses and every parameter's gradient."""
    optimizer_g, optimizer_d = (
        torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS, eps=ADAM_EPS, foreach=False)
        for net in (generator, discriminator)
    )
    x_hat, z, z_hat = generator(x)
    l_adv = (discriminator.features(x) - discriminator.features(x_hat)).pow(2).mean()
    l_con = (x - x_hat).abs().mean()
    l_enc = (z - z_hat).pow(2).mean()
    l_g = W_ADV * l_adv + W_CON * l_con + W_ENC * l_enc
    optimizer_g.zero_grad()
    l_g.backward()
    optimizer_g.step()
    optimizer_d.zero_grad()  # L_adv's backward left gradients in D: they must not count
    p_real = torch.sigmoid(discriminator(x))
    p_fake = torch.sigmoid(discriminator(x_hat.detach()))
    l_d = 0.5 * (
        F.binary_cross_entropy(p_real, torch.ones_like(p_real))
        + F.binary_cross_entropy(p_fake, torch.zeros_like(p_fake))
    )
    l_d.backward()
    optimizer_d.step()
    losses = {"l_adv": l_adv, "l_con": l_con, "l_enc": l_enc, "l_g": l_g, "l_d": l_d}
    grads = {f"g.{n}": p.grad for n, p in generator.named_parameters()}
    grads.update({f"d.{n}": p.grad for n, p in discriminator.named_parameters()})
    return {k: v.detach() for k, v in losses.items()}, grads


def all_parameters(generator: nn.Module, discriminator: nn.Module) -> dict[str, torch.Tensor]:
    tensors = {f"g.{n}": p for n, p in generator.named_parameters()}
    tensors.update({f"d.{n}": p for n, p in discriminator.named_parameters()})
    return tensors


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_training_step_equals_the_plain_step(seed: int) -> None:
    state = fast_state(seed)
    ref_g = copy.deepcopy(state.generator).to(memory_format=torch.contiguous_format)
    ref_d = copy.deepcopy(state.discriminator).to(memory_format=torch.contiguous_format)
    # The fast paths really are in use, and the reference really is plain.
    conv = state.generator.encoder1.features[2].weight  # 8 -> 16 channels
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert ref_g.encoder1.features[2].weight.is_contiguous()
    assert isinstance(state.optimizer_g, FusedAdam) and isinstance(state.optimizer_d, FusedAdam)

    x = torch.rand(BATCH, 1, *SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    losses = train_step(state, x.contiguous(memory_format=torch.channels_last))
    expected_losses, expected_grads = reference_step(ref_g, ref_d, x)

    for name, value in expected_losses.items():
        close(losses[name], value, 1e-4, name)
    fast = all_parameters(state.generator, state.discriminator)
    expected = all_parameters(ref_g, ref_d)
    for name, parameter in fast.items():
        assert parameter.grad is not None, name
        # A gradient element is a sum of terms that can cancel to ~0, where a relative error
        # means nothing: the absolute error is measured against the tensor's largest element.
        scale = expected_grads[name].abs().max().item()
        close(parameter.grad, expected_grads[name], 1e-4, f"gradient of {name}", 1e-4 * scale)
        # Adam's first step moves each weight by lr * g / (|g| + eps): where |g| is as small
        # as eps (gradients that cancel to ~1e-8), float rounding of g (checked just above)
        # changes the step by up to lr * |error of g| / eps. Everywhere else: rtol 1e-4.
        step_rounding = LR * (parameter.grad - expected_grads[name]).abs() / ADAM_EPS
        error = (parameter.detach() - expected[name].detach()).abs()
        bound = 1e-4 * expected[name].detach().abs() + step_rounding + 1e-7
        assert (error <= bound).all(), f"{name}: off by up to {error.max().item():.3g}"
    # G ran one forward in both, so its BatchNorm running statistics agree as well.
    for (name, buffer), ref_buffer in zip(
        state.generator.named_buffers(), ref_g.buffers(), strict=True
    ):
        close(buffer.float(), ref_buffer.float(), 1e-4, name)


def test_the_generator_loss_puts_no_gradient_into_the_discriminator() -> None:
    """The L_G backward is restricted to G's parameters, so D's gradients are computed once
    per step (by the L_D backward), never for L_G only to be thrown away."""
    state = fast_state(0)
    computed = {name: 0 for name, _ in state.discriminator.named_parameters()}
    for name, parameter in state.discriminator.named_parameters():

        def count(grad: torch.Tensor, name: str = name) -> None:
            computed[name] += 1

        parameter.register_hook(count)
    x = (torch.rand(BATCH, 1, *SIZE) * 2 - 1).contiguous(memory_format=torch.channels_last)
    train_step(state, x)
    assert computed == dict.fromkeys(computed, 1)
    assert all(p.requires_grad for p in state.discriminator.parameters())  # unfrozen after


def trained_generator(seed: int = 0) -> Generator:
    """A generator whose BatchNorm running statistics are far from their 0 / 1 start, so eval
    mode and batch statistics give visibly different scores."""
    generator, _ = make_networks(SIZE, 1, NZ, NGF, 0, seed)
    generator.train()
    with torch.no_grad():
        for step in range(20):
            generator(torch.rand(32, 1, *SIZE, generator=torch.Generator().manual_seed(step)) - 1)
    return generator


def plain_maps(x: torch.Tensor, x_hat: torch.Tensor, sigma: float) -> np.ndarray:
    """Channel mean of |x - x_hat|, Gaussian-blurred by scipy (mirror = torch's reflect pad)."""
    amap = (x - x_hat).abs().mean(1).numpy().astype(np.float64)
    radius = max(1, int(np.ceil(3 * sigma)))
    return gaussian_filter(amap, sigma=(0, sigma, sigma), mode="mirror", truncate=radius / sigma)


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_scoring_path_equals_a_plain_eval_forward(metric: str) -> None:
    generator = trained_generator()
    reference = copy.deepcopy(generator).eval()
    generator.to(memory_format=torch.channels_last)  # as training leaves it
    threshold, median, sigma = 0.3, 0.1, 2.0
    scorer = AnomalyScorer(generator, metric, threshold, median, sigma)
    images = torch.rand(300, 1, *SIZE, generator=torch.Generator().manual_seed(7)) * 2 - 1

    scores, normalized, maps = score_tensor(scorer, images, batch_size=256, with_maps=True)
    scores_only, normalized_only, no_maps = score_tensor(scorer, images, batch_size=256)

    with torch.no_grad():
        x_hat, z, z_hat = reference(images)  # all 300 images in one plain NCHW batch
    diff = (z - z_hat).flatten(1)
    expected = (diff.pow(2) if metric == "l2" else diff.abs()).mean(1).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(normalized, (expected - median) / (threshold - median), rtol=1e-5)
    assert maps is not None and no_maps is None
    np.testing.assert_allclose(maps, plain_maps(images, x_hat, sigma), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(scores_only, scores)  # the map-free path scores the same
    np.testing.assert_array_equal(normalized_only, normalized)


def test_batch_statistics_scoring_equals_plain_train_mode_batches() -> None:
    generator = trained_generator()
    reference = copy.deepcopy(generator).train()
    generator.to(memory_format=torch.channels_last)
    stored = {k: v.clone() for k, v in generator.state_dict().items()}
    scorer = AnomalyScorer(generator, "l2", 1.0, 0.0, 0.0)
    images = torch.rand(300, 1, *SIZE, generator=torch.Generator().manual_seed(8)) * 2 - 1

    scores = score_tensor(scorer, images, batch_size=256, bn_mode="batch")[0]

    expected = []
    with torch.no_grad():
        for batch in images.split(256):  # each batch normalised by its own statistics
            _, z, z_hat = reference(batch)
            expected.append((z - z_hat).flatten(1).pow(2).mean(1))
    np.testing.assert_allclose(scores, torch.cat(expected).numpy(), rtol=1e-5, atol=1e-9)
    after = generator.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stored.items())  # statistics untouched


def test_the_ddp_step_equals_the_plain_step(tmp_path) -> None:
    """`_ddp_train_step` (through DistributedDataParallel, in a 1-process gloo group) and the
    plain `train_step`, from the same state on the same batch: same losses, gradients and
    parameters."""
    import torch.distributed as dist

    from ganomaly.distributed import DDPModules, DiscriminatorPasses

    plain = fast_state(3)
    ddp = fast_state(3)
    x = torch.rand(BATCH, 1, *SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        ddp.ddp = DDPModules(
            generator=nn.parallel.DistributedDataParallel(ddp.generator),
            discriminator_passes=nn.parallel.DistributedDataParallel(
                DiscriminatorPasses(ddp.discriminator)
            ),
        )
        ddp_losses = train_step(ddp, x)
    finally:
        dist.destroy_process_group()
    plain_losses = train_step(plain, x)
    for name, value in plain_losses.items():
        close(ddp_losses[name], value, 1e-4, name)
    expected = all_parameters(plain.generator, plain.discriminator)
    for name, parameter in all_parameters(ddp.generator, ddp.discriminator).items():
        reference = expected[name]
        assert parameter.grad is not None and reference.grad is not None, name
        scale = reference.grad.abs().max().item()
        close(parameter.grad, reference.grad, 1e-4, f"gradient of {name}", 1e-4 * scale)
        step_rounding = LR * (parameter.grad - reference.grad).abs() / ADAM_EPS
        error = (parameter.detach() - reference.detach()).abs()
        assert (error <= 1e-4 * reference.detach().abs() + step_rounding + 1e-7).all(), name
