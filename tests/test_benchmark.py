"""`ganomaly benchmark`: a CI-sized grid, run twice; the tables, the resume and the baselines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from ganomaly.benchmark import parse_classes
from ganomaly.cli import main
from ganomaly.config import ConfigError

GRID = [
    "benchmark", "--data", "digits", "--protocol", "normal-class", "--classes", "0,1",
    "--seeds", "0,1", "--epochs", "1", "--ngf", "8", "--nz", "16", "--image-size", "16",
    "--no-progress",
]  # fmt: skip
TABLES = ("results.md", "results.csv", "results.json")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "digits"
    assert main([*GRID, "--out", str(out)]) == 0
    return out


def test_second_run_reuses_every_cell_and_writes_identical_tables(bench_dir, capsys):
    first = {name: (bench_dir / name).read_text() for name in TABLES}
    results = sorted(bench_dir.glob("cells/*/*/seed*/result.json"))
    assert len(results) == 3 * 2 * 2  # methods x classes x seeds
    stamps = [p.stat().st_mtime_ns for p in results]
    capsys.readouterr()
    assert main([*GRID, "--out", str(bench_dir)]) == 0
    err = capsys.readouterr().err
    assert err.count("done before, kept") == 12
    assert [p.stat().st_mtime_ns for p in results] == stamps  # no cell re-run
    assert {name: (bench_dir / name).read_text() for name in TABLES} == first


def test_table_is_mean_and_std_of_the_cells(bench_dir):
    summary = json.loads((bench_dir / "results.json").read_text())
    rows = {
        (r["method"], r["metric"], r["class"]): r
        for r in csv.DictReader((bench_dir / "results.csv").open())
    }
    for method in ("ganomaly", "autoencoder", "raw-pixel"):
        per_class = {}
        for name in ("0", "1"):
            values = [
                json.loads((bench_dir / f"cells/{method}/{name}/seed{s}/result.json").read_text())[
                    "metrics"
                ]["auroc"]
                for s in (0, 1)
            ]
            per_class[name] = values
            row = rows[(method, "auroc", name)]
            # The CSV rounds to 6 significant digits.
            assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-5, abs=1e-7)
            assert float(row["std"]) == pytest.approx(np.std(values), rel=1e-5, abs=1e-7)
            assert row["n_seeds"] == "2"
        seed_means = [np.mean([per_class["0"][k], per_class["1"][k]]) for k in (0, 1)]
        assert summary["table"][method]["auroc"]["mean"]["mean"] == pytest.approx(
            np.mean(seed_means)
        )
    markdown = (bench_dir / "results.md").read_text()
    assert "| **mean** |" in markdown and "GANomaly" in markdown and "raw pixels" in markdown
    assert (bench_dir / "results.png").stat().st_size > 5_000


def test_raw_pixel_baseline_is_the_distance_to_the_mean_normal_image(bench_dir):
    # Worked out independently of the library on the 8x8 images themselves: the ranking of
    # squared distances to the mean normal image is close to the one at the model's 16x16
    # (a bilinear upsampling), so the AUROC must agree to within a few hundredths.
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    raw = json.loads((bench_dir / "cells/raw-pixel/0/seed0/result.json").read_text())
    mean = images[labels == 0].mean(0)
    scores = ((images - mean) ** 2).mean((1, 2))
    expected = roc_auc_score(labels != 0, scores)
    assert raw["metrics"]["auroc"] == pytest.approx(expected, abs=0.03)
    assert raw["metrics"]["auroc"] > 0.9


def test_class_lists_and_bad_flags(tmp_path, capsys):
    assert parse_classes("0-3,7", "normal-class") == ["0", "1", "2", "3", "7"]
    assert parse_classes("bottle,grid", "mvtec") == ["bottle", "grid"]
    with pytest.raises(ConfigError, match="a range is written like 0-9"):
        parse_classes("5-2", "paper")
    out = tmp_path / "b"
    assert main([*GRID[:-1], "--methods", "ganomaly,svm", "--out", str(out)]) == 2
    assert "--methods 'ganomaly,svm'" in capsys.readouterr().err
