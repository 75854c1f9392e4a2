"""Network shapes for every supported size and the DCGAN initialisation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganomaly.model import (
    Decoder,
    Discriminator,
    Encoder,
    Generator,
    WholeMapConv2d,
    WholeMapConvTranspose2d,
    dcgan_init,
    pyramid_sizes,
)

SIZES = [(16, 16), (28, 28), (32, 32), (48, 48), (64, 64), (100, 60)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(size, channels):
    h, w = size
    generator = Generator(size, nz=10, channels=channels, ngf=4)
    discriminator = Discriminator(size, channels=channels, ngf=4)
    x = torch.randn(2, channels, h, w)
    x_hat, z, z_hat = generator(x)
    assert x_hat.shape == (2, channels, h, w)
    assert z.shape == z_hat.shape == (2, 10, 1, 1)
    assert discriminator(x).shape == (2,)
    assert x_hat.min() >= -1 and x_hat.max() <= 1  # Tanh output matches the [-1, 1] inputs


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((16, 16), [(16, 16), (8, 8), (4, 4)]),
        ((28, 28), [(28, 28), (14, 14), (7, 7)]),
        ((32, 32), [(32, 32), (16, 16), (8, 8), (4, 4)]),
        ((48, 48), [(48, 48), (24, 24), (12, 12), (6, 6)]),
        ((64, 64), [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]),
        ((100, 60), [(100, 60), (50, 30), (25, 15), (12, 7)]),
    ],
)
def test_pyramid_rule(size, expected):
    assert pyramid_sizes(*size) == expected


def test_reference_32x32_layout():
    # The reference: 1->64 (16x16), 64->128 (8x8), 128->256 (4x4), final 4x4 conv to nz.
    encoder = Encoder((32, 32), nz=100, channels=1, ngf=64)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 64, (4, 4)), (64, 128, (4, 4)), (128, 256, (4, 4)), (256, 100, (4, 4)),
    ]  # fmt: skip
    assert not any(c.bias is not None for c in convs)
    first_block = list(encoder.features.children())[:2]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in first_block)  # no BN on input layer
    decoder = Decoder((32, 32), nz=100, channels=1, ngf=64)
    deconvs = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in deconvs] == [
        (100, 256),
        (256, 128),
        (128, 64),
        (64, 1),
    ]
    assert Discriminator((32, 32), 1, 64).features(torch.zeros(2, 1, 32, 32)).shape == (
        2,
        256,
        4,
        4,
    )


def test_non_square_final_kernel():
    encoder = Encoder((100, 60), nz=8, channels=3, ngf=4)
    assert encoder.final.kernel_size == (12, 7)


def test_too_small_is_refused():
    with pytest.raises(ValueError, match=">= 16"):
        pyramid_sizes(15, 32)


def test_dcgan_init_reaches_nested_layers():
    torch.manual_seed(0)
    generator = Generator((64, 64), nz=100, channels=3, ngf=64)
    generator.apply(dcgan_init)
    convs = [m for m in generator.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    conv_weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(conv_weights.mean().item()) < 1e-3
    assert conv_weights.std().item() == pytest.approx(0.02, rel=0.05)
    bns = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight for m in bns])
    assert weights.mean().item() == pytest.approx(1.0, abs=0.01)
    assert weights.std().item() == pytest.approx(0.02, rel=0.2)
    assert all(torch.all(m.bias == 0) for m in bns)


@pytest.mark.parametrize("map_size", [(4, 4), (7, 7), (12, 7)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_whole_map_layers_equal_the_convolutions_they_replace(map_size, memory_format):
    """The latent layers run as matrix multiplies: same outputs and gradients as the conv and
    transposed conv they stand for, in either memory layout."""
    torch.manual_seed(0)
    conv = WholeMapConv2d(16, 10, map_size).to(memory_format=memory_format)
    deconv = WholeMapConvTranspose2d(10, 16, map_size).to(memory_format=memory_format)
    x = torch.randn(5, 16, *map_size).contiguous(memory_format=memory_format).requires_grad_()
    z = torch.randn(5, 10, 1, 1).requires_grad_()
    outputs = (conv(x), deconv(z))
    expected = (F.conv2d(x, conv.weight), F.conv_transpose2d(z, deconv.weight))
    for out, ref in zip(outputs, expected, strict=True):
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        upstream = torch.randn_like(ref)
        grads = torch.autograd.grad(
            out, [x, z, conv.weight, deconv.weight], upstream, allow_unused=True
        )
        ref_grads = torch.autograd.grad(
            ref, [x, z, conv.weight, deconv.weight], upstream, allow_unused=True
        )
        for grad, ref_grad in zip(grads, ref_grads, strict=True):
            assert (grad is None) == (ref_grad is None)
            if grad is not None:
                torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_whole_map_conv_on_a_larger_map_is_an_ordinary_conv():
    conv = WholeMapConv2d(3, 2, (4, 4))
    x = torch.randn(2, 3, 6, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight))  # (2, 2, 3, 2), not 1x1
