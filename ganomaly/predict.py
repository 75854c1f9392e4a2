"""`ganomaly predict`: score images, folders (recursive) and globs with a saved model.

    ganomaly predict runs/demo photos/ extra/*.png --csv scores.csv --maps maps/

Every image goes through the one preprocessing (`ganomaly.images`) and the model's own
`AnomalyScorer`, so a score printed here equals the Python API's, the server's and the exported
model's. Images that cannot be read are reported (path and reason) and the rest are still
scored; the exit code is then 1 (2 when nothing at all could be scored).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.config import ConfigError
from ganomaly.images import ImageError, expand_inputs, load_image

EXIT_SOME_FAILED = 1
MAP_VMAX = 1.0  # heat-map colour scale: |x - x_hat| in model units ([-1, 1] images), 0..1
OVERLAY_MAX_SIDE = 512


@dataclass
class Prediction:
    """One scored image."""

    path: str
    score: float
    normalized_score: float
    is_anomaly: bool
    map_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": self.path,
            "score": self.score,
            "normalized_score": self.normalized_score,
            "is_anomaly": self.is_anomaly,
        }
        if self.map_path is not None:
            row["map"] = self.map_path
        return row


# -- heat maps ------------------------------------------------------------------------------
def heatmap_rgb(amap: np.ndarray, vmax: float = MAP_VMAX) -> np.ndarray:
    """(H, W) anomaly map -> (H, W, 3) uint8 with matplotlib's 'inferno' on a fixed scale
    [0, vmax], so colours mean the same in every image."""
    from matplotlib import colormaps

    values = np.clip(np.asarray(amap, dtype=np.float64) / vmax, 0.0, 1.0)
    return (colormaps["inferno"](values)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay_rgb(image: np.ndarray, amap: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """uint8 (C, H, W) image and an anomaly map at any resolution -> (H', W', 3) uint8 blend,
    at the image's size (its longest side capped at OVERLAY_MAX_SIDE)."""
    from PIL import Image

    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    base = Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0)))
    scale = min(1.0, OVERLAY_MAX_SIDE / max(base.size))
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    base = base.resize(size, Image.Resampling.BILINEAR)
    heat = Image.fromarray(np.asarray(amap, dtype=np.float32), mode="F")
    heat = heat.resize(size, Image.Resampling.BILINEAR)
    colours = heatmap_rgb(np.asarray(heat))
    blend = (1.0 - alpha) * np.asarray(base, np.float32) + alpha * colours.astype(np.float32)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def _unique_name(folder: Path, stem: str, used: set[str]) -> Path:
    name, n = f"{stem}_map.png", 2
    while name in used:
        name, n = f"{stem}_map_{n}.png", n + 1
    used.add(name)
    return folder / name


# -- scoring ------------------------------------------------------------------------------
def predict_paths(
    detector: Any,
    paths: list[Path],
    batch_size: int = 64,
    maps_dir: Path | None = None,
    progress: bool = True,
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Score image files in batches -> (predictions in input order, [(path, reason)])."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    predictions: list[Prediction] = []
    failed: list[tuple[str, str]] = []
    used_names: set[str] = set()
    if maps_dir is not None:
        maps_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr)
    for start in range(0, len(paths), batch_size):
        ok_paths, tensors = [], []
        for path in paths[start : start + batch_size]:
            try:
                tensors.append(detector.preprocess([path]))
                ok_paths.append(path)
            except ImageError as error:
                failed.append((str(path), str(error).removeprefix(f"{path}: ")))
        if tensors:
            scores, normalized, maps = detector._score(
                torch.cat(tensors), batch_size, with_maps=maps_dir is not None
            )
            for i, path in enumerate(ok_paths):
                map_path = None
                if maps_dir is not None and maps is not None:
                    target = _unique_name(maps_dir, path.stem, used_names)
                    image = load_image(path, 3)
                    Image.fromarray(overlay_rgb(image, maps[i])).save(target)
                    map_path = str(target)
                predictions.append(
                    Prediction(
                        str(path), float(scores[i]), float(normalized[i]),
                        bool(scores[i] > detector.threshold_), map_path,
                    )
                )  # fmt: skip
        bar.update(len(paths[start : start + batch_size]))
    bar.close()
    return predictions, failed


