"""Killed, interrupted and damaged runs resume to exactly the result of an uninterrupted run
(a SIGKILL, for every model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganomaly.cli import main
from tests._trained import EVERY_MODEL, GANOMALY_ONLY

ARGS = [
    "--data", "digits", "--normal-class", "0", "--ngf", "8", "--nz", "16", "--image-size", "16",
    "--epochs", "6", "--batch-size", "8", "--checkpoint-every", "2", "--seed", "5", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> Path:
    out = tmp_path_factory.mktemp("resume") / "whole"
    assert main(["train", *ARGS, "--model", model_name, "--out", str(out)]) == 0
    return out


def start(out: Path, model: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ganomaly", "train", *ARGS, "--model", model, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip


def wait_for_mid_epoch_checkpoint(process: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(
            not p.name.endswith("-step-000000.pt") for p in (out / "checkpoints").glob("epoch-*.pt")
        ):
            return
        assert process.poll() is None, "training ended before a checkpoint appeared"
        time.sleep(0.01)
    raise AssertionError("no mid-epoch checkpoint within 120 s")


@EVERY_MODEL
def test_sigkill_mid_epoch_then_resume_gives_identical_scores(uninterrupted, model_name, tmp_path):
    out = tmp_path / "killed"
    process = start(out, model_name)
    try:
        wait_for_mid_epoch_checkpoint(process, out)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "scores.csv").exists()
    assert main(["train", "--resume", str(out)]) == 0
    assert (out / "scores.csv").read_text() == (uninterrupted / "scores.csv").read_text()


@GANOMALY_ONLY
def test_ctrl_c_saves_and_resume_finishes_identically(uninterrupted, model_name, tmp_path):
    out = tmp_path / "interrupted"
    process = start(out, model_name)
    try:
        wait_for_mid_epoch_checkpoint(process, out)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert b"checkpoint saved, continue with: ganomaly train --resume" in stderr
    assert b"Traceback" not in stderr
    assert main(["train", "--resume", str(out)]) == 0
    assert (out / "scores.csv").read_text() == (uninterrupted / "scores.csv").read_text()


@GANOMALY_ONLY
def test_damaged_newest_checkpoint_falls_back_to_the_previous(uninterrupted, tmp_path):
    out = tmp_path / "damaged"
    out.mkdir()
    source = uninterrupted / "checkpoints"
    # Rebuild a run stopped mid-way: config + the run's two newest checkpoints, newest damaged.
    (out / "config.yaml").write_text(
        (uninterrupted / "config.yaml").read_text().replace(str(uninterrupted), str(out))
    )
    (out / "checkpoints").mkdir()
    older, newest = sorted(source.glob("epoch-*.pt"))[-2:]
    (out / "checkpoints" / older.name).write_bytes(older.read_bytes())
    (out / "checkpoints" / newest.name).write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        assert main(["train", "--resume", str(out)]) == 0
    assert (out / "scores.csv").read_text() == (uninterrupted / "scores.csv").read_text()


def test_resume_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    (out / "config.yaml").write_text("data: digits\ntarget_class: 0\nimage_size: '16'\n")
    assert main(["train", "--resume", str(out)]) == 2
    assert "no checkpoints to resume from" in capsys.readouterr().err
