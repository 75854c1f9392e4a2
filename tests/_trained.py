"""Shared helpers for the API / predict / export / server / browser tests: one tiny trained
run per test session (through the real CLI), test images, and a real server process."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY = ["--ngf", "8", "--nz", "16", "--image-size", "16", "--epochs", "2", "--no-progress"]
_CACHE: dict[str, Path] = {}


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained on scikit-learn's digits (class 0 normal), made once."""
    if "run" not in _CACHE:
        from ganomaly.cli import main

        out = tmp_path_factory.mktemp("use-run") / "digits0"
        args = ["train", "--data", "digits", "--normal-class", "0", "--seed", "1"]
        assert main([*args, "--out", str(out), *TINY]) == 0
        _CACHE["run"] = out
    return _CACHE["run"]


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    model: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """`ganomaly serve` as a real subprocess on a free loopback port; yields its base URL and
    always terminates it."""
    port = free_port()
    command = [sys.executable, "-m", "ganomaly", "serve", str(model), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning", *extra],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"server exited with {process.returncode}: {output}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not answer /healthz within {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def exported(tmp_path_factory: pytest.TempPathFactory, fmt: str) -> Path:
    """The trained run exported in-process (`ganomaly.export.export_model`), made once."""
    key = f"export-{fmt}"
    if key not in _CACHE:
        from ganomaly import GANomalyDetector
        from ganomaly.export import SUFFIXES, export_model

        detector = GANomalyDetector.load(trained_run(tmp_path_factory))
        out = tmp_path_factory.mktemp("exported") / f"model{SUFFIXES[fmt]}"
        _CACHE[key] = export_model(detector, fmt, out)
    return _CACHE[key]
