"""The torch-free ONNX runtime (`ganomaly.onnx_runtime`, `ganomaly-onnx`): its numpy resize
and preprocessing equal PyTorch's, its scores equal the PyTorch model's on the same files, bad
files get error rows while the rest are scored, and files it cannot trust are refused.

(The same runtime in a virtual environment without torch, installed from the built wheel, is
checked by .ci/install_check.sh.)"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganomaly import GANomalyDetector
from ganomaly.images import preprocess as torch_preprocess
from ganomaly.onnx_runtime import (
    OnnxDetector,
    OnnxModelError,
    main,
    preprocess,
    resize,
)
from ganomaly.results import CSV_COLUMNS
from tests._trained import sample_images

ROOT = Path(__file__).resolve().parents[1]
FILTERS = ("bilinear", "bicubic", "nearest", "area")
# Input sizes (H, W): tiny, odd, non-square, portrait and landscape, a photo-sized one.
INPUT_SIZES = [
    (1, 5),
    (3, 3),
    (7, 16),
    (16, 16),
    (28, 28),
    (31, 23),
    (40, 40),
    (60, 100),
    (480, 640),
]
# Output sizes: the model sizes users pick (16, 32, 64, HxW) and small odd ones, so every
# input is both up- and down-scaled, on each axis separately.
OUTPUT_SIZES = [(16, 16), (32, 32), (64, 64), (16, 40), (100, 60), (7, 3), (2, 2)]


def torch_resize(x: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """What `ganomaly.images.preprocess` calls for each filter."""
    t = torch.from_numpy(x)
    if interpolation in ("bilinear", "bicubic"):
        out = F.interpolate(t, size=size, mode=interpolation, align_corners=False, antialias=True)
    elif interpolation == "nearest":
        out = F.interpolate(t, size=size, mode="nearest-exact")
    else:
        out = F.interpolate(t, size=size, mode=interpolation)
    return out.numpy()


@pytest.mark.parametrize("interpolation", FILTERS)
def test_numpy_resize_matches_torch_interpolate(interpolation: str) -> None:
    rng = np.random.default_rng(0)
    cases = list(itertools.product(INPUT_SIZES, OUTPUT_SIZES, (1, 3)))
    for (h, w), size, channels in cases:
        x = rng.random((2, channels, h, w), dtype=np.float32)
        got = resize(x, size, interpolation)
        want = torch_resize(x, size, interpolation)
        assert got.shape == want.shape == (2, channels, *size)
        assert got.dtype == np.float32
        np.testing.assert_allclose(
            got, want, rtol=0, atol=1e-5, err_msg=f"{(h, w)} -> {size}, {channels} channels"
        )


@pytest.mark.parametrize("interpolation", ["nearest", "area"])
def test_nearest_and_area_match_torch_on_every_small_size(interpolation: str) -> None:
    """Integer ramps make a wrong source pixel show as a whole unit of error; every (in, out)
    pair up to 70 covers the index rounding (nearest picks its pixel from a float32 product)."""
    for n_in, n_out in itertools.product(range(1, 71), range(1, 71)):
        ramp = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in)
        got = resize(ramp, (1, n_out), interpolation)
        want = torch_resize(ramp, (1, n_out), interpolation)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{n_in} -> {n_out}")


def test_antialiased_resize_is_not_plain_resize() -> None:
    """The antialias actually happens: shrinking a 1-pixel checkerboard averages it to grey,
    where sampling without antialias would keep black and white."""
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[None, None]
    for interpolation in ("bilinear", "bicubic"):
        out = resize(board, (16, 16), interpolation)
        np.testing.assert_allclose(out, 0.5, atol=0.02)


@pytest.mark.parametrize("interpolation", FILTERS)
def test_preprocess_matches_the_torch_preprocess(interpolation: str) -> None:
    """Channel rules (grey, RGB, RGBA in; 1 or 3 out), uint8 and [0, 1] float input, the
    clamp after bicubic's overshoot and the scaling to [-1, 1], against ganomaly.images."""
    rng = np.random.default_rng(1)
    for (h, w), size, c_in, c_out in itertools.product(
        [(9, 14), (40, 40), (16, 16)], [(16, 16), (32, 24)], (1, 3, 4), (1, 3)
    ):
        pixels = rng.integers(0, 256, (2, c_in, h, w), dtype=np.uint8)
        for images in (pixels, pixels.astype(np.float64) / 255.0):
            got = preprocess(images, size, c_out, interpolation)
            want = torch_preprocess(images, size, c_out, interpolation).numpy()
            assert got.shape == want.shape == (2, c_out, *size) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
            assert got.min() >= -1.0 and got.max() <= 1.0


