"""CI check: GANomalyDetector against a real PyOD installation (PyOD is never a dependency).

Two comparisons on scikit-learn's digits (zeros normal):
  (a) the shapes, dtypes and value ranges of every BaseDetector method and fitted attribute,
      ours beside PyOD's KNN fitted on the same images (flattened for it);
  (b) PyOD's own formulas: a BaseDetector whose decision_scores_ are our validation scores and
      whose decision_function returns our scores gives, through PyOD's predict,
      predict_proba("linear" / "unify") and predict_confidence code, exactly our values.

Usage (PyOD and numba next to an environment with this package's dependencies):
    pip install --target "$DIR" --no-deps pyod numba llvmlite
    PYTHONPATH=".:$DIR" python .ci/pyod_check.py
Prints PASS or FAIL per check; exits 1 when any fails, 2 when PyOD is not importable.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import pyod
    from pyod.models.base import BaseDetector
    from pyod.models.knn import KNN
except ImportError as error:
    print(f"pyod_check: PyOD is not importable ({error}); see the usage in this file")
    sys.exit(2)

from sklearn.datasets import load_digits  # noqa: E402

from ganomaly import GANomalyDetector  # noqa: E402
from tests._trained import estimator_params  # noqa: E402

CONTAMINATION = 0.1
FAILED: list[str] = []


def check(what: str, passed: bool) -> None:
    print(f"{'PASS' if passed else 'FAIL'}: {what}")
    if not passed:
        FAILED.append(what)


class GivenScores(BaseDetector):
    """PyOD's BaseDetector over scores computed elsewhere: `reference` plays the training
    scores, X is a column of indices into `scores`."""

    def __init__(self, reference, scores, threshold, contamination=0.1):
        super().__init__(contamination=contamination)
        self.reference, self.scores, self.threshold = reference, scores, threshold

    def fit(self, X, y=None):
        self._set_n_classes(y)
        self.decision_scores_ = np.asarray(self.reference, dtype=np.float64)
        self._process_decision_scores()  # PyOD's own: threshold_, labels_, _mu, _sigma
        # ours is numpy's "higher" quantile where PyOD interpolates: use ours, as PyOD would
        self.threshold_ = self.threshold
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X):
        return self.scores[np.asarray(X)[:, 0]]


def same_contract(ours: np.ndarray, theirs: np.ndarray, values: set | None = None) -> bool:
    """Same number of axes, same length, same dtype kind; `values` bounds both."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    fits = ours.ndim == theirs.ndim and ours.shape[1:] == theirs.shape[1:]
    fits = fits and ours.dtype.kind == theirs.dtype.kind
    if values is not None:
        fits = fits and set(np.unique(ours)) <= values and set(np.unique(theirs)) <= values
    return fits


def main() -> int:
    print(f"PyOD {pyod.__version__}")
    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    normal, other = images[data.target == 0], images[data.target != 0]
    fit_images = normal[:150]
    test = np.concatenate([normal[150:], other[:100]])
    ours = GANomalyDetector(**estimator_params(), contamination=CONTAMINATION)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-validation-set note
        ours.fit(fit_images)
    knn = KNN(contamination=CONTAMINATION).fit(fit_images.reshape(len(fit_images), -1) / 255.0)
    flat_test = test.reshape(len(test), -1) / 255.0

    # (a) shapes, dtypes and ranges, side by side
    n, m = len(fit_images), len(test)
    check(
        "decision_scores_: one per fitted image",
        ours.decision_scores_.shape == knn.decision_scores_.shape == (n,),
    )
    check(
        "labels_: one 0/1 int per fitted image",
        ours.labels_.shape == knn.labels_.shape == (n,)
        and same_contract(ours.labels_, knn.labels_, {0, 1}),
    )
    check(
        "threshold_: a float",
        isinstance(ours.threshold_, float) and np.isscalar(knn.threshold_),
    )
    mine_scores, their_scores = ours.decision_function(test), knn.decision_function(flat_test)
    check(
        "decision_function: (n_samples,) floats",
        mine_scores.shape == their_scores.shape == (m,) and mine_scores.dtype.kind == "f",
    )
    check(
        "predict: (n_samples,) 0/1 ints",
        same_contract(ours.predict(test), knn.predict(flat_test), {0, 1}),
    )
    for method in ("linear", "unify"):
        pair = (ours.predict_proba(test, method), knn.predict_proba(flat_test, method))
        check(
            f"predict_proba({method!r}): (n_samples, 2) float64 in [0, 1], rows sum to 1",
            all(
                p.shape == (m, 2) and p.dtype == np.float64 and p.min() >= 0 and p.max() <= 1
                and np.allclose(p.sum(axis=1), 1.0)
                for p in pair
            ),
        )  # fmt: skip
    confidences = (ours.predict_confidence(test), knn.predict_confidence(flat_test))
    check(
        "predict_confidence: (n_samples,) in [0, 1]",
        all(c.shape == (m,) and c.min() >= 0 and c.max() <= 1 for c in confidences),
    )
    pairs = [
        ours.predict(test, return_confidence=True),
        knn.predict(flat_test, return_confidence=True),
        ours.predict_proba(test, return_confidence=True),
        knn.predict_proba(flat_test, return_confidence=True),
    ]
    check(
        "predict and predict_proba with return_confidence=True: (values, confidence)",
        all(isinstance(pair, tuple) and len(pair) == 2 for pair in pairs),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyOD marks fit_predict deprecated; sklearn has it
        theirs = KNN(contamination=CONTAMINATION).fit_predict(flat_test)
        mine = GANomalyDetector(**ours.get_params()).fit_predict(test)
    check(
        "fit_predict: one 0/1 label per input",
        mine.shape == theirs.shape == (m,) and same_contract(mine, theirs, {0, 1}),
    )

    # (b) PyOD's formulas on our scores give our values
    scores = mine_scores.astype(np.float64)
    shell = GivenScores(ours.val_scores_, scores, ours.threshold_, CONTAMINATION).fit(None)
    index = np.arange(m)[:, None]
    check("predict equals PyOD's on our scores", np.array_equal(
        ours.predict(test), shell.predict(index)))  # fmt: skip
    for method in ("linear", "unify"):
        check(
            f"predict_proba({method!r}) equals PyOD's on our scores",
            np.allclose(
                ours.predict_proba(test, method), shell.predict_proba(index, method), 0, 1e-12
            ),
        )
    check(
        "predict_confidence equals PyOD's on our scores",
        np.allclose(ours.predict_confidence(test), shell.predict_confidence(index), 0, 1e-12),
    )
    check(
        "labels_ are PyOD's rule: decision_scores_ > threshold_",
        np.array_equal(ours.labels_, (ours.decision_scores_ > ours.threshold_).astype(int)),
    )

    print(f"\n{len(FAILED)} failed" if FAILED else "\nall PyOD checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
