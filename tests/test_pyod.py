"""GANomalyDetector against PyOD's `BaseDetector` contract and scikit-learn's estimator checks:
parameters, fitted attributes, `fit_predict`, `predict_proba`, `predict_confidence`,
`contamination`, the array layouts and value types users have, and errors in the API's words.

PyOD's definitions (pyod/models/base.py), restated for a detector calibrated on its held-out
validation scores V (n of them) instead of the training scores:
    linear proba   P(anomaly) = clip((s - min V) / (max V - min V), 0, 1)
    unify proba    P(anomaly) = clip(erf((s - mean V) / (std V * sqrt 2)), 0, 1)
    confidence     p = (1 + #{v in V: v <= s}) / (2 + n);
                   c = 1 - BinomCDF(n - int(n * contamination); n, p), and 1 - c where the
                   label is 0
"""

from __future__ import annotations

import inspect
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import sklearn.base
import torch
from PIL import Image
from scipy.stats import binom
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from ganomaly import GANomalyDetector
from ganomaly.config import ConfigError, DetectorConfig, RunConfig
from ganomaly.detector import validation_split
from tests._trained import estimator_params

# 15 validation images: fit warns that the 0.99 quantile is their maximum, as it should
pytestmark = pytest.mark.filterwarnings("ignore:only 15 validation images")

N_FIT = 150  # the first 150 zeros train (135) and validate (15); the other 28 are test normals


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (N, H, W) grey images, 0..255, and their classes."""
    data = load_digits()
    return np.round(data.images * (255.0 / 16.0)).astype(np.uint8), data.target


@pytest.fixture(scope="module")
def normal(digits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    images, classes = digits
    return images[classes == 0]


@pytest.fixture(scope="module")
def fitted(normal: np.ndarray) -> GANomalyDetector:
    """Fitted on (N, H, W) arrays with the default threshold rule."""
    return GANomalyDetector(**estimator_params()).fit(normal[:N_FIT])


@pytest.fixture(scope="module")
def test_set(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The zeros not fitted on (label 0) and 200 other digits (label 1), (N, H, W) uint8."""
    images, classes = digits
    zeros, others = images[classes == 0][N_FIT:], images[classes != 0][:200]
    return np.concatenate([zeros, others]), np.r_[np.zeros(len(zeros)), np.ones(len(others))]


# -- scikit-learn's conventions -----------------------------------------------------------------
def test_scikit_learns_parameter_checks_pass() -> None:
    detector = GANomalyDetector(**estimator_params(), contamination=0.05)
    check_parameters_default_constructible("GANomalyDetector", detector)
    check_no_attributes_set_in_init("GANomalyDetector", detector)
    check_get_params_invariance("GANomalyDetector", detector)
    check_set_params("GANomalyDetector", detector)


def test_clone_get_params_set_params_round_trip() -> None:
    detector = GANomalyDetector(**estimator_params(), contamination=0.05)
    params = detector.get_params()
    assert params["contamination"] == 0.05 and params["threshold_quantile"] is None
    assert GANomalyDetector(**params).get_params() == params
    copy = sklearn.base.clone(detector)
    assert copy.get_params() == params
    # set_params takes any combination; the one-rule check waits for fit, so clone still works
    assert copy.set_params(threshold_quantile=0.9) is copy
    assert sklearn.base.clone(copy).get_params()["threshold_quantile"] == 0.9
    assert detector.get_params()["threshold_quantile"] is None


def test_set_params_refuses_an_unknown_name_and_sets_nothing() -> None:
    detector = GANomalyDetector(epochs=2)
    with pytest.raises(ValueError, match=r"'epoch'.*valid parameters are: .*\bepochs\b"):
        detector.set_params(ngf=8, epoch=3)
    assert detector.get_params()["ngf"] == DetectorConfig.ngf  # not half-applied
    assert detector.set_params() is detector


def test_repr_shows_the_parameters_that_differ_from_their_defaults() -> None:
    assert repr(GANomalyDetector()) == "GANomalyDetector()"
    detector = GANomalyDetector(epochs=5, image_size=32, contamination=0.05)
    # image_size's default is the string "32": an int 32 is a different value, and shown
    assert repr(detector) == "GANomalyDetector(contamination=0.05, epochs=5, image_size=32)"