@pytest.mark.parametrize(
    "images, message",
    [
        (np.full((1, 1, 8, 8), np.nan), "NaN or infinite"),
        (np.full((1, 1, 8, 8), 2.0), "must be in [0, 1]"),
        (np.zeros((8, 8), np.uint8), "expected images shaped (N, C, H, W)"),
        (np.zeros((1, 2, 8, 8), np.uint8), "cannot convert 2-channel images"),
    ],
)
def test_preprocess_refuses_what_the_torch_preprocess_refuses(
    images: np.ndarray, message: str
) -> None:
    for function in (preprocess, torch_preprocess):
        with pytest.raises(ValueError, match=re.escape(message)):
            function(images, (16, 16), 1)


# -- the exported model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sample_images(tmp_path_factory.mktemp("runtime-images"))


def test_runtime_scores_files_as_the_pytorch_model_does(
    run_dir: Path, onnx_file: Path, images: list[Path]
) -> None:
    detector = GANomalyDetector.load(run_dir)
    want = detector.score(images, with_maps=True)
    runtime = OnnxDetector.load(onnx_file)
    assert runtime.image_size == (16, 16) and runtime.channels == 1
    assert runtime.threshold == detector.threshold_
    results = runtime.score_files(images, batch_size=3)  # batches of 3: split batches too
    assert [r.path for r in results] == [str(p) for p in images]
    assert all(r.error is None for r in results)
    scores = np.array([r.score for r in results])
    np.testing.assert_allclose(scores, want.score, rtol=1e-4, atol=0)
    normalized = np.array([r.normalized_score for r in results])
    np.testing.assert_allclose(normalized, want.normalized_score, rtol=1e-4, atol=1e-4)
    assert [r.is_anomaly for r in results] == list(want.is_anomaly)
    maps = np.stack([r.anomaly_map for r in results if r.anomaly_map is not None])
    np.testing.assert_allclose(maps, want.maps, rtol=0, atol=1e-4)
    assert [r.is_anomaly for r in results] == [r.score > runtime.threshold for r in results]


