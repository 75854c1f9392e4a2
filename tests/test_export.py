"""`ganomaly export`: ONNX (onnxruntime), TorchScript and torch.export programs of every model
score exactly as the PyTorch scorer does, at batch sizes 1 and 8, give the verdict
`score > threshold`, carry the threshold in their metadata, and never replace a file without
--overwrite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ganomaly import GANomalyDetector
from ganomaly.export import (
    export_metadata,
    export_model,
    read_onnx_metadata,
    read_torchscript_metadata,
)
from tests._trained import EVERY_MODEL


def reference(detector: GANomalyDetector, x: torch.Tensor) -> list[np.ndarray]:
    """The library's (score, normalized_score, anomaly_map) and is_anomaly = score > threshold_."""
    with torch.inference_mode():
        score, normalized, amap = (t.numpy() for t in detector.scorer_.eval()(x))
    return [score, normalized, amap, score > detector.threshold_]


def assert_outputs_match(outputs: list[np.ndarray], want: list[np.ndarray]) -> None:
    """Scores and maps within 1e-4, the verdict (bool) exactly."""
    *values, is_anomaly = outputs
    for got, expected in zip(values, want[:3], strict=True):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert is_anomaly.dtype == np.bool_ and is_anomaly.shape == want[3].shape
    np.testing.assert_array_equal(is_anomaly, want[3])


def batches(detector: GANomalyDetector) -> list[torch.Tensor]:
    h, w = detector.config.image_hw()
    generator = torch.Generator().manual_seed(7)
    return [torch.rand(b, 1, h, w, generator=generator) * 2 - 1 for b in (1, 8)]


@EVERY_MODEL
def test_onnx_matches_pytorch(run_dir: Path, onnx_file: Path, model_name: str) -> None:
    import onnxruntime as ort

    detector = GANomalyDetector.load(run_dir)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == [
        "score", "normalized_score", "anomaly_map", "is_anomaly"
    ]  # fmt: skip
    for x in batches(detector):
        assert_outputs_match(session.run(None, {"image": x.numpy()}), reference(detector, x))
    meta = read_onnx_metadata(onnx_file)
    assert meta["metadata_version"] == 1 and meta["format"] == "ganomaly-scorer"
    assert meta["model"] == model_name
    assert meta["outputs"] == ["score", "normalized_score", "anomaly_map", "is_anomaly"]
    assert meta["threshold"] == detector.threshold_
    assert meta["val_median"] == detector.val_median_
    assert meta["image_size"] == [16, 16] and meta["channels"] == 1
    assert meta["interpolation"] == "bilinear" and "resize" in meta["preprocessing"]


@EVERY_MODEL
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torchscript_and_pt2_match_pytorch(run_dir: Path, tmp_path: Path, fmt: str) -> None:
    import json

    detector = GANomalyDetector.load(run_dir)
    path = tmp_path / f"model.{fmt}"
    if fmt == "torchscript":  # through the real CLI, as a user would
        command = [sys.executable, "-m", "ganomaly", "export", str(run_dir), "--format", fmt]
        result = subprocess.run(
            [*command, "--out", str(path)], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"wrote {path} (torchscript)")
    else:
        export_model(detector, fmt, path)
    if fmt == "torchscript":
        module, meta = read_torchscript_metadata(path)
    else:
        extra = {"ganomaly.json": ""}
        module = torch.export.load(str(path), extra_files=extra).module()
        meta = json.loads(extra["ganomaly.json"])
    assert meta == json.loads(json.dumps(export_metadata(detector)))
    for x in batches(detector):
        with torch.inference_mode():
            outputs = [t.numpy() for t in module(x)]
        assert_outputs_match(outputs, reference(detector, x))


def test_batch_statistics_models_are_refused(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ganomaly.cli import main

    detector = GANomalyDetector.load(run_dir)
    obj = detector.to_dict()
    obj["config"]["bn_mode"] = obj["bn_mode"] = "batch"
    torch.save(obj, tmp_path / "model.pt")
    out = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "model.pt"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ganomaly: error: this model was trained with --bn-mode batch")
    assert len(error.strip().splitlines()) == 1 and not out.exists()


def test_existing_files_are_replaced_only_with_overwrite(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ganomaly.cli import main
    from ganomaly.export import ExportError

    out = tmp_path / "model.pt"
    out.write_bytes(b"a file the user keeps")
    detector = GANomalyDetector.load(run_dir)
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_model(detector, "torchscript", out)
    args = ["export", str(run_dir), "--format", "torchscript", "--out", str(out)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert (
        error == f"ganomaly: error: --out {out}: already exists; pass --overwrite to replace it\n"
    )
    assert out.read_bytes() == b"a file the user keeps"
    assert main([*args, "--overwrite"]) == 0
    _, meta = read_torchscript_metadata(out)
    assert meta["threshold"] == detector.threshold_