def test_a_long_repr_wraps_as_scikit_learns_and_reads_back_as_the_same_detector() -> None:
    detector = GANomalyDetector(**estimator_params(), batch_size=32, seed=3, device="cpu")
    # scikit-learn's BaseEstimator printed exactly this for these parameters
    assert repr(detector) == (
        "GANomalyDetector(batch_size=32, device='cpu', epochs=2, image_size='16', ngf=8,\n"
        "                 nz=16, progress=False, seed=3)"
    )
    assert eval(repr(detector)).get_params() == detector.get_params()


def test_it_works_inside_scikit_learns_pipeline_with_nested_parameters() -> None:
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(GANomalyDetector(epochs=2))
    copy = sklearn.base.clone(pipeline)
    assert copy.set_params(ganomalydetector__epochs=3) is copy
    assert copy.get_params()["ganomalydetector__epochs"] == 3
    assert pipeline.get_params()["ganomalydetector__epochs"] == 2
    if hasattr(sklearn.base.BaseEstimator, "__sklearn_tags__"):  # scikit-learn >= 1.6
        from sklearn.utils import get_tags

        # the tags scikit-learn's BaseEstimator gave it, read as a pipeline reads them
        assert get_tags(GANomalyDetector()) == get_tags(sklearn.base.BaseEstimator())
        assert get_tags(copy).input_tags == get_tags(copy.steps[0][1]).input_tags


