"""The GANomaly networks: encoder, decoder, generator (E1 -> decoder -> E2) and discriminator;
Skip-GANomaly's U-Net generator and discriminator at the end.

DCGAN blocks as in the authors' reference code, generalised to any H x W >= 16 (square or
not) by one pyramid rule, so no input is ever padded:

- the encoder's first conv (4x4, stride 2, padding 1) halves the size (floor), then it keeps
  halving while min(h, w) >= 8, doubling the channels each time;
- the final conv's kernel is the last (h, w), so the latent is (B, nz, 1, 1);
- the decoder mirrors every step with transposed convs whose `output_padding` restores the
  recorded odd sizes, so x_hat has exactly the input's H x W.

    32x32   -> 16 -> 8 -> 4, final kernel 4x4 (the reference)
    28x28   -> 14 -> 7,      final kernel 7x7
    100x60  -> 50x30 -> 25x15 -> 12x7, final kernel 12x7

References:
    Akcay, Atapour-Abarghouei, Breckon. GANomaly: Semi-Supervised Anomaly Detection via
    Adversarial Training. ACCV 2018. arXiv:1805.06725
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_IMAGE_SIZE = 16


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes the encoder passes through, input first, latent-kernel size last.

    >>> pyramid_sizes(28, 28)
    [(28, 28), (14, 14), (7, 7)]
    """
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {height}x{width} is too small: both sides must be >= 16")
    sizes = [(height, width), (height // 2, width // 2)]
    while min(sizes[-1]) >= 8:
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


def _down(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


def _extra(channels: int, activation: nn.Module) -> list[nn.Module]:
    return [
        nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(channels),
        activation,
    ]


class WholeMapConv2d(nn.Conv2d):
    """A conv whose kernel covers its whole (h, w) input, giving (B, out, 1, 1): a fully
    connected layer, so it runs as one matrix multiply. Same numbers as the conv (checked in
    tests/test_model.py), but oneDNN runs this shape far below the CPU's peak: 256x4x4 -> 100
    at batch 64 takes 5.0 ms forward and backward as a conv, 1.0 ms as a matmul."""

    def __init__(self, in_channels: int, out_channels: int, map_size: tuple[int, int]) -> None:
        super().__init__(in_channels, out_channels, map_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != self.weight.shape[-2:]:
            return super().forward(x)
        # Flattened in (h, w, c) order: a view of channels_last tensors, i.e. no copy in training.
        weight = self.weight.permute(0, 2, 3, 1).flatten(1)
        return F.linear(x.permute(0, 2, 3, 1).flatten(1), weight)[:, :, None, None]


class WholeMapConvTranspose2d(nn.ConvTranspose2d):
    """The transposed conv from a (B, in, 1, 1) latent to a (B, out, h, w) map: one matrix
    multiply, for the same reason as WholeMapConv2d (5.0 ms -> 0.9 ms for 100 -> 256x4x4)."""

    def __init__(self, in_channels: int, out_channels: int, map_size: tuple[int, int]) -> None:
        super().__init__(in_channels, out_channels, map_size, bias=False)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.shape[-2:] != (1, 1) or output_size is not None:
            return super().forward(x, output_size)
        _, channels, height, width = self.weight.shape
        maps = x.flatten(1) @ self.weight.permute(0, 2, 3, 1).flatten(1)  # (B, h * w * out)
        return maps.unflatten(1, (height, width, channels)).permute(0, 3, 1, 2)


class Encoder(nn.Module):
    """Image (B, C, H, W) -> latent (B, nz, 1, 1); `features` is everything before the last conv."""

    def __init__(
        self, image_size: tuple[int, int], nz: int, channels: int, ngf: int, extra_layers: int = 0
    ) -> None:
        super().__init__()
        sizes = pyramid_sizes(*image_size)
        layers = _down(channels, ngf, batch_norm=False)  # no BN on the input layer (DCGAN)
        for _ in range(extra_layers):
            layers += _extra(ngf, nn.LeakyReLU(0.2, inplace=True))
        width = ngf
        for _ in sizes[2:]:
            layers += _down(width, width * 2, batch_norm=True)
            width *= 2
        self.features = nn.Sequential(*layers)  # (B, width, h, w) with (h, w) = sizes[-1]
        self.final = WholeMapConv2d(width, nz, sizes[-1])  # (B, nz, 1, 1)
        self.feature_channels = width

    def forward(self, x: Tensor) -> Tensor:
        return self.final(self.features(x))


class Decoder(nn.Module):
    """Latent (B, nz, 1, 1) -> image (B, C, H, W) in [-1, 1]: the encoder's mirror image."""

    def __init__(
        self, image_size: tuple[int, int], nz: int, channels: int, ngf: int, extra_layers: int = 0
    ) -> None:
        super().__init__()
        sizes = pyramid_sizes(*image_size)
        width = ngf * 2 ** (len(sizes) - 2)
        layers: list[nn.Module] = [
            WholeMapConvTranspose2d(nz, width, sizes[-1]),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        # Walk the pyramid back up; output_padding (0 or 1) restores sizes that were odd.
        for (h_in, w_in), (h_out, w_out) in zip(sizes[:1:-1], sizes[-2:0:-1], strict=True):
            padding = (h_out - 2 * h_in, w_out - 2 * w_in)
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, output_padding=padding, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        for _ in range(extra_layers):
            layers += _extra(width, nn.ReLU(inplace=True))
        (h_in, w_in), (h_out, w_out) = sizes[1], sizes[0]
        padding = (h_out - 2 * h_in, w_out - 2 * w_in)
        layers += [
            nn.ConvTranspose2d(width, channels, 4, 2, 1, output_padding=padding, bias=False),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class Generator(nn.Module):
    """G = E1 -> decoder -> E2. Returns (x_hat, z, z_hat); E1 and E2 do not share weights."""

    def __init__(
        self, image_size: tuple[int, int], nz: int, channels: int, ngf: int, extra_layers: int = 0
    ) -> None:
        super().__init__()
        self.encoder1 = Encoder(image_size, nz, channels, ngf, extra_layers)
        self.decoder = Decoder(image_size, nz, channels, ngf, extra_layers)
        self.encoder2 = Encoder(image_size, nz, channels, ngf, extra_layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.encoder1(x)  # (B, nz, 1, 1)
        x_hat = self.decoder(z)  # (B, C, H, W)
        z_hat = self.encoder2(x_hat)  # (B, nz, 1, 1)
        return x_hat, z, z_hat


class Discriminator(nn.Module):
    """An encoder with nz=1: `features(x)` for feature matching, `classify(f)` -> logits (B,)."""

    def __init__(
        self, image_size: tuple[int, int], channels: int, ngf: int, extra_layers: int = 0
    ) -> None:
        super().__init__()
        self.encoder = Encoder(image_size, 1, channels, ngf, extra_layers)

    def features(self, x: Tensor) -> Tensor:
        return self.encoder.features(x)  # (B, K, h, w), e.g. 256x4x4 at 32x32

    def classify(self, features: Tensor) -> Tensor:
        # Logits, not probabilities: BCE-with-logits equals the reference's sigmoid + BCE but
        # stays finite when D saturates, which is exactly when the re-init rule is tested.
        return self.encoder.final(features).flatten()

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation, applied with `module.apply(dcgan_init)` so it reaches every layer."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:  # Skip-GANomaly's output layer; draws no random numbers
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def make_networks(
    image_size: tuple[int, int],
    channels: int,
    nz: int,
    ngf: int,
    extra_layers: int,
    seed: int | None = None,
) -> tuple[Generator, Discriminator]:
    """Build and DCGAN-initialise both networks.

    With `seed`, the weights are drawn from a CPU generator seeded with it, and the caller's
    global RNG state is left as it was; without, they are drawn from torch's global RNG (the
    estimator seeds it, in a forked state, so D's later re-inits continue the same stream).
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return make_networks(image_size, channels, nz, ngf, extra_layers)
    generator = Generator(image_size, nz, channels, ngf, extra_layers)
    discriminator = Discriminator(image_size, channels, ngf, extra_layers)
    generator.apply(dcgan_init)
    discriminator.apply(dcgan_init)
    return generator, discriminator


# -- Skip-GANomaly ---------------------------------------------------------------------------
#
# Akcay, Atapour-Abarghouei, Breckon. Skip-GANomaly: Skip Connected and Adversarially Trained
# Encoder-Decoder Anomaly Detection. IJCNN 2019. arXiv:1901.08954
#
# As in the authors' code (samet-akcay/skip-ganomaly, lib/models/networks.py: UnetGenerator,
# UnetSkipConnectionBlock, BasicDiscriminator), generalised to any H x W >= 16 by one rule:
# the U-Net halves (conv 4x4/2, padding 1, floor) until the shorter side is 1, which is the
# reference's int(log2(isize)) levels for a square image, and every transposed conv is given
# the recorded size, so odd sizes come back exactly and each skip meets a map of its own size.
#
#     32x32   -> 16 -> 8 -> 4 -> 2 -> 1                    (5 levels, the reference)
#     28x28   -> 14 -> 7 -> 3 -> 1                         (4 levels)
#     100x60  -> 50x30 -> 25x15 -> 12x7 -> 6x3 -> 3x1      (5 levels)


def unet_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes of the U-Net's encoder, input first, bottleneck last.

    >>> unet_sizes(28, 28)
    [(28, 28), (14, 14), (7, 7), (3, 3), (1, 1)]
    """
    if min(height, width) < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {height}x{width} is too small: both sides must be >= 16")
    sizes = [(height, width)]
    while min(sizes[-1]) >= 2:
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


class UnetGenerator(nn.Module):
    """The Skip-GANomaly generator: a U-Net, image (B, C, H, W) -> x_hat (B, C, H, W) in [-1, 1].

    Level k (0 = outermost) halves the size and maps widths[k] -> widths[k + 1] channels, with
    widths = [C, ngf, 2 ngf, 4 ngf, 8 ngf, 8 ngf, ...] (capped at 8 ngf, as the reference):

        down_k = [LeakyReLU(0.2) unless k = 0] conv 4x4/2 [BatchNorm unless outermost/innermost]
        up_k   = ReLU, conv-transpose 4x4/2, BatchNorm (outermost: with bias, then Tanh)

    and up_k reads the concatenation [down_k's output, up_{k+1}'s output] (the innermost up
    reads the bottleneck alone): every encoder map reaches the decoder by its skip connection.
    Convs have no bias where BatchNorm follows, as the reference; no dropout (its default).
    """

    def __init__(self, image_size: tuple[int, int], channels: int, ngf: int) -> None:
        super().__init__()
        sizes = unet_sizes(*image_size)
        depth = len(sizes) - 1
        widths = [channels] + [ngf * min(2**k, 8) for k in range(depth)]
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for k in range(depth):
            outermost, innermost = k == 0, k == depth - 1
            # Not in place: the skip keeps this block's input. (The reference's in-place
            # LeakyReLU activates the skip too, which changes nothing: the decoder's first
            # step is a ReLU, and ReLU(LeakyReLU(a)) = ReLU(a).)
            down: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
            down.append(nn.Conv2d(widths[k], widths[k + 1], 4, 2, 1, bias=False))
            if not (outermost or innermost):
                down.append(nn.BatchNorm2d(widths[k + 1]))
            self.down.append(nn.Sequential(*down))

            (h_in, w_in), (h_out, w_out) = sizes[k + 1], sizes[k]
            padding = (h_out - 2 * h_in, w_out - 2 * w_in)  # 0 or 1: restores odd sizes
            c_in = widths[k + 1] if innermost else 2 * widths[k + 1]
            up: list[nn.Module] = [
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(
                    c_in, widths[k], 4, 2, 1, output_padding=padding, bias=outermost
                ),
            ]
            up.append(nn.Tanh() if outermost else nn.BatchNorm2d(widths[k]))
            self.up.append(nn.Sequential(*up))

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for down in self.down:
            h = down(h)  # level k: (B, widths[k + 1], sizes[k + 1])
            skips.append(h)
        h = self.up[-1](h)  # the bottleneck, up one level
        for k in range(len(self.up) - 2, -1, -1):
            h = self.up[k](torch.cat([skips[k], h], 1))  # (B, widths[k], sizes[k])
        return h


class SkipDiscriminator(nn.Module):
    """The Skip-GANomaly discriminator (the reference's BasicDiscriminator): a DCGAN encoder
    to (B, nz, 1, 1) features, then a 3x3 conv to one logit.

    `features(x)` is the whole encoder, final conv included, the latent whose L2 distance
    between x and x_hat is the latent loss and half the anomaly score. The classifier is
    Conv2d(nz, 1, 3, padding=1) on the 1x1 map, as the reference (only its centre tap ever
    sees data).
    """

    def __init__(self, image_size: tuple[int, int], nz: int, channels: int, ngf: int) -> None:
        super().__init__()
        self.encoder = Encoder(image_size, nz, channels, ngf)
        self.classifier = nn.Conv2d(nz, 1, 3, 1, 1, bias=False)

    def features(self, x: Tensor) -> Tensor:
        return self.encoder(x)  # (B, nz, 1, 1)

    def classify(self, features: Tensor) -> Tensor:
        # Logits; the reference's sigmoid lives in the losses (BCE-with-logits), as in
        # Discriminator.classify.
        return self.classifier(features).flatten()

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


def make_skip_networks(
    image_size: tuple[int, int], channels: int, nz: int, ngf: int, seed: int | None = None
) -> tuple[UnetGenerator, SkipDiscriminator]:
    """Build and initialise Skip-GANomaly's networks (the reference's
    `init_weights(..., 'normal')`: conv weights N(0, 0.02), biases 0, BatchNorm N(1, 0.02) / 0);
    `seed` as in `make_networks`."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return make_skip_networks(image_size, channels, nz, ngf)
    generator = UnetGenerator(image_size, channels, ngf)
    discriminator = SkipDiscriminator(image_size, nz, channels, ngf)
    generator.apply(dcgan_init)
    discriminator.apply(dcgan_init)
    return generator, discriminator


def build_networks(
    model: str,
    image_size: tuple[int, int],
    channels: int,
    nz: int,
    ngf: int,
    extra_layers: int,
    seed: int | None = None,
) -> tuple[Generator | UnetGenerator, Discriminator | SkipDiscriminator]:
    """(generator, discriminator) of `model` ("ganomaly" or "skip-ganomaly"), initialised."""
    if model == "skip-ganomaly":
        return make_skip_networks(image_size, channels, nz, ngf, seed)
    return make_networks(image_size, channels, nz, ngf, extra_layers, seed)
