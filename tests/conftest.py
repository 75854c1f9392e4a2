"""Shared fixtures: one tiny trained run per model, made once per test session through the
real CLI (tests/_trained.py). The run fixtures are module-scoped lookups of that one run, so
a test marked EVERY_MODEL can swap the model for a whole module."""

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


@pytest.fixture(scope="module")
def model_name(request: pytest.FixtureRequest) -> str:
    """The model the run fixtures below train: GANomaly, unless the test is marked
    EVERY_MODEL (tests/_trained.py), which parametrizes this fixture over every model."""
    # An indirect parameter, not an override by direct parametrization: this way a test
    # without it gets a fresh "ganomaly" here (and fresh runs, servers) after one with it.
    return str(getattr(request, "param", "ganomaly"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> Path:
    """The session's trained run of `model_name` (tests/_trained.py): digits class 0, tiny."""
    return trained_run(tmp_path_factory, model_name)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> Path:
    """The same trained run, under the name the API, predict, export and server tests use."""
    return trained_run(tmp_path_factory, model_name)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, model_name: str) -> Path:
    """The trained run of `model_name` exported to ONNX, made once per model."""
    return exported(tmp_path_factory, "onnx", model_name)