def test_pickling_keeps_the_parameters_and_the_fitted_model(
    fitted: GANomalyDetector, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    unfitted = pickle.loads(pickle.dumps(GANomalyDetector(epochs=3, ngf=8)))
    assert repr(unfitted) == "GANomalyDetector(epochs=3, ngf=8)"
    again = pickle.loads(pickle.dumps(fitted))
    assert again.get_params() == fitted.get_params() and again.threshold_ == fitted.threshold_
    images = test_set[0][:20]
    np.testing.assert_array_equal(again.decision_function(images), fitted.decision_function(images))


NOT_FITTED_CALLS = {
    "decision_function": lambda d, x, p: d.decision_function(x),
    "predict": lambda d, x, p: d.predict(x),
    "predict_proba": lambda d, x, p: d.predict_proba(x),
    "predict_confidence": lambda d, x, p: d.predict_confidence(x),
    "score": lambda d, x, p: d.score(x),
    "normalized_score": lambda d, x, p: d.normalized_score(x),
    "anomaly_map": lambda d, x, p: d.anomaly_map(x),
    "preprocess": lambda d, x, p: d.preprocess(x),
    "score_preprocessed": lambda d, x, p: d.score_preprocessed(torch.zeros(1, 1, 16, 16)),
    "score_files": lambda d, x, p: d.score_files(["a.png"]),
    "reconstruct": lambda d, x, p: d.reconstruct(x),
    "reconstruct_preprocessed": lambda d, x, p: d.reconstruct_preprocessed(
        torch.zeros(1, 1, 16, 16)
    ),
    "refit_threshold": lambda d, x, p: d.refit_threshold(x),
    "annotate": lambda d, x, p: d.annotate(data="digits"),
    "model_card": lambda d, x, p: d.model_card(),
    "to_dict": lambda d, x, p: d.to_dict(),
    "save": lambda d, x, p: d.save(p),
    "device_": lambda d, x, p: d.device_,
}
# What works before fit: fitting, scikit-learn's parameter methods, loading, the parameters.
BEFORE_FIT = {"fit", "fit_predict", "get_params", "set_params", "load", "config"}


def test_every_method_says_not_fitted_before_fit(tmp_path: Path) -> None:
    public = {name for name, _ in inspect.getmembers(GANomalyDetector) if not name.startswith("_")}
    assert public - BEFORE_FIT == set(NOT_FITTED_CALLS)  # a new method gets a case here
    detector = GANomalyDetector(**estimator_params())
    images = np.zeros((2, 16, 16), np.uint8)
    for name, call in NOT_FITTED_CALLS.items():
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call(detector, images, tmp_path / "model.pt")
        assert not hasattr(detector, "threshold_"), name
    assert not (tmp_path / "model.pt").exists()


def test_the_not_fitted_error_is_scikit_learns() -> None:
    """`except sklearn.exceptions.NotFittedError` catches it: the class is scikit-learn's own,
    which the detector imports only when it raises (see the import check in test_contract)."""
    import ganomaly

    assert ganomaly.NotFittedError is NotFittedError
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    assert not hasattr(GANomalyDetector(), "device_")  # hasattr sees an AttributeError


# -- input layouts and value types ---------------------------------------------------------------
def test_nhw_nhwc_and_nchw_arrays_of_the_same_images_score_the_same(
    fitted: GANomalyDetector, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    grey = test_set[0][:40]  # (N, 8, 8)
    expected = fitted.decision_function(grey)
    for same in (grey[:, :, :, None], grey[:, None], torch.from_numpy(grey[:, :, :, None])):
        np.testing.assert_array_equal(fitted.decision_function(same), expected)
    rgb = np.random.default_rng(0).integers(0, 256, (6, 20, 24, 3), dtype=np.uint8)  # NHWC
    channels_first = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(
        fitted.decision_function(channels_first), fitted.decision_function(rgb)
    )


def test_arrays_as_pil_gives_them_are_rgb_like_their_files(
    fitted: GANomalyDetector, tmp_path: Path
) -> None:
    """np.asarray(PIL image) is (H, W, C) in RGB order, and becomes the model's grey input as
    its file does (up to Pillow's rounding of the luminance to 8 bits); reversed (BGR, OpenCV's
    order) the same pixels are other images."""
    rgb = np.random.default_rng(1).integers(0, 256, (4, 20, 24, 3), dtype=np.uint8)
    paths = []
    for i, pixels in enumerate(rgb):
        paths.append(tmp_path / f"colour{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    as_pil = np.stack([np.asarray(Image.open(path)) for path in paths])
    assert as_pil.shape == (4, 20, 24, 3)
    from_array = fitted.preprocess(as_pil)
    luminance = (as_pil / 255.0) @ np.array([0.299, 0.587, 0.114])  # (N, H, W) in [0, 1]
    torch.testing.assert_close(from_array, fitted.preprocess(luminance), rtol=0, atol=1e-6)
    one_level = 2.0 / 255.0  # one 8-bit step in the model's [-1, 1]
    torch.testing.assert_close(from_array, fitted.preprocess(paths), rtol=0, atol=one_level)
    reversed_order = fitted.preprocess(as_pil[..., ::-1])
    assert (reversed_order - from_array).abs().max() > 10 * one_level


def test_uint8_other_integers_and_float_in_0_1_are_the_same_images(
    fitted: GANomalyDetector, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images = test_set[0][:30]
    expected = fitted.decision_function(images)
    for dtype in (np.int16, np.int32, np.int64, np.uint16):
        np.testing.assert_array_equal(fitted.decision_function(images.astype(dtype)), expected)
    as_float = fitted.decision_function(images.astype(np.float64) / 255.0)
    np.testing.assert_allclose(as_float, expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"^int64 images must be in 0\.\.255; pass floats"):
        fitted.decision_function(np.full((2, 8, 8), 256, np.int64))
    with pytest.raises(ValueError, match=r"^float images must be in \[0, 1\]; pass uint8"):
        fitted.decision_function(images.astype(np.float32))


ACCEPTED_FORMS = "(N, H, W) grey, (N, H, W, C) channels-last or (N, C, H, W) channels-first"


@pytest.mark.parametrize("shape", [(2, 3, 3, 3), (2, 1, 8, 1), (2, 4, 16, 3), (5, 3, 32, 1)])
def test_an_ambiguous_shape_is_refused_naming_the_accepted_forms(
    fitted: GANomalyDetector, shape: tuple[int, ...]
) -> None:
    images = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    with pytest.raises(ValueError) as error:
        fitted.decision_function(images)
    message = str(error.value)
    assert message.startswith(f"images shaped {shape} are ambiguous: arrays are {ACCEPTED_FORMS}")
    assert "layout='NCHW' or 'NHWC'" in message and "\n" not in message
    # saying which resolves it: channels-first as given, or transposed and said channels-last
    first = fitted.preprocess(images, layout="NCHW")
    last = fitted.preprocess(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), layout="NHWC")
    torch.testing.assert_close(first, last, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(8, 8), (1, 2, 8, 8, 3)])
def test_other_numbers_of_axes_are_refused_naming_the_accepted_forms(
    fitted: GANomalyDetector, shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match=rf"^images shaped \({shape[0]}, .*expected \(N, H, W\)"):
        fitted.decision_function(np.zeros(shape, np.uint8))


def test_a_layout_that_does_not_fit_the_shape_is_refused(fitted: GANomalyDetector) -> None:
    with pytest.raises(ValueError, match=r"^layout='NHW' does not fit images shaped"):
        fitted.preprocess(np.zeros((2, 1, 8, 8), np.uint8), layout="NHW")
    with pytest.raises(ValueError, match=r"^layout='HWC': choose one of NCHW, NHWC, NHW$"):
        fitted.preprocess(np.zeros((2, 8, 8, 1), np.uint8), layout="HWC")


# -- errors in the API's language -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"image_size": 8}, "image_size=8: both sides must be >= 16"),
        ({"image_size": "big"}, "image_size='big': expected N or HxW, e.g. 32 or 100x60"),
        ({"nz": 0}, "nz must be >= 1"),
        ({"val_fraction": 1.5}, "val_fraction=1.5: must be between 0 and 1"),
        ({"model": "gan"}, "model='gan': choose one of ganomaly, skip-ganomaly"),
        ({"contamination": 0.7}, r"contamination=0.7: must be in (0, 0.5]"),
        (
            {"contamination": 0.05, "threshold_quantile": 0.9},
            "threshold_quantile and contamination: give at most one threshold rule",
        ),
        (
            {"contamination": 0.05, "threshold": 0.2},
            "contamination and threshold: give at most one threshold rule",
        ),
    ],
)
def test_fit_names_parameters_as_python_spells_them(params: dict, message: str) -> None:
    detector = GANomalyDetector(**{**estimator_params(), **params})  # accepted until fit
    with pytest.raises(ConfigError) as error:
        detector.fit(np.zeros((30, 16, 16), np.uint8))
    assert str(error.value) == message


