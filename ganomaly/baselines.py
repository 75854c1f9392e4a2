"""The benchmark's two baselines, on the very splits the models see (`ganomaly benchmark`).

- `autoencoder`: GANomaly's networks and training loop with w_adv = 0 and w_enc = 0 (a plain
  reconstruction autoencoder, the config `benchmark.METHOD_SETTINGS` gives it), scored by the
  mean of |x - x_hat|. Its discriminator cannot change a result, so it is never trained
  (`training.discriminator_trains`).
- `raw-pixel`: no learning; score = mean squared distance of the image to the mean of the
  normal training images (model resolution, [-1, 1]); its map is |x - mean| smoothed.

Both use GANomaly's threshold rule (a quantile of the held-out validation normals) and its
anomaly-map smoothing, so only the scoring function differs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ganomaly.config import RunConfig, detector_part
from ganomaly.data import DataSplit


def baseline_metrics(
    config: RunConfig, split: DataSplit, scores: np.ndarray, val: np.ndarray,
    maps: np.ndarray | None,
) -> dict[str, Any]:  # fmt: skip
    """Image metrics at the validation threshold, and pixel metrics when there are masks."""
    from ganomaly.localization import pixel_evaluation
    from ganomaly.metrics import image_metrics
    from ganomaly.scoring import fit_threshold

    fit = fit_threshold(val, config.threshold_rule_quantile(), config.threshold)
    metrics: dict[str, Any] = image_metrics(split.test_is_abnormal, scores, fit.threshold)
    metrics["threshold"] = fit.threshold
    metrics["n_val"] = len(val)
    if maps is not None:
        pixel = pixel_evaluation(maps, split.test_masks, split.test, split.test_is_abnormal)
        if pixel is not None:
            metrics.update(pixel.metrics)
    return metrics


def run_raw_pixel(config: RunConfig, split: DataSplit) -> dict[str, Any]:
    """Distance of each image to the mean normal training image."""
    from ganomaly.detector import load_images, validation_split
    from ganomaly.scoring import gaussian_kernel, smooth_maps

    size, channels = config.image_hw(), config.channels or split.channels
    train = load_images(split.train, size, channels, config.interpolation)
    train_index, val_index = validation_split(len(train), config.val_fraction, config.split_seed)
    mean = train[train_index].mean(0, keepdim=True)  # (1, C, H, W)
    test = load_images(split.test, size, channels, config.interpolation)
    scores = ((test - mean) ** 2).mean((1, 2, 3)).numpy()
    val = ((train[val_index] - mean) ** 2).mean((1, 2, 3)).numpy()
    maps = None
    if any(m is not None for m in split.test_masks):
        error = (test - mean).abs().mean(1, keepdim=True)  # (N, 1, H, W)
        if config.map_sigma > 0:
            error = smooth_maps(error, gaussian_kernel(config.map_sigma))
        maps = error[:, 0].numpy()
    metrics = baseline_metrics(config, split, scores, val, maps)
    metrics["n_train"] = len(train_index)
    return metrics


def run_autoencoder(config: RunConfig, split: DataSplit) -> dict[str, Any]:
    """Train the config's networks (w_adv = w_enc = 0 for the baseline), score by mean
    |x - x_hat|; the anomaly map is the model's own (smoothed |x - x_hat|)."""
    from ganomaly.detector import GANomalyDetector, validation_split

    started = time.perf_counter()
    detector = GANomalyDetector(**dataclasses.asdict(detector_part(config))).fit(split.train)
    seconds = time.perf_counter() - started
    train = detector.preprocess(split.train)
    _, val_index = validation_split(len(train), config.val_fraction, config.split_seed)
    val = train[val_index]
    val_errors = (val - detector.reconstruct_preprocessed(val)).abs().mean((1, 2, 3))
    test = detector.preprocess(split.test)
    scores = (test - detector.reconstruct_preprocessed(test)).abs().mean((1, 2, 3)).numpy()
    maps = None
    if any(m is not None for m in split.test_masks):
        maps = detector.score_preprocessed(test, with_maps=True).maps
    metrics = baseline_metrics(config, split, scores, val_errors.numpy(), maps)
    training = detector.model_card()["training"]
    metrics.update(
        train_seconds=round(seconds, 3),
        n_train=training["n_train"],
        d_reinits=training["d_reinits"],
    )
    return metrics
