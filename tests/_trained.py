"""Shared helpers for the API / predict / export / server / browser tests: one tiny trained
run per test session (through the real CLI), test images, and a real server process."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ganomaly.config import MODELS

# The suite's model settings: small enough that training takes a second or two.
TINY = ["--ngf", "8", "--nz", "16", "--image-size", "16", "--epochs", "2", "--no-progress"]
# Smaller still, for tests that train a model per dataset format (later flags win).
FASTEST = [*TINY, "--ngf", "4", "--nz", "8", "--epochs", "1"]
_CACHE: dict[str, Path] = {}
# Marks a contract test (train, evaluate, predict, export, serve, resume, torchrun) to run once
# per model: it parametrizes the `model_name` fixture (tests/conftest.py, GANomaly by default)
# that the run fixtures read. Module scope: pytest keeps each model's tests of a module
# together, so a module's fixtures (a server, a run) are made once per model.
EVERY_MODEL = pytest.mark.parametrize("model_name", MODELS, indirect=True, scope="module")
# GANomaly alone, as a parameter: for a module's other tests that use the fixture its
# EVERY_MODEL tests use (a server), so they share GANomaly's rather than start another.
GANOMALY_ONLY = pytest.mark.parametrize("model_name", MODELS[:1], indirect=True, scope="module")


def estimator_params(flags: Sequence[str] = TINY) -> dict[str, Any]:
    """Settings such as TINY as GANomalyDetector keyword arguments, read by the CLI's own
    parser, so the numbers are written once (in the flag lists above)."""
    from ganomaly.cli import build_parser
    from ganomaly.config import detector_fields

    given = vars(build_parser().parse_args(["train", *flags]))
    return {name: given[name] for name in detector_fields() if name in given}


def trained_run(tmp_path_factory: pytest.TempPathFactory, model: str = "ganomaly") -> Path:
    """A run directory of `model` trained on scikit-learn's digits (class 0 normal), made
    once per model."""
    key = f"run-{model}"
    if key not in _CACHE:
        from ganomaly.cli import main

        out = tmp_path_factory.mktemp(f"use-run-{model}") / "digits0"
        args = ["train", "--data", "digits", "--normal-class", "0", "--seed", "1"]
        assert main([*args, "--model", model, "--out", str(out), *TINY]) == 0
        _CACHE[key] = out
    return _CACHE[key]


def sample_images(folder: Path) -> list[Path]:
    """Real digits as PNG (RGB, 40x40) and JPEG (grey, 31x23): other sizes and channel counts
    than the model's 16x16 grey, so resizing and channel conversion are exercised."""
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    paths = []
    for i in (0, 1, 10, 33):
        pixels = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
        image = Image.fromarray(pixels)
        png = folder / f"digit{i}_{digits.target[i]}.png"
        image.resize((40, 40), Image.Resampling.BICUBIC).convert("RGB").save(png)
        jpg = folder / f"digit{i}_{digits.target[i]}.jpg"
        image.resize((23, 31), Image.Resampling.BILINEAR).save(jpg, quality=92)
        paths += [png, jpg]
    return paths


def benchmark_script(stem: str) -> ModuleType:
    """benchmarks/<stem>.py, imported by path once (benchmarks/ is not a package)."""
    name = f"ganomaly_{stem}"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{stem}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_test_module() -> ModuleType:
    """benchmarks/load_test.py: the server launcher, the fuzz cases and the request helpers
    are written once, there."""
    return benchmark_script("load_test")


@contextlib.contextmanager
def running_server(
    model: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """`ganomaly serve` as a real subprocess on a free loopback port; yields its base URL and
    always terminates it."""
    with load_test_module().serve(model, *extra, env=env, timeout=timeout) as server:
        yield server.url


def exported(tmp_path_factory: pytest.TempPathFactory, fmt: str, model: str = "ganomaly") -> Path:
    """The trained run of `model` exported in-process (`ganomaly.export.export_model`), made
    once per model and format."""
    key = f"export-{fmt}-{model}"
    if key not in _CACHE:
        from ganomaly import GANomalyDetector
        from ganomaly.export import SUFFIXES, export_model

        detector = GANomalyDetector.load(trained_run(tmp_path_factory, model))
        out = tmp_path_factory.mktemp("exported") / f"model{SUFFIXES[fmt]}"
        _CACHE[key] = export_model(detector, fmt, out)
    return _CACHE[key]
