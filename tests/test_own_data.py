"""A user's own images, as a new user meets them: a plain folder of photo crops (no labels, no
test set) trains with `--data-dir` alone, the run says how to evaluate and score later, and the
mistakes a new user makes (class flags on a folder, an MVTec root without a category, a device
the machine lacks) end in one line that leaves nothing behind to block the retry."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganomaly import GANomalyDetector
from ganomaly.cli import main
from tests._trained import FASTEST, TINY
from tests.synthetic_data import write_mvtec_category

TILE = 32
TEST_METRICS = ("auroc", "aupr", "precision", "recall", "f1", "best_f1_oracle")


def photo_tiles(index: int) -> list[np.ndarray]:
    """Non-overlapping 32x32 RGB crops of one of scikit-learn's two sample photographs
    (0: a Chinese temple, 1: a flower), row by row."""
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[index]
    h, w = photo.shape[0] // TILE, photo.shape[1] // TILE
    return [
        photo[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
        for r in range(h)
        for c in range(w)
    ]


def save_pngs(tiles: list[np.ndarray], folder: Path, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, tile in enumerate(tiles):
        paths.append(folder / f"{prefix}{i:03d}.png")
        Image.fromarray(tile).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain folder with sub-folders: 120 temple crops as PNG files, nothing else."""
    root = tmp_path_factory.mktemp("own") / "good_parts"
    tiles = photo_tiles(0)[:120]
    save_pngs(tiles[0::2], root / "line_a", "a")
    save_pngs(tiles[1::2], root / "line_b" / "monday", "b")
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Crops the run never saw: temple crops in good/, flower crops in flower/."""
    root = tmp_path_factory.mktemp("labelled") / "batch"
    save_pngs(photo_tiles(0)[200:206], root / "good", "t")
    save_pngs(photo_tiles(1)[100:104], root / "flower", "f")
    return root


@pytest.fixture(scope="module")
def own_run(crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """`ganomaly train --data-dir CROPS --out RUN` (tiny settings), made once per module;
    returns (run, stdout, stderr with the warnings as the command prints them)."""
    out = tmp_path_factory.mktemp("runs") / "parts"
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        assert main(["train", "--data-dir", str(crops), "--out", str(out), *TINY]) == 0
    printed = [f"ganomaly: warning: {w.message}" for w in caught]
    return out, stdout.getvalue(), stderr.getvalue() + "\n".join(printed)


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_plain_folder_trains_on_normal_images_only(
    crops: Path, own_run: tuple[Path, str, str]
) -> None:
    run, out, err = own_run
    layout = (
        f"data: {crops} is a plain folder of images (in 2 sub-folders), all normal, no test set"
    )
    assert f"{layout} -> --data folder" in err.splitlines()
    assert "120 normal training images, no test set" in err
    detector = GANomalyDetector.load(run)
    obj = torch.load(run / "model.pt", weights_only=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 0 and metrics["n_test_abnormal"] == 0
    assert not set(TEST_METRICS) & set(metrics)  # no test metrics invented
    assert not (run / "scores.csv").exists()
    # threshold and normalisation: the 0.99 quantile and median of the 12 held-out crops
    assert metrics["n_val"] == 12 and metrics["n_train"] == 108
    val = detector.val_scores_
    assert (
        metrics["threshold"] == obj["threshold"] == float(np.quantile(val, 0.99, method="higher"))
    )
    assert metrics["val_median"] == obj["val_median"] == float(np.median(val))
    assert metrics["val_score_max"] == float(val.max())
    assert metrics["n_val_above_threshold"] == int((val > metrics["threshold"]).sum())
    with (run / "history.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2  # TINY: 2 epochs
    assert "no test set, so no test metrics" in out and "AUROC" not in out
    assert f"ganomaly predict {run} IMAGES" in out


def test_few_validation_images_warn_with_the_threshold_and_what_to_do(
    own_run: tuple[Path, str, str],
) -> None:
    run, _, err = own_run
    threshold = json.loads((run / "metrics.json").read_text())["threshold"]
    warning = next(line for line in err.splitlines() if "validation images" in line)
    assert "only 12 validation images: the 0.99 quantile is simply their maximum " in warning
    assert f"({threshold:.4g})" in warning and "about 1 in 13 normal images" in warning
    assert all(flag in warning for flag in ("--val-fraction", "--val-dir", "--threshold"))


def test_the_report_shows_validation_figures_and_how_to_go_on(
    own_run: tuple[Path, str, str],
) -> None:
    run, _, _ = own_run

    class Page(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.images: list[str] = []
            self.code: list[str] = []
            self.in_code = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.in_code = tag == "code"
            if tag == "img":
                self.images.append(str(dict(attrs)["src"]))

        def handle_data(self, data: str) -> None:
            if self.in_code:
                self.code.append(data)

    page = Page()
    page.feed((run / "report.html").read_text())
    figures = ["figures/loss_curves.png", "figures/restoration.png", "figures/score_histogram.png"]
    assert page.images == figures
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(
        Path(f).name for f in figures
    )
    for figure in figures:
        pixels = np.asarray(Image.open(run / figure).convert("L"), dtype=float)
        assert pixels.std() > 10, figure
    assert f"ganomaly evaluate {run} --data-dir LABELLED_DIR --out {run}-evaluated" in page.code
    assert f"ganomaly predict {run} IMAGES_OR_FOLDERS" in page.code


def test_predict_scores_new_crops(
    own_run: tuple[Path, str, str], labelled: Path, tmp_path: Path
) -> None:
    run, _, _ = own_run
    table = tmp_path / "scores.csv"
    assert main(["predict", str(run), str(labelled), "--csv", str(table), "--no-progress"]) == 0
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    files = sorted(labelled.rglob("*.png"))
    assert [row["path"] for row in rows] == [str(p) for p in files]
    expected = GANomalyDetector.load(run).decision_function(files)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-6)
    assert all(row["error"] == "" for row in rows)


def test_evaluate_later_on_labelled_images(
    own_run: tuple[Path, str, str], labelled: Path, tmp_path: Path
) -> None:
    run, _, _ = own_run
    before = (run / "metrics.json").read_bytes()
    report = tmp_path / "evaluated"
    argv = ["evaluate", str(run), "--data-dir", str(labelled), "--out", str(report)]
    assert main([*argv, "--no-progress", "--threads", "1", "--device", "cpu"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_test"] == 10 and metrics["n_test_abnormal"] == 4
    assert set(TEST_METRICS) <= set(metrics)
    assert metrics["threshold"] == json.loads(before)["threshold"]  # the run's own threshold
    with (report / "scores.csv").open() as handle:
        classes = [row["class"] for row in csv.DictReader(handle)]
    assert classes == ["flower"] * 4 + ["good"] * 6
    assert (run / "metrics.json").read_bytes() == before  # the run directory is left alone


def test_evaluate_without_labelled_data_says_how(
    own_run: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run, _, _ = own_run
    assert main(["evaluate", str(run)]) == 2
    assert error_lines(capsys) == [
        f"ganomaly: error: {run} was trained without a test set; evaluate it on labelled "
        f"images: ganomaly evaluate {run} --data-dir LABELLED_DIR --out REPORT_DIR"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--normal-class", "1"], "--normal-class 1 does not apply: "),
        (["--data", "mnist", "--normal-class", "1"], "--data mnist, but "),
    ],
)
def test_class_flags_on_a_folder_of_pngs_are_a_one_line_error(
    crops: Path,
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(crops), *flags, "--out", str(out), *TINY]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"ganomaly: error: {message}")
    assert f"{crops} is a plain folder of images" in lines[0]
    assert not out.exists()


def test_an_mvtec_root_without_category_lists_the_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for category in ("widget", "gadget"):
        write_mvtec_category(tmp_path / "mvtec", category, size=(16, 16))
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tmp_path / "mvtec"), "--out", str(out)]) == 2
    assert error_lines(capsys) == [
        f"ganomaly: error: {tmp_path / 'mvtec'} is an MVTec AD root with categories gadget, "
        "widget: choose one with --category NAME (e.g. --category gadget)"
    ]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_device_fails_cleanly_and_the_same_out_then_works(
    crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "retry"
    argv = ["train", "--data-dir", str(crops), "--out", str(out), *FASTEST]
    assert main([*argv, "--device", "cuda"]) == 2
    assert error_lines(capsys)[-1:] == [
        "ganomaly: error: --device cuda: CUDA is not available on this machine"
    ]
    assert not (tmp_path / "runs").exists()
    assert main([*argv, "--device", "cpu"]) == 0
    assert GANomalyDetector.load(out).n_train_ == 108


def test_a_failure_before_the_first_checkpoint_removes_only_what_the_run_made(
    crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["train", "--data-dir", str(crops), "--out", str(out), "--overwrite", *FASTEST]
    monkeypatch.setattr("ganomaly.run.save_checkpoint", disk_full)
    assert main(argv) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    nested = tmp_path / "new" / "deeper" / "run"
    assert main(["train", "--data-dir", str(crops), "--out", str(nested), *FASTEST]) == 2
    assert not (tmp_path / "new").exists()


def test_an_older_failed_attempts_leftovers_are_taken_over(
    crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    (out / "figures").mkdir(parents=True)
    (out / "config.yaml").write_text("data: folder\n")
    (out / "data.json").write_text("{}")
    assert main(["train", "--data-dir", str(crops), "--out", str(out), *FASTEST]) == 0
    assert "taking over what a failed attempt left" in capsys.readouterr().err
    assert (out / "model.pt").is_file()
    assert main(["train", "--data-dir", str(crops), "--out", str(out), *FASTEST]) == 2
    assert error_lines(capsys)[-1] == (
        f"ganomaly: error: --out {out} already holds files of a finished run (model.pt); "
        "choose another --out, or pass --overwrite to replace it"
    )


def tiny_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)


LAYOUTS = {
    # kind: (files to create, what --data-dir alone chooses; None: an error)
    "images": (["a.png", "x/b.png", "x/y/c.jpg"], "folder"),
    "folder": (["train/a.png", "test/good/b.png", "test/dent/c.png"], "folder"),
    "train-only": (["train/line/a.png"], "folder"),
    "mvtec-category": (
        ["train/good/a.png", "test/good/b.png", "test/cut/c.png", "ground_truth/cut/c_mask.png"],
        "mvtec",
    ),
    "mvtec-root": (["bottle/train/good/a.png", "bottle/test/good/b.png"], "mvtec"),
    "labelled": (["good/a.png", "scratch/b.png"], None),
    "test-only": (["test/good/a.png"], None),
    "idx": (
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ],
        "mnist",
    ),
    "cifar10": (["cifar-10-python.tar.gz"], "cifar10"),
    "empty": (["notes.txt"], None),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_data_dir_alone_recognises_each_layout(name: str, tmp_path: Path) -> None:
    from ganomaly.config import RunConfig
    from ganomaly.data import DataError, choose_data
    from ganomaly.data.layout import detect_layout

    files, chosen = LAYOUTS[name]
    for relative in files:
        if relative.endswith((".png", ".jpg")):
            tiny_png(tmp_path / relative)
        else:
            (tmp_path / relative).write_bytes(b"")
    layout = detect_layout(tmp_path)
    assert layout.kind == name.replace("train-only", "folder")
    assert layout.description.startswith(str(tmp_path))
    config = RunConfig(
        data_dir=str(tmp_path), target_class=1 if chosen in ("mnist", "cifar10") else None
    )
    if chosen is None:
        with pytest.raises(DataError, match=f"^{tmp_path}"):
            choose_data(config)
    else:
        choice = choose_data(config)
        assert choice.data == chosen and choice.description.startswith(str(tmp_path))
        assert choice.category == ("bottle" if name == "mvtec-root" else None)


def test_run_directories_inside_a_plain_folder_are_not_training_images(tmp_path: Path) -> None:
    from ganomaly.data.layout import plain_tree_images

    tiny_png(tmp_path / "parts" / "a.png")
    run = tmp_path / "runs" / "first"
    tiny_png(run / "figures" / "roc.png")
    (run / "config.yaml").write_text("data: folder\n")
    (run / "data.json").write_text("{}")
    assert plain_tree_images(tmp_path) == [tmp_path / "parts" / "a.png"]


def test_data_named_explicitly_wins_unless_the_folder_contradicts_it(tmp_path: Path) -> None:
    from ganomaly.config import RunConfig
    from ganomaly.data import DataError, choose_data

    for name in LAYOUTS["idx"][0]:
        (tmp_path / name).write_bytes(b"")
    for data in ("mnist", "fashion-mnist"):
        assert choose_data(RunConfig(data=data, data_dir=str(tmp_path))).data == data
    with pytest.raises(DataError, match=f"^--data cifar10, but {tmp_path} holds IDX files"):
        choose_data(RunConfig(data="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="^--data digits ships with scikit-learn"):
        choose_data(RunConfig(data="digits", data_dir=str(tmp_path)))
    assert choose_data(RunConfig()).data == "mnist"  # no --data, no --data-dir: the demo's
