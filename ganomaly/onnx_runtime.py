"""Score images with an exported `.onnx` model, without PyTorch: numpy, Pillow and onnxruntime.

    ganomaly-onnx predict model.onnx photos/ extra/*.png --csv scores.csv

    >>> from ganomaly.onnx_runtime import OnnxDetector
    >>> detector = OnnxDetector.load("model.onnx")              # doctest: +SKIP
    >>> for r in detector.score_files(["photos/"]):             # doctest: +SKIP
    ...     print(r.path, r.score, r.normalized_score, r.is_anomaly, r.error)

The file's `ganomaly.*` metadata (written by `ganomaly export`) gives the input size, channel
count, resize filter, threshold and normalisation; a file without it, or with a metadata
version this runtime does not know, is refused with a one-line `OnnxModelError`.

Preprocessing is `ganomaly.images.preprocess` repeated in numpy: files are read by the same
loader (`ganomaly.image_files.load_image`: EXIF orientation, channel rules), then resized with
the model's filter exactly as `torch.nn.functional.interpolate` does it (tests hold the two
equal over many sizes), then scaled to [-1, 1]:

    bilinear, bicubic   antialiased (PIL-style: the filter widened by the scale when shrinking),
                        align_corners=False, then clamped to [0, 1]; bicubic uses Keys' a=-0.5
    nearest             PyTorch's "nearest-exact": source index floor((i + 0.5) * in / out)
    area                adaptive average pooling (torch's "area")

Bad files follow the policy of every other face: each file is scored on its own merits, a
file that cannot be read (or that the model gives a non-finite score) gets an `error` and the
others are still scored; no score is ever NaN.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly import __version__
from ganomaly.image_files import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    first_line,
    list_inputs,
    load_image,
)
from ganomaly.results import (
    EXIT_ERROR,
    FileResult,
    output_problem,
    report,
)

METADATA_PREFIX = "ganomaly."  # the ONNX metadata_props keys `ganomaly export` writes
METADATA_FORMAT = "ganomaly-scorer"
METADATA_VERSION = 1  # written by `ganomaly export`; the only version this runtime reads
SUPPORTED_METADATA_VERSIONS = (METADATA_VERSION,)
RESIZE_FILTERS = ("bilinear", "bicubic", "nearest", "area")
OUTPUTS = ("score", "normalized_score", "is_anomaly", "anomaly_map")
PROG = "ganomaly-onnx"


class OnnxModelError(ValueError):
    """The file is not a usable `ganomaly export` ONNX model; the message says why, in a line."""


# -- resize: torch.nn.functional.interpolate in numpy ----------------------------------------
# Each filter is a (out, in) weight matrix per axis; an image is resized by W_h @ x @ W_w^T.


def _triangle(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1.0, 1.0 - t, 0.0)


def _keys_cubic(t: np.ndarray) -> np.ndarray:
    # Keys' cubic convolution with a = -0.5 (PIL's and torch's antialiased bicubic).
    a = -0.5
    t = np.abs(t)
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    return np.where(t < 1.0, near, np.where(t < 2.0, far, 0.0))


_AA_FILTERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bilinear": (_triangle, 1.0),  # (filter, half its support at scale 1)
    "bicubic": (_keys_cubic, 2.0),
}


def _antialias_weights(n_in: int, n_out: int, interpolation: str) -> np.ndarray:
    """torch's `_upsample_{bilinear,bicubic}2d_aa` weights (align_corners=False): output i is
    centred at (i + 0.5) * scale in input pixels; when shrinking, the filter is stretched by the
    scale (so every input pixel contributes), and the weights in reach are normalised to 1."""
    kernel, half_support = _AA_FILTERS[interpolation]
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = half_support * stretch
    centres = scale * (np.arange(n_out) + 0.5)
    first = np.maximum(np.trunc(centres - support + 0.5), 0.0)
    stop = np.minimum(np.trunc(centres + support + 0.5), n_in)
    source = np.arange(n_in, dtype=np.float64)
    in_reach = (source >= first[:, None]) & (source < stop[:, None])
    weights = np.where(in_reach, kernel((source - centres[:, None] + 0.5) / stretch), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, totals, out=np.zeros_like(weights), where=totals != 0.0)


def _nearest_exact_weights(n_in: int, n_out: int) -> np.ndarray:
    # torch computes the scale in float32 and floors (i + 0.5) * scale rounded to float32;
    # done in float64 an exact product such as 2.9999999 vs 3.0 could pick another pixel.
    scale = np.float32(n_in) / np.float32(n_out)
    position = ((np.arange(n_out) + 0.5) * np.float64(scale)).astype(np.float32)
    source = np.minimum(np.floor(position).astype(np.int64), n_in - 1)
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), source] = 1.0
    return weights


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    # adaptive average pooling: output i averages inputs floor(i*in/out) .. ceil((i+1)*in/out)-1
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        start, stop = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights


@lru_cache(maxsize=64)
def resize_weights(n_in: int, n_out: int, interpolation: str) -> np.ndarray:
    """The (n_out, n_in) float64 matrix that resizes one axis with `interpolation`
    (read-only: it is cached)."""
    if interpolation in _AA_FILTERS:
        weights = _antialias_weights(n_in, n_out, interpolation)
    elif interpolation == "nearest":
        weights = _nearest_exact_weights(n_in, n_out)
    elif interpolation == "area":
        weights = _area_weights(n_in, n_out)
    else:
        raise ValueError(
            f"interpolation {interpolation!r}: choose one of {', '.join(RESIZE_FILTERS)}"
        )
    weights.setflags(write=False)
    return weights


def resize(images: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """(..., H, W) float images -> float32 (..., *size), as `F.interpolate(x, size, mode)` with
    antialias=True and align_corners=False for bilinear/bicubic, "nearest-exact" for nearest
    and "area". Values are not clamped (bicubic overshoots; `preprocess` clamps).

    Example:
        >>> resize(np.ones((1, 1, 40, 30)), (16, 16), "bilinear").shape
        (1, 1, 16, 16)
    """
    h, w = images.shape[-2:]
    # float32 throughout, as torch computes: a float64 copy of a 50-megapixel photo would
    # take 1.2 GB, and the rounding stays within 1e-6 of torch's.
    x = np.asarray(images, dtype=np.float32)
    if w != size[1]:
        x = x @ resize_weights(w, size[1], interpolation).T.astype(np.float32)  # (..., H, out_w)
    if h != size[0]:
        x = resize_weights(h, size[0], interpolation).astype(np.float32) @ x  # (..., out_h, out_w)
    return np.asarray(x, dtype=np.float32)


# -- preprocessing: ganomaly.images.preprocess in numpy ---------------------------------------


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 and other integers (0..255), or floats (already 0..1; bool is 0/1) -> float32 in
    [0, 1]; NaN, infinities, complex numbers and values outside those ranges raise ValueError."""
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255.0)
    if np.iscomplexobj(array):
        raise ValueError(f"images must be real numbers, got {array.dtype}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"images must be numbers, got {array.dtype}")
    unit = array.astype(np.float32)
    if not unit.size:
        return unit
    if np.issubdtype(array.dtype, np.integer):
        if unit.min() < 0.0 or unit.max() > 255.0:
            raise ValueError(
                f"{array.dtype} images must be in 0..255; pass floats in [0, 1] otherwise"
            )
        return unit / np.float32(255.0)
    if not np.isfinite(unit).all():
        raise ValueError("images hold NaN or infinite values")
    if unit.min() < 0.0 or unit.max() > 1.0:
        name = "float" if np.issubdtype(array.dtype, np.floating) else str(array.dtype)
        raise ValueError(f"{name} images must be in [0, 1]; pass uint8 for 0..255 data")
    return unit


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) float -> (N, channels, H, W): alpha dropped, RGB -> luminance
    0.299 R + 0.587 G + 0.114 B, grey repeated into RGB."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 4:
        images, c = images[:, :3], 3
    if c == channels:
        return images
    if c == 3 and channels == 1:
        luminance = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
        return (images * luminance).sum(axis=1, keepdims=True, dtype=np.float32)
    if c == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def preprocess(
    images: np.ndarray, size: tuple[int, int], channels: int, interpolation: str = "bilinear"
) -> np.ndarray:
    """(N, C, H, W) uint8 or [0, 1] float -> float32 (N, channels, *size) in [-1, 1], as
    `ganomaly.images.preprocess` does it.

    Example:
        >>> preprocess(np.zeros((2, 1, 28, 28), np.uint8), (32, 32), 1).shape
        (2, 1, 32, 32)
    """
    x = to_unit_float(images)
    if x.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got {tuple(x.shape)}")
    if 0 in x.shape[1:]:
        raise ValueError(f"images with no pixels or channels: shape {tuple(x.shape)}")
    x = convert_channels(x, channels)
    if tuple(x.shape[-2:]) != tuple(size):
        x = resize(x, size, interpolation)
        if interpolation in _AA_FILTERS:
            x = np.clip(x, 0.0, 1.0)  # bicubic overshoots
    return np.ascontiguousarray(x * np.float32(2.0) - np.float32(1.0), dtype=np.float32)