def test_the_command_line_keeps_its_flag_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ganomaly.cli import main

    flags = ["--contamination", "0.1", "--threshold-quantile", "0.9", "--out", str(tmp_path / "r")]
    assert main(["train", "--data", "digits", *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ganomaly: error: --threshold-quantile and --contamination: give at most one threshold rule"
    )
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match=r"^--image-size 8: both sides must be >= 16$"):
        RunConfig(image_size="8").validate()
    with pytest.raises(ConfigError, match=r"^--contamination and --threshold: give at most one"):
        RunConfig(contamination=0.1, threshold=0.5).validate()
    with pytest.raises(ConfigError, match=r"^--contamination 0.7: must be in \(0, 0.5\]$"):
        DetectorConfig(contamination=0.7).validate()


# -- PyOD's fitted attributes and methods ---------------------------------------------------------
def test_decision_scores_and_labels_cover_every_fitted_image_in_input_order(
    fitted: GANomalyDetector, normal: np.ndarray
) -> None:
    images = normal[:N_FIT]
    assert fitted.decision_scores_.shape == fitted.labels_.shape == (N_FIT,)
    assert fitted.decision_scores_.dtype == np.float64 and fitted.labels_.dtype == np.int64
    np.testing.assert_array_equal(fitted.decision_scores_, fitted.decision_function(images))
    np.testing.assert_array_equal(fitted.labels_, fitted.decision_scores_ > fitted.threshold_)
    np.testing.assert_array_equal(fitted.labels_, fitted.predict(images))
    # the held-out part is among them: scored again, its scores are val_scores_
    _, val_index = validation_split(N_FIT, fitted.val_fraction, fitted.split_seed)
    assert len(val_index) == fitted.n_val_ == N_FIT - fitted.n_train_
    np.testing.assert_allclose(fitted.decision_scores_[val_index], fitted.val_scores_, rtol=1e-5)


CONTAMINATION = 0.1


@pytest.fixture(scope="module")
def contaminated(normal: np.ndarray) -> tuple[GANomalyDetector, np.ndarray]:
    """Fitted by `fit_predict` with contamination=0.1 on the images `fitted` was fitted on,
    as (N, 1, H, W); the detector and the labels fit_predict returned."""
    detector = GANomalyDetector(**estimator_params(), contamination=CONTAMINATION)
    return detector, detector.fit_predict(normal[:N_FIT, None])


