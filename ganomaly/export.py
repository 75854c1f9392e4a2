"""`ganomaly export`: the scoring module as ONNX, TorchScript or a `torch.export` program.

    ganomaly export runs/demo --format onnx --out model.onnx

What is exported is `ExportedScorer`: `AnomalyScorer`, the same module the library scores
with, plus the verdict:

    input   image             float32 (B, C, H, W), the model's C, H, W, values in [-1, 1]
                              (the output of `ganomaly.images.preprocess`); B is dynamic
    outputs score             (B,)       raw anomaly score, higher = more abnormal
            normalized_score  (B,)       (score - median) / (threshold - median)
            anomaly_map       (B, H, W)  smoothed |x - x_hat| at the model's resolution
            is_anomaly        (B,) bool  score > threshold

The threshold, the normalisation statistics and the preprocessing are recorded in the file's
metadata (ONNX `metadata_props` under `ganomaly.`, TorchScript and .pt2
`extra_files["ganomaly.json"]`), see `export_metadata`; `metadata_version` says which layout,
and `ganomaly.onnx_runtime` (numpy, Pillow and onnxruntime only) refuses versions it does not
read. An existing file is replaced only with `--overwrite` (`export_model(..., overwrite=True)`).

Exporter choice. ONNX is written by the dynamo-based exporter (`torch.onnx.export(...,
dynamo=True)`, which needs `onnxscript`): it is the exporter PyTorch maintains and defaults to;
the TorchScript-based one is deprecated along with TorchScript itself. It captures the module
with `torch.export`, so the batch dimension is a real symbolic dimension. `torchscript` is kept
for C++/LibTorch users (traced: the module has no data-dependent control flow) and `pt2` is the
`torch.export` program that replaces TorchScript in PyTorch (`torch.export.load`).

Models trained with `bn_mode="batch"` are refused: their scores depend on the other images in
the batch, which no exported graph can reproduce faithfully.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganomaly.atomic import atomic_path
from ganomaly.config import ConfigError
from ganomaly.onnx_runtime import METADATA_PREFIX, METADATA_VERSION

if TYPE_CHECKING:
    from torch import Tensor

    from ganomaly.detector import GANomalyDetector

FORMATS = ("onnx", "torchscript", "pt2")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
INPUT_NAME = "image"
OUTPUT_NAMES = ("score", "normalized_score", "anomaly_map", "is_anomaly")
METADATA_FILE = "ganomaly.json"
ONNX_OPSET = 18
PREPROCESSING = (
    "load; apply EXIF orientation; convert to C channels (RGB->L: 0.299 R + 0.587 G + 0.114 B, "
    "grey->RGB: repeat, alpha dropped); resize to HxW with `interpolation` (antialiased for "
    "bilinear/bicubic, align_corners=False, then clamped to [0, 1]); x = 2 * (pixel / 255) - 1; "
    "float32 NCHW"
)


class ExportError(ConfigError):
    """The model cannot be exported as asked; the message says why in one line."""


def refuse_batch_statistics(detector: GANomalyDetector, what: str) -> None:
    """Raise when the model scores with BatchNorm batch statistics (see module docstring)."""
    if detector.config.bn_mode == "batch":
        raise ExportError(
            f"this model was trained with --bn-mode batch: its scores depend on the other "
            f"images in a batch, so it cannot be {what}; retrain with --bn-mode eval"
        )


def export_metadata(detector: GANomalyDetector) -> dict[str, Any]:
    """Everything a consumer needs besides the graph: the model card (preprocessing facts,
    threshold, statistics, provenance) and the graph's input and outputs."""
    from ganomaly import __version__

    return {
        **detector.model_card(),
        "format": "ganomaly-scorer",
        "metadata_version": METADATA_VERSION,
        "ganomaly_version": __version__,
        "input": INPUT_NAME,
        "outputs": list(OUTPUT_NAMES),
        "preprocessing": PREPROCESSING,
    }


def _example_input(detector: GANomalyDetector, batch: int = 2) -> Tensor:
    import torch

    h, w = detector.config.image_hw()
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, detector.channels_, h, w, generator=generator) * 2.0 - 1.0


def _batch_dim() -> dict[str, Any]:
    import torch

    return {"x": {0: torch.export.Dim("batch", min=1, max=65536)}}


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters' warnings and the ONNX exporter's registration log (a warning per
    torchvision op it cannot register; we use none) are silenced inside the block only:
    the logger's level is restored after."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Tracing warns that shape comparisons become constants: they are, for this
            # model's fixed H x W; and that TorchScript is deprecated (module docstring).
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(previous)