# -- the model ------------------------------------------------------------------------------


def _decode(props: dict[str, str], source: str) -> dict[str, Any]:
    """The `ganomaly.*` metadata_props -> checked metadata dict, or OnnxModelError."""
    raw = {
        k.removeprefix(METADATA_PREFIX): v
        for k, v in props.items()
        if k.startswith(METADATA_PREFIX)
    }
    if not raw:
        raise OnnxModelError(
            f"{source}: no ganomaly metadata in this ONNX file: only models written by "
            "`ganomaly export` can be used"
        )
    try:
        meta = {key: json.loads(value) for key, value in raw.items()}
    except ValueError:
        raise OnnxModelError(f"{source}: damaged ganomaly metadata (not JSON)") from None
    version = meta.get("metadata_version")
    supported = ", ".join(map(str, SUPPORTED_METADATA_VERSIONS))
    if version not in SUPPORTED_METADATA_VERSIONS:
        found = "none" if version is None else repr(version)
        newer = isinstance(version, int) and version > max(SUPPORTED_METADATA_VERSIONS)
        advice = (
            "upgrade the ganomaly package to read it"
            if newer
            else "export the model again with this version's `ganomaly export`"
        )
        raise OnnxModelError(
            f"{source}: ganomaly metadata version {found} is not one this runtime reads "
            f"({supported}); {advice}"
        )
    if meta.get("format") != METADATA_FORMAT:
        raise OnnxModelError(
            f"{source}: metadata format {meta.get('format')!r} is not {METADATA_FORMAT!r}"
        )
    problems = _metadata_problems(meta)
    if problems:
        raise OnnxModelError(f"{source}: damaged ganomaly metadata ({'; '.join(problems)})")
    return meta