def test_contamination_is_the_1_minus_c_quantile_and_fit_predict_labels_every_input(
    fitted: GANomalyDetector, contaminated: tuple[GANomalyDetector, np.ndarray]
) -> None:
    detector, labels = contaminated
    contamination = CONTAMINATION
    # same seed, same images in another layout: the same model, so the same scores
    np.testing.assert_array_equal(detector.decision_scores_, fitted.decision_scores_)
    ordered = np.sort(detector.val_scores_)
    position = (1.0 - contamination) * (len(ordered) - 1)  # 0.9 * 14 = 12.6: no rounding edge
    assert detector.threshold_ == ordered[math.ceil(position)]  # numpy's method="higher"
    assert detector.threshold_quantile_ == pytest.approx(1.0 - contamination)
    assert "contamination" in detector.threshold_from_
    assert labels is detector.labels_ and labels.shape == (N_FIT,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, detector.decision_scores_ > detector.threshold_)
    # it flags the validation normals above that position (1 of 15, about n * c = 1.5);
    # the default rule's 0.99 quantile of 15 is their maximum, and flags none
    flagged = np.sum(detector.val_scores_ > detector.threshold_)
    assert flagged == len(ordered) - 1 - math.ceil(position) == 1
    assert np.sum(fitted.val_scores_ > fitted.threshold_) == 0


