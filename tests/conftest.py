"""Shared fixtures: one tiny trained run, made once per test session through the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._trained import exported, trained_run

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory with nothing in it, so tests never see a user's datasets."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's one trained run (tests/_trained.py): digits class 0, tiny model."""
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same trained run, under the name the API, predict, export and server tests use."""
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run exported to ONNX, made once."""
    return exported(tmp_path_factory, "onnx")