def bad_files(folder: Path, good: Path) -> dict[str, Path]:
    """A truncated PNG, an empty file and a missing one, next to good images."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    truncated = folder / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    return {"truncated": truncated, "empty": empty, "missing": folder / "missing.png"}


def test_bad_files_get_error_rows_and_the_rest_are_scored(
    onnx_file: Path, images: list[Path], tmp_path: Path
) -> None:
    runtime = OnnxDetector.load(onnx_file)
    bad = bad_files(tmp_path, images[0])
    inputs = [images[0], bad["truncated"], images[1], bad["empty"], bad["missing"], images[2]]
    results = runtime.score_files(inputs)
    assert [r.path for r in results] == [str(p) for p in inputs]
    errors = {Path(r.path).name: r.error for r in results if r.error}
    assert errors == {
        "truncated.png": "not a readable image (image file is truncated)",
        "empty.png": "empty file",
        "missing.png": "no such file or folder",
    }
    for r in results:
        if r.error:
            assert r.score is None and r.normalized_score is None and r.is_anomaly is None
    alone = runtime.score_files(images[:3])
    scored = [r for r in results if r.error is None]
    assert [r.score for r in scored] == [r.score for r in alone]  # neighbours change nothing
    assert all(np.isfinite(r.score) for r in scored)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`ganomaly-onnx` in a fresh interpreter that fails if anything imports torch."""
    code = (
        "import sys; from ganomaly.onnx_runtime import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_csv_json_and_exit_codes(
    run_dir: Path, onnx_file: Path, images: list[Path], tmp_path: Path
) -> None:
    bad = bad_files(tmp_path / "bad", images[0])
    folder = images[0].parent
    out_csv, out_json = tmp_path / "scores.csv", tmp_path / "scores.json"
    args = [str(bad["missing"]), str(folder), str(bad["truncated"])]
    result = run_cli(
        "predict", str(onnx_file), *args, "--csv", str(out_csv), "--json", str(out_json)
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    with out_csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert (
        tuple(rows[0])
        == CSV_COLUMNS
        == ("path", "score", "normalized_score", "is_anomaly", "error")
    )
    folder_files = sorted(str(p) for p in folder.iterdir())
    assert [r[0] for r in rows[1:]] == [str(bad["missing"]), *folder_files, str(bad["truncated"])]
    by_path = {r[0]: r for r in rows[1:]}
    assert by_path[str(bad["missing"])][1:] == ["", "", "", "no such file or folder"]
    assert by_path[str(bad["truncated"])][1:4] == ["", "", ""]
    detector = GANomalyDetector.load(run_dir)
    want = detector.score([Path(p) for p in folder_files])
    for i, path in enumerate(folder_files):
        _, score, normalized, is_anomaly, error = by_path[path]
        assert error == "" and score == f"{float(score):.9g}"
        assert float(score) == pytest.approx(float(want.score[i]), rel=1e-4)
        assert float(normalized) == pytest.approx(float(want.normalized_score[i]), abs=1e-4)
        assert is_anomaly == str(int(want.is_anomaly[i]))
    record = json.loads(out_json.read_text())
    assert record["threshold"] == detector.threshold_
    assert [r["path"] for r in record["results"]] == [r[0] for r in rows[1:]]
    assert record["results"][0] == {
        "path": str(bad["missing"]), "score": None, "normalized_score": None,
        "is_anomaly": None, "error": "no such file or folder",
    }  # fmt: skip
    stderr = result.stderr.strip().splitlines()
    assert stderr[-1] == "ganomaly-onnx: 2 input(s) could not be scored"

    everything_fine = run_cli("predict", str(onnx_file), str(folder))
    assert everything_fine.returncode == 0 and everything_fine.stderr == ""
    assert everything_fine.stdout.splitlines()[-1].startswith(f"{len(folder_files)} images, ")

    nothing = run_cli("predict", str(onnx_file), str(bad["empty"]), "--csv", str(out_csv))
    assert nothing.returncode == 2
    assert nothing.stderr.strip().splitlines()[-1] == (
        "ganomaly-onnx: error: no image could be scored (1 input(s) failed)"
    )
    assert out_csv.read_text().splitlines()[1] == f"{bad['empty']},,,,empty file"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "ganomaly-onnx: error: the following arguments are required: COMMAND"),
        (["predict"], "ganomaly-onnx predict: error: the following arguments are required"),
        (["predict", "M", "a.png", "--batch-size", "x"], "ganomaly-onnx predict: error: argument"),
        (["predict", "nowhere.onnx", "a.png"], "ganomaly-onnx: error: nowhere.onnx: no such file"),
    ],
)
def test_cli_bad_usage_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def rewrite_metadata(source: Path, target: Path, change: dict[str, str | None]) -> Path:
    """A copy of an exported model with `ganomaly.*` metadata entries changed (None: removed)."""
    import onnx

    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in change.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(target))
    return target


def test_files_without_metadata_or_of_another_version_are_refused(
    onnx_file: Path, images: list[Path], tmp_path: Path
) -> None:
    import onnx

    every_key = {p.key: None for p in onnx.load(str(onnx_file)).metadata_props}
    assert "ganomaly.metadata_version" in every_key
    cases = {
        "no metadata": (every_key, "no ganomaly metadata in this ONNX file"),
        "no version": (
            {"ganomaly.metadata_version": None},
            "ganomaly metadata version none is not one this runtime reads (1); export",
        ),
        "future version": (
            {"ganomaly.metadata_version": "2"},
            "ganomaly metadata version 2 is not one this runtime reads (1); upgrade",
        ),
        "damaged": (
            {"ganomaly.threshold": '"high"'},
            "damaged ganomaly metadata (threshold 'high')",
        ),
    }
    for name, (change, message) in cases.items():
        path = rewrite_metadata(onnx_file, tmp_path / f"{name}.onnx", change)
        with pytest.raises(OnnxModelError) as caught:
            OnnxDetector.load(path)
        assert str(caught.value).startswith(f"{path}: {message}"), name
        assert "\n" not in str(caught.value)
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"this is not a model")
    with pytest.raises(OnnxModelError, match="not a readable ONNX model") as caught:
        OnnxDetector.load(not_onnx)
    assert "\n" not in str(caught.value)
    result = run_cli("predict", str(tmp_path / "no metadata.onnx"), str(images[0]))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("ganomaly-onnx: error: ") and result.stderr.count("\n") == 1


def test_main_in_process_writes_csv_to_stdout(
    onnx_file: Path, images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(onnx_file), str(images[0]), "--csv", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) and lines[1].startswith(f"{images[0]},")
    assert len(lines) == 2 and lines[1].endswith(",")
