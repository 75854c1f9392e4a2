"""Watching a training run: one line per epoch on stderr, TensorBoard event files, and a
library that stays quiet unless asked."""

from __future__ import annotations

import csv
import io
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganomaly import GANomalyDetector
from ganomaly.cli import main
from tests._trained import FASTEST, TINY

DIGITS_0 = ["train", "--data", "digits", "--normal-class", "0", "--seed", "1"]
# An epoch line: "epoch 1/2  l_enc 0.03559  ...  d_reinits 0  val median 0.03531 q99 0.05568
# 863 img/s  ETA 0:00:01"
NUMBER = r"(-?[0-9.]+(?:e[-+]?[0-9]+)?)"
LOSS = re.compile(rf"\b(l_[a-z]+) {NUMBER}")
TAIL = re.compile(
    rf"d_reinits (\d+)  val median {NUMBER} q99 {NUMBER}  (\d+) img/s  ETA \d+:\d\d:\d\d$"
)


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("model", "losses"),
    [
        ("ganomaly", ["l_enc", "l_con", "l_adv", "l_g", "l_d"]),
        ("skip-ganomaly", ["l_lat", "l_con", "l_adv", "l_g", "l_d"]),
    ],
)
def test_no_progress_prints_one_line_per_epoch(tmp_path, capsys, model, losses):
    out = tmp_path / "run"
    assert main([*DIGITS_0, "--out", str(out), *TINY, "--model", model]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    for line, row in zip(lines, history(out), strict=True):
        assert [name for name, _ in LOSS.findall(line)] == losses
        for name, value in LOSS.findall(line):  # 4 significant digits of history.csv's value
            assert float(value) == pytest.approx(float(row[name]), rel=1e-3), name
        tail = TAIL.search(line)
        assert tail is not None, line
        reinits, median, q99, speed = tail.groups()
        assert int(reinits) == int(row["d_reinits"])
        assert float(median) == pytest.approx(float(row["val_score_median"]), rel=1e-3)
        assert float(q99) == pytest.approx(float(row["val_score_q99"]), rel=1e-3)
        assert int(speed) == round(float(row["images_per_second"]))
    assert not (out / "tensorboard").exists()  # only with --tensorboard
    # The command's log handler is gone after it: the process's logging is as it was.
    logger = logging.getLogger("ganomaly.training")
    assert logger.handlers == [] and logger.propagate and logger.level == logging.NOTSET


def test_library_is_quiet_unless_logging_asks(capsys, caplog):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[digits.target == 0] * (255 / 16)).astype(np.uint8)[:, None]
    params = {"image_size": 16, "ngf": 4, "nz": 8, "epochs": 1, "progress": False}
    GANomalyDetector(**params).fit(images)
    assert capsys.readouterr().err == ""
    assert caplog.records == []
    caplog.set_level(logging.INFO, logger="ganomaly")  # a library user opting in
    GANomalyDetector(**params).fit(images)
    assert [r.getMessage().split()[:2] for r in caplog.records] == [["epoch", "1/1"]]
    assert capsys.readouterr().err == ""  # logging's handlers decide, not the library


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main([*DIGITS_0, "--out", str(out), *TINY, "--tensorboard"]) == 0
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    rows = history(out)
    columns = list(rows[0])[1:]  # every history.csv column but `epoch`, the x axis
    losses = ["l_enc", "l_con", "l_adv", "l_g", "l_d"]
    assert set(events.Tags()["scalars"]) == {f"step/{n}" for n in losses} | {
        f"epoch/{c}" for c in columns
    }
    for column in columns:
        points = events.Scalars(f"epoch/{column}")
        assert [p.step for p in points] == [1, 2]
        expected = [float(row[column]) for row in rows]
        assert [p.value for p in points] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # Per step: consecutive steps, and each epoch's steps average to its history value.
    steps = events.Scalars("step/l_g")
    assert [p.step for p in steps] == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0
    per_epoch = len(steps) // 2
    for epoch, row in enumerate(rows):
        values = [p.value for p in steps[epoch * per_epoch : (epoch + 1) * per_epoch]]
        assert np.mean(values) == pytest.approx(float(row["l_g"]), rel=1e-5)
    # One restoration grid per epoch: 3 rows (x, x_hat, |x - x_hat|) of 8 validation images,
    # 16 px enlarged 4x to 64, with 2 px gaps.
    grids = events.Images("restoration")
    assert [g.step for g in grids] == [1, 2]
    picture = np.asarray(Image.open(io.BytesIO(grids[-1].encoded_image_string)))
    assert picture.shape == (2 + 3 * 66, 2 + 8 * 66, 3)
    assert picture[2:66, 2:66].std() > 0  # a real image, not an empty canvas


def test_tensorboard_missing_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    out = tmp_path / "run"
    assert main([*DIGITS_0, "--out", str(out), *FASTEST, "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "ganomaly: error: --tensorboard needs the tensorboard package: "
        "pip install 'ganomaly[tensorboard]' (or pip install tensorboard)"
    ]
    assert not out.exists()  # checked before anything was written
