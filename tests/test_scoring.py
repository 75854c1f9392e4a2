"""Threshold and normalisation definitions; scores independent of the batch; the detector API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganomaly import GANomalyDetector, NotFittedError
from ganomaly.scoring import fit_threshold


def test_threshold_is_the_higher_quantile_and_median_normalises():
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0])  # sorted 1..5
    with pytest.warns(UserWarning, match="degenerate"):
        fit = fit_threshold(scores, 0.5, None)  # position 0.5 * 4 = 2 -> exactly the 3rd value
    assert fit.threshold == 3.0 and fit.median == 3.0
    fit = fit_threshold(scores, 0.6, None)  # position 2.4 -> "higher" takes the 4th value: 4
    assert fit.threshold == 4.0
    assert fit.median == 3.0
    assert fit.n_val == 5
    # normalized = (s - 3) / (4 - 3): the median maps to 0, the threshold to 1.
    with pytest.warns(UserWarning, match="simply their maximum"):
        fit = fit_threshold(np.arange(1.0, 11.0), 0.99, None)  # 10 < 1 / 0.01 images
    assert fit.threshold == 10.0 and fit.median == 5.5


def test_fixed_threshold_is_kept():
    fit = fit_threshold(np.array([1.0, 2.0, 3.0]), 0.99, 7.5)
    assert fit.threshold == 7.5 and fit.quantile is None and fit.median == 2.0


def test_normalized_score_and_verdict(digits_run):
    detector = GANomalyDetector.load(digits_run)
    x = (torch.rand(6, 1, 16, 16) * 255).to(torch.uint8)
    result = detector.score(x)
    expected = (result.score - detector.val_median_) / (detector.threshold_ - detector.val_median_)
    assert np.allclose(result.normalized_score, expected, rtol=1e-5, atol=1e-6)
    assert np.array_equal(result.is_anomaly, result.score > detector.threshold_)
    assert np.array_equal(detector.predict(x), (result.score > detector.threshold_).astype(int))


def test_score_does_not_depend_on_the_batch(digits_run):
    detector = GANomalyDetector.load(digits_run)
    x = (torch.rand(20, 1, 16, 16) * 255).to(torch.uint8)
    one = detector.decision_function(x, batch_size=1)
    many = detector.decision_function(x, batch_size=64)
    alone = detector.decision_function(x[7:8])
    assert np.allclose(one, many, rtol=1e-5, atol=1e-7)
    assert np.allclose(alone, many[7:8], rtol=1e-5, atol=1e-7)


def test_anomaly_map_shape_and_values(digits_run):
    detector = GANomalyDetector.load(digits_run)
    x = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    maps = detector.anomaly_map(x)
    assert maps.shape == (2, 16, 16) and np.all(maps >= 0)
    inputs, recon = detector.reconstruct(x)
    raw = np.abs(inputs - recon).mean(1) * 2  # |x - x_hat| in model units ([-1, 1] is 2 wide)
    assert maps.mean() == pytest.approx(raw.mean(), rel=0.05)  # smoothing preserves the mean


def test_not_fitted_and_unknown_parameter():
    with pytest.raises(NotFittedError):
        GANomalyDetector().decision_function(np.zeros((1, 1, 16, 16), np.uint8))
    with pytest.raises(TypeError, match="unknown parameter"):
        GANomalyDetector(learning_rate=1)


def test_fit_returns_self_on_arrays():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 1, 16, 16), dtype=np.uint8)
    detector = GANomalyDetector(
        image_size="16", ngf=4, nz=8, epochs=1, batch_size=8, progress=False
    )
    assert detector.fit(images) is detector
    assert detector.n_val_ == 2 and len(detector.decision_scores_) == 24
    assert len(detector.history_) == 1 and detector.channels_ == 1
    assert np.isfinite(detector.threshold_)