def test_predict_proba_is_pyods_linear_and_unify_on_the_validation_scores(
    fitted: GANomalyDetector, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images = test_set[0]
    scores = fitted.decision_function(images).astype(np.float64)
    val = fitted.val_scores_
    expected = {
        "linear": np.clip((scores - val.min()) / (val.max() - val.min()), 0, 1),
        "unify": np.clip(
            [math.erf((s - val.mean()) / (val.std() * math.sqrt(2))) for s in scores], 0, 1
        ),
    }
    np.testing.assert_array_equal(
        fitted.predict_proba(images), fitted.predict_proba(images, "linear")
    )
    for method, anomaly in expected.items():
        proba = fitted.predict_proba(images, method=method)
        assert proba.shape == (len(images), 2) and proba.dtype == np.float64
        assert proba.min() >= 0.0 and proba.max() <= 1.0
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(proba[:, 1], anomaly, rtol=1e-12, atol=1e-12)
        # ordered as the scores are, and both columns used on this mixed set
        order = np.argsort(scores, kind="stable")
        assert np.all(np.diff(proba[order, 1]) >= 0)
        assert proba[:, 1].min() < 0.5 < proba[:, 1].max()
    with pytest.raises(ValueError, match="^method='softmax': choose one of linear, unify$"):
        fitted.predict_proba(images, method="softmax")


def pyod_confidence(scores: np.ndarray, reference: np.ndarray, contamination: float,
                    threshold: float) -> np.ndarray:  # fmt: skip
    """PyOD's `predict_confidence`, written out as its source does it, element by element."""
    n = len(reference)
    confidence = []
    for s in scores:
        p = (1 + np.count_nonzero(reference <= s)) / (2 + n)
        c = 1 - binom.cdf(n - int(round(n * contamination, 9)), n, p)
        confidence.append(c if s > threshold else 1 - c)
    return np.array(confidence)


def test_predict_confidence_is_pyods_on_the_validation_scores(
    fitted: GANomalyDetector,
    contaminated: tuple[GANomalyDetector, np.ndarray],
    test_set: tuple[np.ndarray, np.ndarray],
) -> None:
    images = test_set[0]
    scores = fitted.decision_function(images).astype(np.float64)
    confidence = fitted.predict_confidence(images)
    assert confidence.shape == (len(images),) and confidence.dtype == np.float64
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0
    expected = pyod_confidence(scores, fitted.val_scores_, 0.01, fitted.threshold_)
    np.testing.assert_allclose(confidence, expected, rtol=1e-12, atol=1e-12)
    labels, with_labels = fitted.predict(images, return_confidence=True)
    np.testing.assert_array_equal(labels, fitted.predict(images))
    np.testing.assert_array_equal(with_labels, confidence)
    proba, with_proba = fitted.predict_proba(images, "unify", return_confidence=True)
    np.testing.assert_array_equal(proba, fitted.predict_proba(images, "unify"))
    np.testing.assert_array_equal(with_proba, confidence)
    # with the default rule and 15 validation images, int(15 * 0.01) = 0 of them may be above
    # the threshold: PyOD's formula then gives 0 or 1 only; with c = 0.1 it is graded
    assert set(np.unique(confidence)) <= {0.0, 1.0}
    detector = contaminated[0]
    graded = detector.predict_confidence(images)
    expected = pyod_confidence(scores, detector.val_scores_, CONTAMINATION, detector.threshold_)
    np.testing.assert_allclose(graded, expected, rtol=1e-12, atol=1e-12)
    assert ((graded > 0.05) & (graded < 0.95)).any()


def test_a_pyod_style_evaluation_loop(
    digits: tuple[np.ndarray, np.ndarray], normal: np.ndarray
) -> None:
    """PyOD's own example loop: fit on normals, then labels_ / decision_scores_ on the training
    data, predict / decision_function on a labelled test set, and ROC AUC from scikit-learn."""
    images, classes = digits
    X_train = normal[:N_FIT]
    X_test = np.concatenate([normal[N_FIT:], images[classes == 6][:60]])  # 28 zeros, 60 sixes
    y_test = np.r_[np.zeros(len(normal) - N_FIT), np.ones(60)]
    clf = GANomalyDetector(**estimator_params())
    clf.fit(X_train)
    y_train_pred, y_train_scores = clf.labels_, clf.decision_scores_
    y_test_pred, y_test_scores = clf.predict(X_test), clf.decision_function(X_test)
    assert y_train_pred.shape == y_train_scores.shape == (len(X_train),)
    assert y_test_pred.shape == y_test_scores.shape == (len(X_test),)
    assert set(np.unique(y_test_pred)) <= {0, 1}
    auroc = roc_auc_score(y_test, y_test_scores)
    assert auroc > 0.8, auroc  # zeros vs sixes, 2 epochs of the tiny model: measured 0.98
    # the verdicts say more than chance: sixes are flagged more often than zeros
    assert y_test_pred[y_test == 1].mean() > y_test_pred[y_test == 0].mean()


# -- persistence ---------------------------------------------------------------------------------
def test_labels_and_decision_scores_survive_save_and_load(
    fitted: GANomalyDetector, test_set: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    loaded = GANomalyDetector.load(fitted.save(tmp_path / "model.pt"))
    assert sorted(vars(loaded)) == sorted(vars(fitted))
    np.testing.assert_array_equal(loaded.decision_scores_, fitted.decision_scores_)
    np.testing.assert_array_equal(loaded.labels_, fitted.labels_)
    assert loaded.labels_.dtype == fitted.labels_.dtype
    images = test_set[0][:20]
    for method in ("linear", "unify"):
        np.testing.assert_allclose(
            loaded.predict_proba(images, method), fitted.predict_proba(images, method), rtol=1e-6
        )
    np.testing.assert_allclose(
        loaded.predict_confidence(images), fitted.predict_confidence(images), rtol=1e-6
    )


def test_a_model_file_with_a_fixed_threshold_beside_the_old_default_quantile_loads(
    fitted: GANomalyDetector, tmp_path: Path
) -> None:
    """Before the threshold rules were exclusive, files stored threshold_quantile 0.99 beside
    a fixed threshold (which won); such a file loads, as a fixed-threshold model."""
    obj = fitted.to_dict()
    obj["config"] = {**obj["config"], "threshold_quantile": 0.99, "threshold": 0.5}
    del obj["config"]["contamination"]  # unknown then
    torch.save(obj, tmp_path / "old.pt")
    loaded = GANomalyDetector.load(tmp_path / "old.pt")
    assert loaded.get_params()["threshold"] == 0.5
    assert loaded.get_params()["threshold_quantile"] is None


def test_a_version_1_model_file_says_why_it_has_no_probabilities() -> None:
    detector = GANomalyDetector.load(Path(__file__).parent / "data" / "model-v1.pt")
    images = np.zeros((2, 16, 16), np.uint8)
    assert detector.predict(images).shape == (2,)
    for call in (detector.predict_proba, detector.predict_confidence):
        with pytest.raises(ValueError, match="no validation scores .*refit_threshold"):
            call(images)
