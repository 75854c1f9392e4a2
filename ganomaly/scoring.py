"""Scores, normalisation and threshold: one definition for the CLI, the API, export and server.

score            = mean_j (z_j - z_hat_j)^2   (or |.| with score_metric="l1")
                   skip-ganomaly: lambda mean (x - x_hat)^2 + (1 - lambda) mean (f(x) - f(x_hat))^2
threshold        = np.quantile(val_normal_scores, q, method="higher")   (or a fixed value)
normalized_score = (score - m) / (threshold - m),  m = median(val_normal_scores)
is_anomaly       = score > threshold
anomaly map      = Gaussian-smoothed channel mean of |x - x_hat| at the model's resolution
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganomaly.config import DEFAULT_THRESHOLD_QUANTILE, DetectorConfig
from ganomaly.losses import latent_score, skip_anomaly_score
from ganomaly.model import Generator, SkipDiscriminator, UnetGenerator


def gaussian_kernel(sigma: float) -> Tensor:
    """1-D normalised Gaussian, radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def smooth_maps(amap: Tensor, kernel: Tensor) -> Tensor:
    """Separable blur of (B, 1, H, W) maps with a 1-D `kernel` (see `gaussian_kernel`)."""
    k = kernel.numel()
    radius = k // 2
    # Reflect padding needs radius < size; replicate is the safe fallback for tiny maps.
    mode = "reflect" if min(amap.shape[-2:]) > radius else "replicate"
    amap = F.pad(amap, (radius, radius, 0, 0), mode=mode)
    amap = F.conv2d(amap, kernel.view(1, 1, 1, k))
    amap = F.pad(amap, (0, 0, radius, radius), mode=mode)
    return F.conv2d(amap, kernel.view(1, 1, k, 1))


