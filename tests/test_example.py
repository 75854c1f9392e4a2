"""examples/own_data/walkthrough.py end to end with tiny settings, as a user runs it: its
dataset follows the folder layout, and train, evaluate, predict and export all happen."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "own_data" / "walkthrough.py"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_own_data_walkthrough_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    work = tmp_path / "walk"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}  # the checkout's package, not an installed one
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--workdir", str(work)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    # The dataset: every defect image is a held-out good crop changed exactly inside its mask.
    data = work / "parts"
    goods = [pixels(p) for p in sorted((data / "test" / "good").glob("*.png"))]
    defects = sorted(p for p in (data / "test").glob("*/*.png") if p.parent.name != "good")
    assert {p.parent.name for p in defects} == {"scratch", "hole", "patch"}
    for image_path in defects:
        kind = image_path.parent.name
        mask = pixels(data / "ground_truth" / kind / f"{image_path.stem}_mask.png")
        image, inside = pixels(image_path), mask > 0
        assert inside.any() and not inside.all()
        originals = [g for g in goods if np.array_equal(g[~inside], image[~inside])]
        assert originals and any((o[inside] != image[inside]).any() for o in originals), image_path

    run_dir = work / "run"
    for name in ("model.pt", "scores.csv", "report.html", "figures/localization.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"] == "folder"
    assert metrics["n_test"] == len(goods) + len(defects)
    assert metrics["n_test_abnormal"] == len(defects)
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and metrics["n_pixel_images"] == metrics["n_test"]

    with (work / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    new_parts = sorted(p.name for p in (work / "new_parts").iterdir())
    assert sorted(Path(row["path"]).name for row in rows) == new_parts and len(new_parts) == 4
    assert all(row["error"] == "" and float(row["score"]) >= 0 for row in rows)
    assert (work / "model.onnx").stat().st_size > 0
    for command in ("train", "evaluate", "predict", "export"):
        assert f"$ ganomaly {command} " in result.stdout
    assert f"localization: {run_dir / 'figures' / 'localization.png'}" in result.stdout


def test_walkthrough_refuses_a_workdir_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "already holds files" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
