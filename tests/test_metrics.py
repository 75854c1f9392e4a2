"""Metrics against values worked out by hand on tiny arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as sk

from ganomaly.metrics import (
    auroc,
    average_precision,
    image_metrics,
    pixel_aupro,
    pixel_auroc,
    pr_curve,
    roc_curve,
)

# Any warning (e.g. sklearn's UndefinedMetricWarning on a single class) fails a test.
pytestmark = pytest.mark.filterwarnings("error")

LABELS = np.array([0, 0, 1, 1])
SCORES = np.array([0.1, 0.4, 0.35, 0.8])


def test_image_metrics_hand_example() -> None:
    m = image_metrics(LABELS, SCORES, threshold=0.3)
    # AUROC: pairs (abnormal, normal): 0.8 beats 0.1 and 0.4, 0.35 beats 0.1 only -> 3/4.
    assert m["auroc"] == pytest.approx(0.75)
    # AP, ranking 0.8(1) 0.4(0) 0.35(1) 0.1(0): recall steps of 1/2 at precision 1 and 2/3.
    assert m["aupr"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # score > 0.3 flags 0.4 (normal), 0.35 and 0.8 (abnormal): TP=2, FP=1, FN=0.
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(0.8)  # 2 * (2/3) * 1 / (2/3 + 1)
    assert m["false_positive_rate"] == pytest.approx(0.5)  # 0.4 of the normals 0.1, 0.4
    # Cuts "score >= v": v=0.8 -> F1 2/3; 0.4 -> 1/2; 0.35 -> 4/5; 0.1 -> 2/3. Best 0.8 at the
    # cut below 0.35; the threshold returned is the midpoint to the next score, (0.35+0.1)/2.
    assert m["best_f1_oracle"] == pytest.approx(0.8)
    assert m["best_f1_oracle_threshold"] == pytest.approx(0.225)
    assert m["n_test"] == 4
    assert m["n_test_abnormal"] == 2


def test_threshold_is_strict() -> None:
    # 0.4 itself is not flagged at threshold 0.4: only 0.8 -> TP=1, FP=0, FN=1.
    m = image_metrics(LABELS, SCORES, threshold=0.4)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["false_positive_rate"] == 0.0


def test_nothing_flagged_gives_zero_precision_without_warning() -> None:
    m = image_metrics(LABELS, SCORES, threshold=0.9)
    assert (m["precision"], m["recall"], m["f1"], m["false_positive_rate"]) == (0, 0, 0, 0)


def test_best_f1_oracle_can_flag_everything() -> None:
    # Cuts: >= 0.5 -> F1 0; >= 0.2 -> 2*1/(2+2) = 1/2; >= 0.1 (everything) -> 2*2/(3+2) = 4/5.
    labels, scores = np.array([1, 0, 1]), np.array([0.1, 0.5, 0.2])
    m = image_metrics(labels, scores, threshold=1.0)
    assert m["best_f1_oracle"] == pytest.approx(0.8)
    t = m["best_f1_oracle_threshold"]
    assert t is not None and t < 0.1
    assert image_metrics(labels, scores, t)["f1"] == pytest.approx(0.8)


def test_best_f1_oracle_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) + 0.3 * labels, 1)  # rounding makes many ties
    m = image_metrics(labels, scores, threshold=0.5)
    candidates = np.concatenate(([scores.min() - 1], np.unique(scores)))
    brute = max(image_metrics(labels, scores, float(t))["f1"] or 0.0 for t in candidates)
    assert m["best_f1_oracle"] == pytest.approx(brute)
    t = m["best_f1_oracle_threshold"]
    assert t is not None
    assert image_metrics(labels, scores, t)["f1"] == pytest.approx(brute)


def test_single_class_gives_null_not_an_error() -> None:
    normal = image_metrics(np.zeros(3, dtype=int), np.array([0.1, 0.2, 0.3]), 0.15)
    for key in ("auroc", "aupr", "best_f1_oracle", "best_f1_oracle_threshold", "recall", "f1"):
        assert normal[key] is None, key
    assert normal["false_positive_rate"] == pytest.approx(2 / 3)
    assert normal["precision"] == 0.0
    assert '"auroc": null' in json.dumps(normal)

    abnormal = image_metrics(np.ones(3, dtype=int), np.array([0.1, 0.2, 0.3]), 0.15)
    assert abnormal["auroc"] is None and abnormal["false_positive_rate"] is None
    assert abnormal["recall"] == pytest.approx(2 / 3)
    assert abnormal["precision"] == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1], [0.1, 0.2, 0.3], "differ in length"),
        ([0, 2], [0.1, 0.2], "0 \\(normal\\) or 1"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([], [], "empty"),
    ],
)
def test_image_metrics_rejects_bad_input(labels: list, scores: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_metrics(np.array(labels), np.array(scores), 0.5)


def test_pixel_auroc_hand_example() -> None:
    maps = np.array([[[0.2, 0.9, 0.3]], [[0.3, 0.5, 0.1]]])
    masks = np.array([[[0, 1, 0]], [[1, 0, 0]]])
    # Anomalous pixels 0.9 and 0.3; normal 0.2, 0.3, 0.5, 0.1. 0.9 beats all four; 0.3 beats
    # 0.2 and 0.1, ties 0.3 (half a pair), loses to 0.5: (4 + 2.5) / 8.
    assert pixel_auroc(maps, masks) == pytest.approx(6.5 / 8)


def test_pixel_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((3, 16, 16)) < 0.2
    maps = np.round(rng.random((3, 16, 16)) + 0.4 * masks, 2)
    expected = sk.roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [1, 2, 8])  # 1 decimal: many ties
def test_curves_and_areas_equal_scikit_learns(seed: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    positive = rng.random(n) < rng.uniform(0.05, 0.95)
    positive[:2] = [True, False]  # both classes present
    scores = np.round(rng.random(n) + 0.3 * positive, decimals)

    assert auroc(positive, scores) == pytest.approx(sk.roc_auc_score(positive, scores), abs=1e-12)
    ap = sk.average_precision_score(positive, scores)
    assert average_precision(positive, scores) == pytest.approx(ap, abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(positive, scores, drop_intermediate=False)
    np.testing.assert_allclose(np.stack(roc_curve(positive, scores)), np.stack([fpr, tpr]))
    precision, recall, _ = sk.precision_recall_curve(positive, scores)
    np.testing.assert_allclose(np.stack(pr_curve(positive, scores)), np.stack([precision, recall]))


def _two_blobs() -> np.ndarray:
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 4:10, 4:12] = True
    masks[1, 20:22, 5:7] = True
    return masks


def test_aupro_perfect_and_inverted_maps() -> None:
    masks = _two_blobs()
    assert pixel_aupro(masks.astype(float), masks) == pytest.approx(1.0)
    # Every normal pixel is flagged before any defect pixel: PRO is 0 up to FPR 1.
    assert pixel_aupro(1.0 - masks, masks) == pytest.approx(0.0)


def test_aupro_two_regions_hand_example() -> None:
    # One 1x6 image. Mask 1 1 0 0 0 1: region A = pixels 0-1 (size 2), region B = pixel 5;
    # normal pixels 2, 3, 4. Map values sorted: 0.9 (A), 0.7 (normal), 0.5 (A), 0.3 (B),
    # 0.2 (normal), 0.1 (normal). Sweeping t down, (FPR, PRO = mean of A and B overlaps):
    #   t=0.9: (0, (1/2 + 0)/2 = 1/4)   t=0.7: (1/3, 1/4)   t=0.5: (1/3, (1 + 0)/2 = 1/2)
    #   t=0.3: (1/3, 1)   t=0.2: (2/3, 1)   t=0.1: (1, 1)
    # Area up to 0.3: 1/4 * 0.3, normalized: 1/4. Up to 0.5: 1/4 * 1/3 + 1 * (0.5 - 1/3) = 1/4,
    # normalized 1/2. Up to 1: 1/12 + 2/3 = 3/4.
    masks = np.array([[[1, 1, 0, 0, 0, 1]]])
    maps = np.array([[[0.9, 0.5, 0.1, 0.2, 0.7, 0.3]]])
    assert pixel_aupro(maps, masks) == pytest.approx(0.25)
    assert pixel_aupro(maps, masks, fpr_limit=0.5) == pytest.approx(0.5)
    assert pixel_aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.75)
    # Pixel-pooled AUROC weighs region A twice as much as B; PRO weighs them equally.
    assert pixel_auroc(maps, masks) == pytest.approx(7 / 9)


def test_aupro_ties_interpolate_at_the_limit() -> None:
    # A defect pixel and a normal pixel tie: both cross at once, so the curve is the diagonal
    # (0, 0) -> (1, 1). Interpolated at FPR 0.3 it reaches PRO 0.3; the triangle's area is
    # 0.3 * 0.3 / 2 = 0.045, normalized 0.045 / 0.3 = 0.15.
    assert pixel_aupro(np.array([[[0.5, 0.5]]]), np.array([[[1, 0]]])) == pytest.approx(0.15)


def test_aupro_uses_eight_connectivity() -> None:
    # Pixel (0,0) touches the pair (1,1)-(1,2) only at a corner: one region of 3 pixels with
    # 8-connectivity (two regions of sizes 1 and 2 with 4-connectivity). Only (0,0) scores
    # high, so at FPR 0 the overlap is 1/3 (it would be (1 + 0)/2 with 4-connectivity); the
    # other defect pixels score below every normal pixel, so PRO stays 1/3 up to FPR 1.
    masks = np.zeros((1, 3, 3), dtype=int)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = 1
    maps = np.where(masks == 1, 0.0, 0.5)
    maps[0, 0, 0] = 1.0
    assert pixel_aupro(maps, masks) == pytest.approx(1 / 3)


def test_aupro_of_an_uninformative_map_is_low() -> None:
    # A map unrelated to the masks has PRO(FPR) ~ FPR, so the normalized area is ~0.3 / 2.
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 64, 64), dtype=bool)
    for i in range(8):
        y, x = rng.integers(0, 48, 2)
        masks[i, y : y + 12, x : x + 10] = True
    value = pixel_aupro(rng.random(masks.shape), masks)
    assert 0.1 < value < 0.2


def test_pixel_metrics_reject_masks_with_one_kind_of_pixel() -> None:
    maps = np.random.default_rng(0).random((2, 4, 4))
    for masks in (np.zeros((2, 4, 4)), np.ones((2, 4, 4))):
        with pytest.raises(ValueError, match="only one kind"):
            pixel_auroc(maps, masks)
        with pytest.raises(ValueError, match="only one kind"):
            pixel_aupro(maps, masks)
    with pytest.raises(ValueError, match="fpr_limit"):
        pixel_aupro(maps, np.eye(4)[None].repeat(2, axis=0), fpr_limit=0.0)
    with pytest.raises(ValueError, match="equal shapes"):
        pixel_aupro(maps, np.ones((2, 4, 5)))
