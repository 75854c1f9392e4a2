"""Every dataset in its real on-disk format, trained and evaluated end to end through the CLI."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganomaly.cli import main
from ganomaly.data.cifar import load_cifar10
from ganomaly.data.errors import DataError
from ganomaly.data.mnist import load_idx_dataset
from ganomaly.detector import GANomalyDetector
from ganomaly.images import load_image
from ganomaly.metrics import image_metrics
from tests._trained import FASTEST
from tests.synthetic_data import (
    class_images,
    write_cifar_folder,
    write_cifar_tarball,
    write_idx_dataset,
    write_mvtec_category,
    write_user_folder,
)


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch, isolated_cache: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    monkeypatch.delenv("GANOMALY_DATA", raising=False)


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_fashion_mnist_idx_gzip_trains_at_a_non_power_of_two_size(tmp_path):
    write_idx_dataset(tmp_path / "fm")
    out = tmp_path / "run"
    args = ["--data", "fashion-mnist", "--data-dir", str(tmp_path / "fm"), "--normal-class", "3"]
    assert main(["train", *args, *FASTEST, "--image-size", "48", "--out", str(out)]) == 0
    metrics = metrics_of(out)
    assert metrics["data_source"] == "idx:fashion-mnist"
    assert (metrics["n_test"], metrics["n_test_abnormal"]) == (100, 90)
    assert metrics["auroc"] is not None
    assert json.loads((out / "data.json").read_text())["test_ids"][:2] == [
        "fashion-mnist:test:0",
        "fashion-mnist:test:1",
    ]
    assert torch.load(out / "model.pt", weights_only=True)["image_size"] == [48, 48]


def test_fashion_mnist_found_under_ganomaly_data(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "fashion-mnist", n_train=20, n_test=10)
    monkeypatch.setenv("GANOMALY_DATA", str(tmp_path))
    source = load_idx_dataset("fashion-mnist", None)
    assert source.train.images.shape == (20, 1, 28, 28)
    assert source.test.labels.tolist() == list(range(10))


def test_cifar_folder_and_tarball_read_the_same_images(tmp_path):
    write_cifar_folder(tmp_path / "a")
    write_cifar_tarball(tmp_path / "b" / "cifar-10-python.tar.gz")
    from_folder = load_cifar10(str(tmp_path / "a"))
    from_tarball = load_cifar10(str(tmp_path / "b"))
    assert from_folder.train.images.shape == (200, 3, 32, 32)
    assert from_folder.test.images.shape == (80, 3, 32, 32)
    # Batch 1's first image is class 0: channel-major rows as the official format stores them.
    expected = class_images(np.arange(40) % 10, 32, 3, 1)[0]
    assert np.array_equal(from_folder.train.images[0], expected)
    assert from_folder.train.labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert from_folder.name == "pickle:cifar10"
    assert from_tarball.train.labels.tolist() == (np.arange(200) % 40 % 10).tolist()


def test_cifar_end_to_end_keeps_three_channels(tmp_path):
    write_cifar_folder(tmp_path / "c")
    out = tmp_path / "run"
    args = ["--data", "cifar10", "--data-dir", str(tmp_path / "c"), "--anomaly-class", "2"]
    assert main(["train", *args, *FASTEST, "--out", str(out)]) == 0
    assert torch.load(out / "model.pt", weights_only=True)["channels"] == 3
    assert (metrics_of(out)["n_test"], metrics_of(out)["n_test_abnormal"]) == (80, 8)


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    root = write_cifar_folder(tmp_path / "d")
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 python batch \(refusing"):
        load_cifar10(str(tmp_path / "d"))
    assert (tmp_path / "victim").is_dir()


def test_cifar_missing_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ganomaly.data.cifar.URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    args = ["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--normal-class", "0"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ganomaly: error: cifar10 not found: put cifar-10-python.tar.gz")
    assert error.count("\n") == 1 and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_mvtec_category(root)
    return root


@pytest.fixture(scope="module")
def mvtec_run(mvtec_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "widget"
    args = ["--data", "mvtec", "--data-dir", str(mvtec_root), "--category", "widget"]
    assert main(["train", *args, *FASTEST, "--out", str(out)]) == 0
    return out


def test_mvtec_reports_image_and_pixel_metrics_with_figures(mvtec_run):
    metrics = metrics_of(mvtec_run)
    assert metrics["protocol"] == "mvtec" and metrics["data_source"] == "mvtec:widget"
    assert (metrics["n_test"], metrics["n_test_abnormal"]) == (14, 8)
    for key in ("auroc", "pixel_auroc", "pixel_aupro"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["pixel_grid"] == [40, 48] and metrics["n_pixel_images"] == 14
    assert (mvtec_run / "figures" / "localization.png").stat().st_size > 0
    assert "localization.png" in (mvtec_run / "report.html").read_text()
    with (mvtec_run / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows[:2]] == ["test/crack/000.png", "test/crack/001.png"]
    assert {r["class"] for r in rows} == {"good", "crack", "stain"}
    # Greyscale-looking RGB files keep 3 channels: the first training image decides.
    assert torch.load(mvtec_run / "model.pt", weights_only=True)["channels"] == 3


def test_mvtec_mask_without_image_is_a_clear_error(mvtec_root, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(mvtec_root, root)
    mask = root / "widget" / "ground_truth" / "crack" / "000_mask.png"
    mask.rename(mask.with_name("009_mask.png"))
    args = ["train", "--data", "mvtec", "--data-dir", str(root), "--category", "widget"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "009_mask.png: no test image test/crack/009.* matches this mask" in error
    assert not (tmp_path / "run").exists()


def test_mvtec_test_folder_without_normal_images_is_a_clear_error(mvtec_root, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(mvtec_root, root)
    shutil.rmtree(root / "widget" / "test" / "good")
    args = ["train", "--data", "mvtec", "--data-dir", str(root), "--category", "widget"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    assert "no normal images in" in capsys.readouterr().err


def test_mvtec_is_never_downloaded(tmp_path, capsys):
    args = ["train", "--data", "mvtec", "--data-dir", str(tmp_path), "--category", "bottle"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "MVTec AD category 'bottle' not found" in error and "never downloaded" in error


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    return write_user_folder(tmp_path_factory.mktemp("user"))


def test_every_image_mode_converts_to_the_same_grey_values(user_folder):
    # Grey content saved as L, RGB, RGBA, palette, 16-bit, BMP and TIFF reads back identically
    # as one channel (JPEG is lossy: close, not equal).
    from ganomaly.images import find_images

    files = find_images(user_folder / "train")
    assert len(files) == 32 and {f.suffix for f in files} == {".png", ".jpg", ".bmp", ".tif"}
    by_name = {f.name: f for f in files}
    reference = load_image(by_name["img00.png"], 1)  # L
    assert reference.shape == (1, 30, 36)
    rng = np.random.default_rng(1)
    from tests.synthetic_data import texture

    originals = [texture(rng, 30, 36) for _ in range(8)]
    for i in range(8):
        name = next(n for n in by_name if n.startswith(f"img{i:02d}."))
        got = load_image(by_name[name], 1)[0].astype(int)
        error = np.abs(got - originals[i])
        if name.endswith(".jpg"):  # lossy: close on average, a few larger errors at edges
            assert error.mean() < 4 and error.max() <= 32, name
        else:
            assert error.max() == 0, name
        assert load_image(by_name[name], 3).shape == (3, 30, 36)


def test_user_folder_non_square_size_trains_and_scores(user_folder, tmp_path):
    out = tmp_path / "run"
    args = ["--data", "folder", "--data-dir", str(user_folder), "--channels", "1"]
    assert main(["train", *args, *FASTEST, "--image-size", "100x60", "--out", str(out)]) == 0
    metrics = metrics_of(out)
    assert (metrics["n_test"], metrics["n_test_abnormal"]) == (10, 4)
    assert "pixel_auroc" not in metrics  # no ground_truth/ folder: no pixel metrics
    model = torch.load(out / "model.pt", weights_only=True)
    assert model["image_size"] == [100, 60] and model["channels"] == 1
    detector = GANomalyDetector.load(out)
    maps = detector.anomaly_map(sorted((user_folder / "test" / "dent").iterdir()))
    assert maps.shape == (4, 100, 60)


def test_val_dir_with_defects_sets_the_best_f1_threshold(user_folder, tmp_path):
    val = tmp_path / "val"
    rng = np.random.default_rng(7)
    from tests.synthetic_data import texture

    for kind, n in (("good", 5), ("dent", 3)):
        (val / kind).mkdir(parents=True)
        for i in range(n):
            image = texture(rng, 30, 36)
            if kind == "dent":
                image[5:15, 5:15] = 255
            Image.fromarray(image).save(val / kind / f"{i}.png")
    out = tmp_path / "run"
    args = ["--data", "folder", "--data-dir", str(user_folder), "--val-dir", str(val)]
    assert main(["train", *args, *FASTEST, "--channels", "1", "--out", str(out)]) == 0
    metrics = metrics_of(out)
    assert metrics["threshold_from"] == "labelled set: best F1 over 5 normal and 3 defect images"
    assert metrics["n_val"] == 5 and metrics["threshold_quantile"] is None
    detector = GANomalyDetector.load(out)
    files = sorted((val / "good").iterdir()) + sorted((val / "dent").iterdir())
    labels = np.array([0] * 5 + [1] * 3)
    scores = detector.decision_function(files)
    at_threshold = image_metrics(labels, scores, detector.threshold_)
    assert at_threshold["f1"] == pytest.approx(at_threshold["best_f1_oracle"])
    assert detector.val_median_ == pytest.approx(float(np.median(scores[:5])), rel=1e-6)


def test_val_dir_sharing_a_test_image_is_refused(user_folder, tmp_path, capsys):
    args = [
        "--data",
        "folder",
        "--data-dir",
        str(user_folder),
        "--val-dir",
        str(user_folder / "test"),
    ]
    assert main(["train", *args, *FASTEST, "--out", str(tmp_path / "run")]) == 2
    assert "is also a test image; keep them apart" in capsys.readouterr().err


def test_evaluate_a_saved_model_on_another_labelled_set(mvtec_run, mvtec_root, tmp_path, capsys):
    batch2 = tmp_path / "batch2"
    write_mvtec_category(batch2, size=(32, 32))
    before = (mvtec_run / "metrics.json").read_bytes()
    report = tmp_path / "report"
    argv = ["evaluate", str(mvtec_run), "--data-dir", str(batch2), "--out", str(report)]
    assert main(argv) == 0
    metrics = metrics_of(report)
    assert metrics["pixel_grid"] == [32, 32] and metrics["n_test"] == 14
    assert metrics["threshold"] == metrics_of(mvtec_run)["threshold"]
    assert (report / "report.html").is_file() and (
        report / "figures" / "localization.png"
    ).is_file()
    assert (mvtec_run / "metrics.json").read_bytes() == before
    capsys.readouterr()
    assert main(["evaluate", str(mvtec_run), "--data-dir", str(batch2)]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
