"""`ganomaly predict`: score images, folders (recursive) and globs with a saved model.

    ganomaly predict runs/demo photos/ extra/*.png --csv scores.csv --maps maps/

Every image goes through the one preprocessing (`ganomaly.images`) and the model's own
`AnomalyScorer`, so a score printed here equals the Python API's, the server's and the exported
model's. Images that cannot be read are reported (path and reason) and the rest are still
scored; the exit code is then 1 (2 when nothing at all could be scored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganomaly.config import INFERENCE_DEVICE, ConfigError
from ganomaly.image_files import list_inputs, load_image
from ganomaly.results import (
    FileResult,
    output_problem,
    report,
)

if TYPE_CHECKING:
    from ganomaly.detector import GANomalyDetector

MAP_VMAX = 1.0  # heat-map colour scale: |x - x_hat| in model units ([-1, 1] images), 0..1
OVERLAY_MAX_SIDE = 512


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
    detector: GANomalyDetector,
    paths: list[Path],
    batch_size: int = 64,
    maps_dir: Path | None = None,
    progress: bool = True,
) -> list[FileResult]:
    """Score image files in batches -> one record per file, in input order (a file that
    cannot be read gets its `error`); with `maps_dir`, each scored file's overlay is written
    there and its path kept in `map_path`."""
    from PIL import Image
    from tqdm import tqdm

    records: list[FileResult] = []
    used_names: set[str] = set()
    if maps_dir is not None:
        maps_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(paths), batch_size):
            batch = detector.score_files(
                paths[start : start + batch_size], batch_size, with_maps=maps_dir is not None
            )
            for record in batch:
                if maps_dir is not None and record.anomaly_map is not None:
                    target = _unique_name(maps_dir, Path(record.path).stem, used_names)
                    image = load_image(record.path, 3)
                    Image.fromarray(overlay_rgb(image, record.anomaly_map)).save(target)
                    record.map_path = str(target)
                    record.anomaly_map = None  # written: no need to keep every map in memory
            records += batch
            bar.update(len(batch))
    return records


def cmd_predict(args: argparse.Namespace) -> int:
    """Handler of `ganomaly predict`."""
    from ganomaly.detector import GANomalyDetector

    problem = output_problem(args.batch_size, args.csv, args.json)
    if problem:
        raise ConfigError(problem)
    detector = GANomalyDetector.load(args.model, device=args.device)
    entries = list_inputs(args.paths)
    maps_dir = Path(args.maps) if args.maps else None
    paths = [Path(name) for name, problem in entries if problem is None]
    scored = iter(predict_paths(detector, paths, args.batch_size, maps_dir, args.progress))
    records = [
        next(scored) if problem is None else FileResult(name, error=problem)
        for name, problem in entries
    ]
    return report(records, detector.threshold_, args.csv, args.json, "ganomaly")


def register(subparsers: Any) -> None:
    """Add the `predict` sub-command."""
    from ganomaly.cli import describe

    parser = subparsers.add_parser(
        "predict", help="score images, folders and globs with a saved model"
    )
    describe(
        parser,
        "Score images with a trained model. Prints a table, or writes CSV / JSON with the "
        "columns path, score (raw), normalized_score, is_anomaly, error: one row per input; a "
        "file that cannot be read gets its error and the others are still scored (exit code "
        "1 when some could not be).",
        """
  ganomaly predict runs/parts new_parts/                    # a folder, recursively
  ganomaly predict runs/parts 'batch_07/*.png' --csv scores.csv
  ganomaly predict runs/parts/model.pt part.png --maps overlays/ --json -
""",
    )
    parser.add_argument("model", metavar="RUN_DIR|MODEL", help="a run directory or a model.pt")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, globs")
    parser.add_argument("--csv", metavar="FILE", help="write results as CSV ('-' = stdout)")
    parser.add_argument("--json", metavar="FILE", help="write results as JSON ('-' = stdout)")
    parser.add_argument("--maps", metavar="DIR", help="write anomaly-map overlays (PNG) here")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="scoring batch size (default: %(default)s)"
    )
    parser.add_argument(
        "--device",
        default=INFERENCE_DEVICE,
        help=f"cpu, cuda or cuda:N (default: {INFERENCE_DEVICE})",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show a progress bar (default: on)",
    )
    parser.set_defaults(handler=cmd_predict)
