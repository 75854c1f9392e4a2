"""The Python API: scikit-learn / PyOD conventions, every accepted input kind, save / load,
and the CLI's `train` being the same estimator (same weights, same scores)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganomaly import GANomalyDetector, NotFittedError
from ganomaly.images import ImageError
from tests._trained import TINY, sample_images

PARAMS = {"image_size": 16, "ngf": 8, "nz": 16, "epochs": 1, "batch_size": 32, "progress": False}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (N, 1, 8, 8) and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    return images, data.target


def test_init_only_stores_parameters() -> None:
    detector = GANomalyDetector(**PARAMS)
    assert detector.get_params()["ngf"] == 8 and detector.get_params()["nz"] == 16
    assert not [name for name in vars(detector) if name.endswith("_")]
    with pytest.raises(TypeError, match="no_such_option"):
        GANomalyDetector(no_such_option=1)


def test_not_fitted_error_before_fit(tmp_path: Path) -> None:
    detector = GANomalyDetector(**PARAMS)
    images = np.zeros((2, 1, 16, 16), np.uint8)
    for call in (
        lambda: detector.decision_function(images),
        lambda: detector.predict(images),
        lambda: detector.anomaly_map(images),
        lambda: detector.save(tmp_path / "model.pt"),
    ):
        with pytest.raises(NotFittedError):
            call()
    assert not (tmp_path / "model.pt").exists()


def test_fit_returns_self_and_sets_fitted_attributes(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    normal = images[labels == 0]  # 178 images
    detector = GANomalyDetector(**PARAMS)
    assert detector.fit(normal) is detector
    n_val = round(0.1 * len(normal))
    assert detector.n_val_ == n_val == len(detector.val_scores_)
    assert detector.decision_scores_.shape == (len(normal),)  # every image given to fit
    assert detector.threshold_ == np.quantile(detector.val_scores_, 0.99, method="higher")
    assert detector.val_median_ == pytest.approx(float(np.median(detector.val_scores_)))
    assert len(detector.history_) == 1 and {"l_g", "l_d"} <= set(detector.history_[0])
    # uint8 and float in [0, 1] are the same images
    scores = detector.decision_function(images[:20])
    as_float = detector.decision_function(images[:20].astype(np.float32) / np.float32(255.0))
    np.testing.assert_allclose(as_float, scores, rtol=0, atol=1e-7)
    # predict is the threshold applied to the raw score, anomaly_map is per pixel
    np.testing.assert_array_equal(detector.predict(images[:20]), (scores > detector.threshold_) * 1)
    maps = detector.anomaly_map(images[:3])
    assert maps.shape == (3, 16, 16) and maps.min() >= 0.0
    with pytest.raises(ValueError, match="float images must be in"):
        detector.decision_function(images[:2].astype(np.float32))


def test_every_input_kind_gets_the_same_scores(run_dir: Path, tmp_path: Path) -> None:
    """Folder, list of paths, N x C x H x W array and tensor, and a Dataset: one score each."""
    detector = GANomalyDetector.load(run_dir)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 1, 16, 16), dtype=np.uint8)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / ("sub" if i % 2 else "") / f"img{i}.png"
        Image.fromarray(image[0]).save(path)
        paths.append(path)
    expected = detector.decision_function(images)
    by_path = {str(p): s for p, s in zip(paths, detector.decision_function(paths), strict=True)}
    folder_scores = detector.decision_function(folder)  # recursive, sorted by path
    np.testing.assert_allclose([by_path[str(p)] for p in sorted(paths)], folder_scores, atol=0)
    np.testing.assert_allclose([by_path[str(p)] for p in paths], expected, rtol=0, atol=1e-7)
    as_tensor = detector.decision_function(torch.from_numpy(images))
    np.testing.assert_allclose(as_tensor, expected, atol=0)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.zeros(5))
    np.testing.assert_allclose(detector.decision_function(dataset), expected, atol=0)
    with pytest.raises(ImageError, match="no such file"):
        detector.decision_function([folder / "missing.png"])


def test_scores_do_not_depend_on_batch_size(run_dir: Path, tmp_path: Path) -> None:
    detector = GANomalyDetector.load(run_dir)
    paths = sample_images(tmp_path)
    alone = np.concatenate([detector.decision_function([p]) for p in paths])
    np.testing.assert_allclose(detector.decision_function(paths, batch_size=3), alone, atol=1e-7)


def test_save_and_load_round_trip(run_dir: Path, tmp_path: Path) -> None:
    detector = GANomalyDetector.load(run_dir)
    paths = sample_images(tmp_path / "imgs")
    saved = detector.save(tmp_path / "copy.pt")
    obj = torch.load(saved, weights_only=True)  # a plain file: loads without running code
    assert obj["threshold"] == detector.threshold_
    again = GANomalyDetector.load(saved)
    from_file = GANomalyDetector.load(run_dir / "model.pt")
    expected = detector.decision_function(paths)
    np.testing.assert_array_equal(again.decision_function(paths), expected)
    np.testing.assert_array_equal(from_file.decision_function(paths), expected)
    assert again.threshold_ == detector.threshold_ and again.val_median_ == detector.val_median_
    assert again.get_params() == detector.get_params()


def test_cli_train_is_the_same_estimator(run_dir: Path) -> None:
    """Fitting GANomalyDetector with the run's settings on the run's training images gives the
    model the CLI saved: same threshold, same test scores as its scores.csv."""
    from ganomaly.config import detector_part
    from ganomaly.data import load_split
    from ganomaly.run import read_config

    config = read_config(run_dir)
    assert [config.ngf, config.nz, config.epochs] == [int(TINY[1]), int(TINY[3]), int(TINY[7])]
    split = load_split(config)
    detector = GANomalyDetector(**dataclasses.asdict(detector_part(config))).fit(split.train)
    saved = GANomalyDetector.load(run_dir)
    assert detector.threshold_ == pytest.approx(saved.threshold_, rel=1e-6)
    with (run_dir / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    cli_scores = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(detector.decision_function(split.test), cli_scores, rtol=1e-6)
    np.testing.assert_allclose(saved.decision_function(split.test), cli_scores, rtol=1e-6)