# -- output -------------------------------------------------------------------------------
def write_csv(target: str, rows: list[Prediction]) -> None:
    """CSV with columns path, score, normalized_score, is_anomaly (and map with --maps)."""
    columns = ["path", "score", "normalized_score", "is_anomaly"]
    if any(r.map_path for r in rows):
        columns.append("map")
    handle = sys.stdout if target == "-" else open(target, "w", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in rows:
            line = [r.path, f"{r.score:.9g}", f"{r.normalized_score:.9g}", int(r.is_anomaly)]
            writer.writerow(line + ([r.map_path or ""] if "map" in columns else []))
    finally:
        if handle is not sys.stdout:
            handle.close()


def write_json(target: str, rows: list[Prediction], threshold: float) -> None:
    """{"threshold": t, "results": [{"path", "score", "normalized_score", "is_anomaly"}, ...]}."""
    text = json.dumps({"threshold": threshold, "results": [r.as_dict() for r in rows]}, indent=1)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")


def format_table(rows: list[Prediction], threshold: float) -> str:
    """A plain-text table for the terminal."""
    width = max([len("path"), *(len(r.path) for r in rows)])
    lines = [f"{'path':<{width}}  {'score':>11}  {'normalized':>10}  verdict"]
    for r in rows:
        verdict = "ANOMALY" if r.is_anomaly else "normal"
        lines.append(f"{r.path:<{width}}  {r.score:>11.6g}  {r.normalized_score:>10.3f}  {verdict}")
    n_anomalies = sum(r.is_anomaly for r in rows)
    lines.append(f"{len(rows)} images, {n_anomalies} anomalies (score > threshold {threshold:.6g})")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of `ganomaly predict`."""
    from ganomaly.detector import GANomalyDetector

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    for option, target in (("--csv", args.csv), ("--json", args.json)):
        if target and target != "-" and Path(target).is_dir():
            raise ConfigError(f"{option} {target}: is a directory; give a file name")
    detector = GANomalyDetector.load(args.model, device=args.device)
    paths, failed = expand_inputs(args.paths)
    maps_dir = Path(args.maps) if args.maps else None
    predictions, unreadable = predict_paths(
        detector, paths, args.batch_size, maps_dir, progress=args.progress
    )
    failed += unreadable
    for item, reason in failed:
        print(f"ganomaly: warning: {item}: {reason}", file=sys.stderr)
    if args.csv:
        write_csv(args.csv, predictions)
    if args.json:
        write_json(args.json, predictions, detector.threshold_)
    if "-" not in (args.csv, args.json):
        print(format_table(predictions, detector.threshold_))
    if not predictions:
        raise ImageError(f"no image could be scored ({len(failed)} input(s) failed)")
    if failed:
        print(f"ganomaly: {len(failed)} input(s) could not be scored", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def register(subparsers: Any) -> None:
    """Add the `predict` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="score images, folders and globs with a saved model",
        description="Score images with a trained model. Prints a table, or writes CSV / JSON "
        "with the columns path, score (raw), normalized_score, is_anomaly. Exit code 1 when "
        "some inputs could not be scored.",
    )
    parser.add_argument("model", metavar="RUN_DIR|MODEL", help="a run directory or a model.pt")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, globs")
    parser.add_argument("--csv", metavar="FILE", help="write results as CSV ('-' = stdout)")
    parser.add_argument("--json", metavar="FILE", help="write results as JSON ('-' = stdout)")
    parser.add_argument("--maps", metavar="DIR", help="write anomaly-map overlays (PNG) here")
    parser.add_argument("--batch-size", type=int, default=64, help="scoring batch size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    parser.set_defaults(handler=cmd_predict)