def _metadata_problems(meta: dict[str, Any]) -> list[str]:
    problems = []
    size = meta.get("image_size")
    if not (
        isinstance(size, list)
        and len(size) == 2
        and all(isinstance(s, int) and s > 0 for s in size)
    ):
        problems.append(f"image_size {size!r}")
    if meta.get("channels") not in (1, 3):
        problems.append(f"channels {meta.get('channels')!r}")
    if meta.get("interpolation") not in RESIZE_FILTERS:
        problems.append(f"interpolation {meta.get('interpolation')!r}")
    for key in ("threshold", "val_median"):
        value = meta.get(key)
        if not (isinstance(value, int | float) and math.isfinite(value)):
            problems.append(f"{key} {value!r}")
    if not isinstance(meta.get("input"), str):
        problems.append(f"input {meta.get('input')!r}")
    outputs = meta.get("outputs")
    if not (isinstance(outputs, list) and set(OUTPUTS) <= set(outputs)):
        problems.append(f"outputs {outputs!r}")
    return problems


class OnnxDetector:
    """An exported GANomaly scorer: files or arrays in, scores and verdicts out.

    Attributes: `metadata` (the file's ganomaly metadata), `threshold`, `image_size` (H, W),
    `channels`, `interpolation`, `session` (the onnxruntime InferenceSession).
    """

    def __init__(self, session: Any, metadata: dict[str, Any], path: str) -> None:
        self.session = session
        self.metadata = metadata
        self.path = path
        self.threshold = float(metadata["threshold"])
        h, w = metadata["image_size"]
        self.image_size = (int(h), int(w))
        self.channels = int(metadata["channels"])
        self.interpolation = str(metadata["interpolation"])

    @classmethod
    def load(cls, path: str | Path, providers: Sequence[str] | None = None) -> OnnxDetector:
        """Open an exported model; `providers` are onnxruntime's (default: the CPU).

        Raises OnnxModelError when the file is missing, not ONNX, or not a ganomaly export of a
        metadata version this runtime reads.
        """
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxModelError(
                "onnxruntime is not installed: pip install onnxruntime "
                "(or the package's extra: pip install 'ganomaly[onnx-runtime]')"
            ) from None
        source = str(path)
        if not Path(path).is_file():
            raise OnnxModelError(f"{source}: no such file")
        try:
            session = ort.InferenceSession(
                source, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as error:  # onnxruntime raises its own types, with long messages
            raise OnnxModelError(
                f"{source}: not a readable ONNX model ({first_line(error)})"
            ) from None
        metadata = _decode(dict(session.get_modelmeta().custom_metadata_map), source)
        return cls(session, metadata, source)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 or [0, 1] float -> the model's input, float32 in [-1, 1]."""
        return preprocess(images, self.image_size, self.channels, self.interpolation)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Preprocessed images (B, C, H, W) in [-1, 1] -> {score, normalized_score,
        is_anomaly, anomaly_map} as numpy arrays ((B,), (B,), (B,) bool, (B, H, W))."""
        feed = {self.metadata["input"]: np.ascontiguousarray(x, dtype=np.float32)}
        try:
            values = self.session.run(list(OUTPUTS), feed)
        except Exception as error:  # onnxruntime's own error types, multi-line messages
            raise OnnxModelError(f"{self.path}: the model failed ({first_line(error)})") from None
        out = dict(zip(OUTPUTS, values, strict=True))
        out["is_anomaly"] = out["is_anomaly"].astype(bool)
        return out

    def score(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """(N, C, H, W) uint8 or [0, 1] float images -> {score, normalized_score, is_anomaly,
        anomaly_map}, as `run` returns them."""
        return self.run(self.preprocess(images))

    def score_files(
        self,
        inputs: Iterable[str | Path],
        batch_size: int = 64,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        with_maps: bool = True,
    ) -> list[FileResult]:
        """Files, folders (recursive) and glob patterns -> one FileResult per input file, in
        input order (a folder gives its images sorted). A file that cannot be read, or whose
        score is not finite, gets `error` and no scores; the others are scored all the same.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        results = [
            FileResult(path, error=problem) for path, problem in list_inputs(map(str, inputs))
        ]
        pending = [r for r in results if r.ok]
        for start in range(0, len(pending), batch_size):
            self._score_batch(pending[start : start + batch_size], max_pixels, with_maps)
        return results

    def _score_batch(self, batch: list[FileResult], max_pixels: int, with_maps: bool) -> None:
        readable, inputs = [], []
        for result in batch:
            try:
                pixels = load_image(result.path, self.channels, max_pixels)
                inputs.append(self.preprocess(pixels[None]))
                readable.append(result)
            except ImageError as error:
                result.error = str(error).removeprefix(f"{result.path}: ")
        if not readable:
            return
        out = self.run(np.concatenate(inputs))
        for i, result in enumerate(readable):
            score, normalized = float(out["score"][i]), float(out["normalized_score"][i])
            if not (math.isfinite(score) and math.isfinite(normalized)):
                result.error = "the model gave a non-finite score"
                continue
            result.score, result.normalized_score = score, normalized
            result.is_anomaly = bool(out["is_anomaly"][i])
            if with_maps:
                result.anomaly_map = out["anomaly_map"][i]


# -- the `ganomaly-onnx` command ------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), like every other error of the command."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `ganomaly-onnx` command line."""
    parser = _Parser(
        prog=PROG,
        description="Score images with a model exported by `ganomaly export --format onnx`; "
        "needs numpy, Pillow and onnxruntime only (no PyTorch).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = sub.add_parser(
        "predict",
        help="score images, folders and globs",
        description="Score images. Prints a table, or writes CSV (columns path, score, "
        "normalized_score, is_anomaly, error) / JSON. Exit code 0: all scored, 1: some inputs "
        "could not be scored (their rows carry the error), 2: none could be, or bad usage.",
    )
    predict.add_argument("model", metavar="MODEL.onnx", help="a model from `ganomaly export`")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, globs")
    predict.add_argument("--csv", metavar="FILE", help="write results as CSV ('-' = stdout)")
    predict.add_argument("--json", metavar="FILE", help="write results as JSON ('-' = stdout)")
    predict.add_argument("--batch-size", type=int, default=64, help="images per model call")
    predict.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels, from the header (default: {DEFAULT_MAX_PIXELS})",
    )
    return parser


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of `ganomaly-onnx predict`; returns the exit code."""
    problem = output_problem(args.batch_size, args.csv, args.json)
    if problem:
        raise OnnxModelError(problem)
    detector = OnnxDetector.load(args.model)
    results = detector.score_files(args.paths, args.batch_size, args.max_pixels, with_maps=False)
    return report(results, detector.threshold, args.csv, args.json, PROG)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ganomaly-onnx`; returns the exit code (0, 1 some failed, 2 error)."""
    args = build_parser().parse_args(argv)
    try:
        return cmd_predict(args)
    except (OnnxModelError, OSError) as error:
        print(f"{PROG}: error: {first_line(error, 300)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
