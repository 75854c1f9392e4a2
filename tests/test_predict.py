"""`ganomaly predict` as a real subprocess, checked against the in-process Python API."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganomaly import GANomalyDetector
from tests._trained import sample_images


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("predict-images")
    paths = sample_images(folder / "nested" / "deeper")
    return paths


def predict(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ganomaly", "predict", *args, "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_json_and_csv_match_the_api(run_dir: Path, images: list[Path], tmp_path: Path) -> None:
    folder = images[0].parents[1]  # "nested": found recursively
    result = predict(str(run_dir), str(folder), "--json", str(tmp_path / "out.json"),
                     "--csv", str(tmp_path / "out.csv"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    rows = report["results"]
    keys = {"path", "score", "normalized_score", "is_anomaly", "error"}
    assert [set(r) for r in rows] == [keys] * len(rows)
    assert report["n_errors"] == 0 and all(r["error"] is None for r in rows)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images)
    detector = GANomalyDetector.load(run_dir)
    assert report["threshold"] == detector.threshold_
    paths = [Path(r["path"]) for r in rows]
    expected = detector.score(paths)
    np.testing.assert_allclose([r["score"] for r in rows], expected.score, rtol=1e-6, atol=0)
    np.testing.assert_allclose(
        [r["normalized_score"] for r in rows], expected.normalized_score, rtol=0, atol=1e-5
    )
    assert [r["is_anomaly"] for r in rows] == expected.is_anomaly.tolist()
    with (tmp_path / "out.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["path", "score", "normalized_score", "is_anomaly", "error"]
    assert all(r["error"] == "" for r in table)
    assert [r["path"] for r in table] == [r["path"] for r in rows]
    np.testing.assert_allclose([float(r["score"]) for r in table], expected.score, rtol=1e-6)
    assert [int(r["is_anomaly"]) for r in table] == expected.is_anomaly.astype(int).tolist()
    # the terminal table names every image and the verdicts
    for path in images:
        assert str(path) in result.stdout
    assert f"{len(images)} images, {int(expected.is_anomaly.sum())} anomalies" in result.stdout


def test_globs_maps_and_unreadable_images(
    run_dir: Path, images: list[Path], tmp_path: Path
) -> None:
    """A glob, a model.pt, overlays; broken, empty and missing files get a row with their
    reason, in input order, while the rest are still scored, and the exit code is 1."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    pattern = str(images[0].parent / "*.jpg")
    maps = tmp_path / "maps"
    result = predict(str(run_dir / "model.pt"), pattern, str(broken), str(empty), str(missing),
                     "--json", "-", "--maps", str(maps))  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{broken}: not a readable image" in result.stderr
    assert f"{empty}: empty file" in result.stderr
    assert f"{missing}: no such file or folder" in result.stderr
    report = json.loads(result.stdout)
    rows = report["results"]
    jpgs = sorted(p for p in images if p.suffix == ".jpg")
    assert [r["path"] for r in rows] == [*map(str, jpgs), str(broken), str(empty), str(missing)]
    assert report["n_errors"] == 3
    failed = rows[len(jpgs) :]
    assert [r["score"] for r in failed] == [None] * 3
    assert failed[0]["error"].startswith("not a readable image")
    assert [r["error"] for r in failed[1:]] == ["empty file", "no such file or folder"]
    for row, path in zip(rows, jpgs, strict=False):
        assert row["error"] is None
        overlay = Image.open(row["map"])
        with Image.open(path) as original:
            assert overlay.size == original.size and overlay.mode == "RGB"
        assert np.asarray(overlay).std() > 0


def test_nothing_scorable_is_an_error(run_dir: Path, tmp_path: Path) -> None:
    result = predict(str(run_dir), str(tmp_path / "nothing-*.png"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ganomaly: error: no image could be")


def test_csv_has_a_row_for_every_input_and_the_bad_ones_say_why(
    run_dir: Path, images: list[Path], tmp_path: Path
) -> None:
    """A folder with good images and a truncated PNG: one CSV row per file, the truncated one
    with empty scores and its error; exit code 1."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = [folder / p.name for p in images[:2]]
    for source, target in zip(images[:2], good, strict=True):
        target.write_bytes(source.read_bytes())
    whole = images[0].read_bytes() if images[0].suffix == ".png" else images[2].read_bytes()
    cut = folder / "a_cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    result = predict(str(run_dir), str(folder), "--csv", str(tmp_path / "out.csv"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    with (tmp_path / "out.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["path"] for r in table] == sorted(str(p) for p in [*good, cut])
    bad = next(r for r in table if r["path"] == str(cut))
    assert bad["score"] == bad["normalized_score"] == bad["is_anomaly"] == ""
    assert bad["error"].startswith("not a readable image")
    assert all(r["error"] == "" and float(r["score"]) >= 0 for r in table if r is not bad)