class ScorerBase(nn.Module):
    """What every model's scorer shares: the saved normalisation and the map smoothing.

    A scorer maps preprocessed images (B, C, H, W) in [-1, 1] to (score, normalized_score,
    anomaly_map) in `forward` and to (score, normalized_score) in `scores`; it is what `export`
    writes, so exported models score exactly as the library does.
    """

    def __init__(self, threshold: float, median: float, sigma: float) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("median", torch.tensor(float(median)))
        self.register_buffer("scale", torch.tensor(normalization_scale(threshold, median)))
        self.sigma = float(sigma)
        self.threshold: Tensor
        self.median: Tensor
        self.scale: Tensor
        self.kernel: Tensor
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else torch.ones(1))

    def smooth(self, amap: Tensor) -> Tensor:
        """Separable Gaussian blur of (B, 1, H, W) maps, reflect-padded so edges are not dimmed."""
        if self.sigma <= 0:
            return amap
        return smooth_maps(amap, self.kernel)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(score, normalized_score) alone, without the anomaly map."""
        raise NotImplementedError

    def reconstruct(self, x: Tensor) -> Tensor:
        """x_hat (B, C, H, W), whatever the model's generator returns besides it."""
        raise NotImplementedError

    def normalize(self, score: Tensor) -> Tensor:
        """(score - median) / (threshold - median)."""
        return (score - self.median) / self.scale

    def anomaly_map(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Smoothed channel mean of |x - x_hat|, (B, H, W)."""
        amap = (x - x_hat).abs().mean(1, keepdim=True)  # (B, 1, H, W)
        return self.smooth(amap)[:, 0]


class AnomalyScorer(ScorerBase):
    """GANomaly: score = the latent error between z = E1(x) and z_hat = E2(x_hat)."""

    def __init__(
        self, generator: Generator, metric: str, threshold: float, median: float, sigma: float
    ) -> None:
        super().__init__(threshold, median, sigma)
        # channels_last weights to match the channels_last batches of `score_tensor`: oneDNN
        # and cuDNN then run the convolutions without reordering weights or activations.
        self.generator = generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.metric = metric

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_hat, z, z_hat = self.generator(x)
        score = latent_score(z, z_hat, self.metric)  # (B,)
        return score, self.normalize(score), self.anomaly_map(x, x_hat)

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(score, normalized_score) alone: E1, decoder and E2, no anomaly map to compute."""
        _, z, z_hat = self.generator(x)
        score = latent_score(z, z_hat, self.metric)  # (B,)
        return score, self.normalize(score)

    def reconstruct(self, x: Tensor) -> Tensor:
        """x_hat (B, C, H, W): the generator's first output."""
        return self.generator(x)[0]


class SkipAnomalyScorer(ScorerBase):
    """Skip-GANomaly: score = lambda * mean (x - x_hat)^2 + (1 - lambda) * mean (f(x) - f(x_hat))^2
    with f = D's features, so the discriminator is part of the scoring model.

    The reference min-max scales these scores over the test set; we never do (a score must not
    depend on other images): normalisation is the validation median and threshold, as GANomaly's.
    """

    def __init__(
        self,
        generator: UnetGenerator,
        discriminator: SkipDiscriminator,
        score_lambda: float,
        threshold: float,
        median: float,
        sigma: float,
    ) -> None:
        super().__init__(threshold, median, sigma)
        # channels_last, as AnomalyScorer
        self.generator = generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.discriminator = discriminator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.score_lambda = float(score_lambda)

    def _score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_hat = self.generator(x)  # (B, C, H, W)
        features_real = self.discriminator.features(x)  # (B, nz, 1, 1)
        features_fake = self.discriminator.features(x_hat)
        score = skip_anomaly_score(x, x_hat, features_real, features_fake, self.score_lambda)
        return score, x_hat

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        score, x_hat = self._score(x)
        return score, self.normalize(score), self.anomaly_map(x, x_hat)

    def scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(score, normalized_score) alone, without the anomaly map."""
        score, _ = self._score(x)
        return score, self.normalize(score)

    def reconstruct(self, x: Tensor) -> Tensor:
        """x_hat (B, C, H, W): the U-Net's output."""
        return self.generator(x)


def normalization_scale(threshold: float, median: float) -> float:
    """threshold - median, kept positive so a degenerate validation set cannot divide by 0."""
    scale = float(threshold) - float(median)
    return scale if scale > 0 else max(abs(float(median)) * 1e-6, 1e-12)


@dataclass
class ThresholdFit:
    threshold: float
    median: float
    n_val: int
    quantile: float | None  # None when the threshold was given as a fixed value
    warnings: list[str]


def fit_threshold(
    val_scores: np.ndarray, quantile: float | None, fixed: float | None
) -> ThresholdFit:
    """The threshold and normalisation statistics from validation normal scores: `fixed`
    when given, else their `quantile` (None: DEFAULT_THRESHOLD_QUANTILE)."""
    scores = np.asarray(val_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no validation images: raise --val-fraction or add training images")
    notes = []
    median = float(np.median(scores))
    if fixed is not None:
        threshold, q = float(fixed), None
    else:
        quantile = DEFAULT_THRESHOLD_QUANTILE if quantile is None else quantile
        threshold, q = float(np.quantile(scores, quantile, method="higher")), quantile
        if quantile < 1.0 and scores.size < 1.0 / (1.0 - quantile):
            # The chance that a new normal image scores above the largest of n is 1 / (n + 1).
            notes.append(
                f"only {scores.size} validation images: the {quantile:g} quantile is simply "
                f"their maximum ({threshold:.4g}), so about 1 in {scores.size + 1} normal "
                f"images will be flagged, not 1 in {round(1 / (1 - quantile))}; hold out more "
                "(--val-fraction), add labelled validation images (--val-dir), or set "
                "--threshold"
            )
    if threshold <= median:
        notes.append("threshold <= median of validation scores: normalized scores are degenerate")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return ThresholdFit(threshold, median, int(scores.size), q, notes)


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Score with BatchNorm batch statistics (the reference's behaviour) without changing
    the stored running statistics."""
    saved = {
        k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k
    }
    was_training = module.training
    module.train()
    try:
        yield
    finally:
        module.load_state_dict(saved, strict=False)
        module.train(was_training)


@torch.inference_mode()
def score_tensor(
    scorer: ScorerBase,
    images: Tensor,
    batch_size: int = 256,
    bn_mode: str = "eval",
    with_maps: bool = False,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Score preprocessed images in batches -> (scores, normalized, maps or None)."""
    device = device or next(scorer.parameters()).device
    scorer.eval()
    scores, normalized, maps = [], [], []
    context = batch_statistics(scorer) if bn_mode == "batch" else contextlib.nullcontext()
    if device.type == "cuda" and images.device.type == "cpu" and not images.is_pinned():
        images = images.pin_memory()  # page-locked: the copies below overlap with compute
    with context:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device, non_blocking=True)
            # channels_last: the layout oneDNN / cuDNN convolutions are fastest on
            x = x.contiguous(memory_format=torch.channels_last)
            if with_maps:
                s, n, m = scorer(x)
                maps.append(m.float().cpu())
            else:
                s, n = scorer.scores(x)
            scores.append(s.float().cpu())
            normalized.append(n.float().cpu())
    if not scores:
        empty = np.zeros(0, dtype=np.float32)
        return empty, empty, (np.zeros((0, *images.shape[-2:]), np.float32) if with_maps else None)
    return (
        torch.cat(scores).numpy(),
        torch.cat(normalized).numpy(),
        torch.cat(maps).numpy() if with_maps else None,
    )


def make_scorer(
    config: DetectorConfig,
    generator: nn.Module,
    discriminator: nn.Module | None,
    threshold: float,
    median: float,
) -> ScorerBase:
    """The scoring module of `config.model`: GANomaly's latent error, or Skip-GANomaly's
    reconstruction and D-feature error (which needs the discriminator)."""
    if config.model == "skip-ganomaly":
        assert isinstance(generator, UnetGenerator)
        assert isinstance(discriminator, SkipDiscriminator)
        return SkipAnomalyScorer(
            generator, discriminator, config.score_lambda, threshold, median, config.map_sigma
        )
    assert isinstance(generator, Generator)
    return AnomalyScorer(generator, config.score_metric, threshold, median, config.map_sigma)


class ExportedScorer(nn.Module):
    """The exported graph: the scorer's outputs and the verdict `score > threshold`, so a
    consumer needs no threshold arithmetic of its own."""

    def __init__(self, scorer: ScorerBase) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        score, normalized, amap = self.scorer(x)  # (B,), (B,), (B, H, W)
        return score, normalized, amap, score > self.scorer.threshold  # is_anomaly (B,) bool