def export_onnx(detector: GANomalyDetector, out: Path) -> Path:
    """Write an ONNX model (dynamo exporter, dynamic batch) with metadata_props."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs the export extra ({error.name} is missing): "
            "pip install 'ganomaly[export]'"
        ) from None
    import torch

    from ganomaly.scoring import ExportedScorer

    scorer = ExportedScorer(detector.scorer_).eval()
    with _quiet_exporters(), atomic_path(out) as tmp:
        program = torch.onnx.export(
            scorer,
            (_example_input(detector),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=_batch_dim(),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
        assert program is not None
        model = program.model_proto
        for key, value in export_metadata(detector).items():
            entry = model.metadata_props.add()
            entry.key = f"{METADATA_PREFIX}{key}"
            entry.value = json.dumps(value)
        model.doc_string = f"GANomaly anomaly scorer: image -> {', '.join(OUTPUT_NAMES)}"
        onnx.checker.check_model(model)
        onnx.save_model(model, str(tmp))
    return out


def export_torchscript(detector: GANomalyDetector, out: Path) -> Path:
    """Write a traced TorchScript module; metadata in extra_files['ganomaly.json']."""
    import torch

    from ganomaly.scoring import ExportedScorer

    scorer = ExportedScorer(detector.scorer_).eval()
    with _quiet_exporters(), torch.no_grad(), atomic_path(out) as tmp:
        traced = torch.jit.trace(scorer, _example_input(detector), check_trace=False)
        extra = {METADATA_FILE: json.dumps(export_metadata(detector))}
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return out


def export_pt2(detector: GANomalyDetector, out: Path) -> Path:
    """Write a `torch.export` program (.pt2, dynamic batch), loadable with torch.export.load."""
    import torch

    from ganomaly.scoring import ExportedScorer

    scorer = ExportedScorer(detector.scorer_).eval()
    with _quiet_exporters(), atomic_path(out) as tmp:
        program = torch.export.export(
            scorer, (_example_input(detector),), dynamic_shapes=_batch_dim()
        )
        extra = {METADATA_FILE: json.dumps(export_metadata(detector))}
        torch.export.save(program, str(tmp), extra_files=extra)
    return out


def export_model(
    detector: GANomalyDetector, fmt: str, out: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Export a fitted GANomalyDetector; returns the written path. An existing file at `out`
    is replaced only when `overwrite` is true.

    Example:
        >>> from ganomaly import GANomalyDetector
        >>> export_model(GANomalyDetector.load("runs/demo"), "onnx", "model.onnx")
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    refuse_batch_statistics(detector, "exported")
    target = Path(out)
    if target.is_dir():
        raise ExportError(f"--out {out}: is a directory; give a file name")
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise ExportError(f"--out {out}: already exists; pass --overwrite to replace it")
    writer = {"onnx": export_onnx, "torchscript": export_torchscript, "pt2": export_pt2}[fmt]
    return writer(detector, target)


def read_torchscript_metadata(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Load an exported TorchScript file -> (module, metadata)."""
    import torch

    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[METADATA_FILE])


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `ganomaly.*` metadata_props of an exported ONNX file as a dict."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {
        p.key.removeprefix(METADATA_PREFIX): json.loads(p.value)
        for p in model.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of `ganomaly export`."""
    from ganomaly.detector import GANomalyDetector

    detector = GANomalyDetector.load(args.run_dir)
    source = Path(args.run_dir)
    folder = source if source.is_dir() else source.parent
    out = args.out or str(folder / f"model{SUFFIXES[args.format]}")
    written = export_model(detector, args.format, out, overwrite=args.overwrite)
    meta = export_metadata(detector)
    h, w = meta["image_size"]
    print(
        f"wrote {written} ({args.format}): input {INPUT_NAME} float32 "
        f"(batch, {meta['channels']}, {h}, {w}) in [-1, 1] -> {', '.join(OUTPUT_NAMES)}; "
        f"threshold {meta['threshold']:.6g}"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the `export` sub-command."""
    from ganomaly.cli import describe

    parser = subparsers.add_parser(
        "export", help="export the scorer as ONNX, TorchScript or torch.export (.pt2)"
    )
    describe(
        parser,
        "Export a model that takes preprocessed images (B, C, H, W) in [-1, 1] and returns "
        "score, normalized_score, anomaly_map and is_anomaly; the threshold and the "
        "preprocessing are stored in the file's metadata. `ganomaly-onnx predict` scores image "
        "files with an ONNX export without PyTorch.",
        """
  ganomaly export runs/parts                                # writes runs/parts/model.onnx
  ganomaly export runs/parts --format torchscript --out parts.pt
  ganomaly-onnx predict runs/parts/model.onnx new_parts/    # scoring without PyTorch
""",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR|MODEL", help="a run directory or a model.pt")
    parser.add_argument(
        "--format", choices=FORMATS, default="onnx", help="file format (default: %(default)s)"
    )
    parser.add_argument("--out", metavar="FILE", help="default: RUN_DIR/model.<format suffix>")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out when it exists already"
    )
    parser.set_defaults(handler=cmd_export)
