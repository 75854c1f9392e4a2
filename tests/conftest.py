"""Shared fixtures: one tiny trained run, made once per test session through the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY = ["--ngf", "8", "--nz", "16", "--image-size", "16", "--epochs", "2", "--no-progress"]


@pytest.fixture(scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory with nothing in it, so tests never see a user's datasets."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained on scikit-learn's digits (class 0 normal), tiny model."""
    from ganomaly.cli import main

    out = tmp_path_factory.mktemp("runs") / "digits0"
    code = main(
        [
            "train",
            "--data",
            "digits",
            "--normal-class",
            "0",
            "--seed",
            "3",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert code == 0
    return out
