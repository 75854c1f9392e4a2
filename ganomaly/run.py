"""A run directory: train on a dataset's normal images, evaluate on its test split, write

config.yaml  model.pt  checkpoints/  history.csv  metrics.json  scores.csv
data.json (source, fingerprint, test ids)  figures/*.png  report.html
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ganomaly import distributed
from ganomaly.atomic import atomic_path, atomic_write_text
from ganomaly.checkpoint import load_latest_checkpoint, save_checkpoint
from ganomaly.config import (
    INFERENCE_DEVICE,
    ConfigError,
    RunConfig,
    detector_part,
    from_dict,
    read_settings,
)
from ganomaly.data import DataError, DataSplit, load_split, resolve_protocol
from ganomaly.detector import GANomalyDetector, Scores
from ganomaly.images import to_display
from ganomaly.localization import PixelEvaluation
from ganomaly.training import TrainState, history_columns, log_epochs

SCORE_COLUMNS = ("path", "class", "label", "score", "normalized_score", "is_anomaly")
FIGURES = (
    ("figures/loss_curves.png", "Training losses per epoch, and discriminator re-inits"),
    ("figures/restoration.png", "Test images, their reconstructions x̂ and |x − x̂|"),
    ("figures/score_boxplot.png", "Anomaly scores per class, with the threshold"),
    ("figures/score_histogram.png", "Score distribution of normal and abnormal test images"),
    ("figures/roc.png", "ROC curve"),
    ("figures/pr.png", "Precision-recall curve (abnormal = positive)"),
    ("figures/outcomes.png", "The four outcomes at the saved threshold"),
    ("figures/localization.png", "Anomaly maps over normal and abnormal test images, with masks"),
)


def say(message: str) -> None:
    """Progress lines go to stderr so stdout stays clean for results."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C (SIGINT) or SIGTERM asks training to stop at the next step boundary,
    after saving a checkpoint; a second Ctrl-C interrupts at once."""
    requested = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        say("stopping after this step; the checkpoint will be saved (Ctrl-C again to abort)")

    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def prepare_out_dir(out: str | None, overwrite: bool) -> Path:
    """Check --out before any work: it must be new or empty unless --overwrite."""
    if not out:
        raise ConfigError("--out is required: the run directory to create")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out}: already holds files; pass --overwrite or choose another")
    return path


def write_config(path: Path, config: RunConfig) -> None:
    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def read_config(run_dir: Path) -> RunConfig:
    """config.yaml of a run directory as a RunConfig."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    return from_dict(RunConfig, read_settings(path, str(path)))


def write_history(path: Path, history: list[dict[str, float]], columns: Sequence[str]) -> None:
    """history.csv: one row per epoch, the model's columns (`training.history_columns`)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def write_scores(path: Path, split: DataSplit, scores: Scores) -> None:
    """scores.csv: one row per test image, in the split's order."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        for i, test_id in enumerate(split.test_ids):
            writer.writerow([
                test_id, split.test_classes[i], int(split.test_is_abnormal[i]),
                f"{scores.score[i]:.8g}", f"{scores.normalized_score[i]:.8g}",
                int(scores.is_anomaly[i]),
            ])  # fmt: skip


def data_record(split: DataSplit) -> dict[str, Any]:
    return {
        "data_source": split.data_source,
        "fingerprint": split.fingerprint,
        "n_train_pool": len(split.train_ids),
        "test_ids": split.test_ids,
    }


def train_run(config: RunConfig, resume: bool = False) -> dict[str, Any]:
    """Train, save, evaluate; returns metrics. With resume, continue from checkpoints/."""
    config.validate()
    if config.tensorboard:  # a missing package is named before anything is written
        from ganomaly.tensorboard import require_tensorboard

        require_tensorboard()
    # torchrun (ganomaly/distributed.py): every rank trains, rank 0 alone writes and logs.
    distributed.setup(config.device)
    if not distributed.is_main():
        return _train_other_rank(config, resume)
    run_dir = (
        Path(config.out) if resume and config.out else prepare_out_dir(config.out, config.overwrite)
    )
    split = load_split(config)
    protocol = resolve_protocol(config)
    say(
        f"data: {config.data} from {split.data_source} | protocol {protocol} "
        f"class {config.target_class} | {len(split.train)} normal training images, "
        f"{len(split.test)} test ({int(split.test_is_abnormal.sum())} abnormal)"
    )
    checkpoint = load_latest_checkpoint(run_dir) if resume else None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "figures").mkdir(exist_ok=True)
    config.protocol = protocol
    write_config(run_dir / "config.yaml", config)
    atomic_write_text(run_dir / "data.json", json.dumps(data_record(split), indent=1))

    board = None
    if config.tensorboard:
        from ganomaly.tensorboard import TrainingBoard, validation_sample

        val_images = validation_sample(split.train, config, config.channels or split.channels)
        board = TrainingBoard(run_dir / "tensorboard", val_images)

    def on_epoch(state: TrainState) -> None:
        save_checkpoint(run_dir, state)
        write_history(run_dir / "history.csv", state.history, history_columns(state.config))
        if board is not None:
            board.log_epoch(state)

    detector = GANomalyDetector(**dataclasses.asdict(detector_part(config)))
    # One line per epoch where no progress bar shows it (--no-progress, or not a terminal).
    epoch_lines = not config.progress or not sys.stderr.isatty()
    with (
        stop_on_interrupt() as stop_requested,
        log_epochs() if epoch_lines else contextlib.nullcontext(),
        contextlib.closing(board) if board is not None else contextlib.nullcontext(),
    ):
        detector.fit(
            split.train, on_epoch=on_epoch, resume=checkpoint, stop_requested=stop_requested,
            on_losses=board.log_losses if board is not None else None,
        )  # fmt: skip
    distributed.teardown()  # the rest is rank 0's alone
    if split.val is not None and split.val_is_abnormal is not None:
        detector.refit_threshold(split.val, split.val_is_abnormal)
    detector.annotate(
        data=config.data,
        protocol=protocol,
        target_class=config.target_class,
        data_source=split.data_source,
        normal_classes=split.normal_classes,
    )
    write_history(run_dir / "history.csv", detector.history_, history_columns(detector.config))
    metrics = evaluate_split(run_dir, detector, split, config)
    detector.annotate(metrics={k: metrics[k] for k in ("auroc", "aupr", "f1") if k in metrics})
    detector.save(run_dir / "model.pt")
    return metrics


def _train_other_rank(config: RunConfig, resume: bool) -> dict[str, Any]:
    """A torchrun rank other than 0: the same data and training, no files, no logs."""
    split = load_split(config)
    checkpoint = load_latest_checkpoint(Path(str(config.out))) if resume else None
    config.progress = False
    detector = GANomalyDetector(**dataclasses.asdict(detector_part(config)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank 0 reports them
        detector.fit(split.train, resume=checkpoint)
    distributed.teardown()
    return {}


@dataclass
class TestScores:
    """A test split scored by a model."""

    images: torch.Tensor  # (N, C, H, W) preprocessed, model space
    labels: np.ndarray  # (N,) 1 = abnormal
    scores: Scores


def score_split(detector: GANomalyDetector, split: DataSplit, batch_size: int) -> TestScores:
    """Preprocess and score a split's test images (with maps when it has masks)."""
    images = detector.preprocess(split.test)
    with_maps = any(m is not None for m in split.test_masks)
    scores = detector.score_preprocessed(images, batch_size, with_maps=with_maps)
    return TestScores(images, split.test_is_abnormal, scores)


def split_metrics(
    detector: GANomalyDetector, split: DataSplit, config: RunConfig, test: TestScores
) -> tuple[dict[str, Any], PixelEvaluation | None]:
    """metrics.json's content: image metrics at the saved threshold, the run's settings and
    training facts, and pixel metrics when the split has masks."""
    from ganomaly.localization import pixel_evaluation
    from ganomaly.metrics import image_metrics

    card = detector.model_card()
    metrics: dict[str, Any] = image_metrics(test.labels, test.scores.score, detector.threshold_)
    metrics.update(
        threshold=detector.threshold_,
        threshold_quantile=detector.threshold_quantile_,
        val_median=detector.val_median_,
        data=config.data,
        protocol=resolve_protocol(config),
        target_class=config.target_class,
        data_source=split.data_source,
        epochs=config.epochs,
        seed=config.seed,
        split_seed=config.split_seed,
        **{k: card[k] for k in ("model", "score_metric", "score_lambda") if k in card},
        bn_mode=card["bn_mode"],
        n_val=detector.n_val_,
        threshold_from=detector.threshold_from_,
        **card["training"],
    )
    metrics["best_f1_oracle_note"] = "oracle: best F1 over all thresholds on the test labels"
    pixel = None
    if test.scores.maps is not None:
        pixel = pixel_evaluation(test.scores.maps, split.test_masks, split.test, test.labels)
    if pixel is not None:
        metrics.update(pixel.metrics)
    return metrics, pixel


def draw_figures(
    fig_dir: Path,
    detector: GANomalyDetector,
    split: DataSplit,
    test: TestScores,
    pixel: PixelEvaluation | None,
) -> None:
    """The run's figures: loss curves, restorations, score plots, outcomes, localization."""
    from ganomaly import figures
    from ganomaly.localization import figure_picks

    fig_dir.mkdir(exist_ok=True)
    scores, labels, threshold = test.scores.score, test.labels, detector.threshold_
    if detector.history_:
        figures.loss_curves(detector.history_, fig_dir / "loss_curves.png")
    pick = _restoration_picks(labels, scores)
    x = test.images[pick]
    figures.restoration_grid(
        to_display(x), to_display(detector.reconstruct_preprocessed(x)),
        fig_dir / "restoration.png",
    )  # fmt: skip
    figures.score_boxplot(
        scores, split.test_classes, set(split.normal_classes), threshold,
        fig_dir / "score_boxplot.png",
    )  # fmt: skip
    figures.score_histogram(scores, labels, threshold, fig_dir / "score_histogram.png")
    figures.roc_curve_plot(labels, scores, fig_dir / "roc.png")
    figures.pr_curve_plot(labels, scores, fig_dir / "pr.png")
    figures.outcome_galleries(
        to_display(test.images), labels, test.scores.is_anomaly, scores,
        fig_dir / "outcomes.png",
    )  # fmt: skip
    if pixel is not None:
        picked = figure_picks(labels[pixel.index])
        figures.localization_figure(
            to_display(test.images[pixel.index[picked]]), pixel.grid_maps[picked],
            pixel.grid_masks[picked], fig_dir / "localization.png", n=len(picked),
        )  # fmt: skip


def evaluate_split(
    run_dir: Path,
    detector: GANomalyDetector,
    split: DataSplit,
    config: RunConfig,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score the test split; write scores.csv, metrics.json, figures and report.html."""
    from ganomaly.report import write_report

    test = score_split(detector, split, batch_size)
    write_scores(run_dir / "scores.csv", split, test.scores)
    metrics, pixel = split_metrics(detector, split, config, test)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    draw_figures(run_dir / "figures", detector, split, test, pixel)
    shown = [f for f in FIGURES if (run_dir / f[0]).exists()]
    write_report(run_dir, metrics, dataclasses.asdict(config), shown, detector.model_card())
    return metrics


def _restoration_picks(labels: np.ndarray, scores: np.ndarray, per_kind: int = 8) -> np.ndarray:
    """Up to 8 normal and 8 abnormal test images, spread evenly over the split."""
    picks = []
    for kind in (0, 1):
        index = np.flatnonzero(labels == kind)
        if len(index):
            picks.append(
                index[np.linspace(0, len(index) - 1, min(per_kind, len(index))).astype(int)]
            )
    return np.concatenate(picks) if picks else np.arange(min(len(scores), per_kind))


def evaluate_run(
    run_dir: Path,
    batch_size: int = 256,
    data: dict[str, Any] | None = None,
    out: str | None = None,
    overwrite: bool = False,
    device: str = INFERENCE_DEVICE,
) -> dict[str, Any]:
    """Re-score a run's test split with its saved model; refuse data that does not match.

    With `data` (settings such as data, data_dir, category, target_class), score the saved
    model on that other labelled set instead (a new batch, a drift check) and write a fresh
    report to `out`, leaving the run directory untouched.
    """
    config = read_config(run_dir)
    detector = GANomalyDetector.load(run_dir, device=device)
    if data:
        if not out:
            raise ConfigError("evaluating on other data needs --out DIR for the new report")
        report_dir = prepare_out_dir(out, overwrite)
        if report_dir.resolve() == run_dir.resolve():
            raise ConfigError("--out must not be the run directory itself")
        kind_changed = data.get("data", config.data) != config.data
        config = dataclasses.replace(config, val_dir=None, **data)
        if kind_changed and "protocol" not in data:
            config.protocol = None  # the new dataset's natural protocol
        config.validate()
        split = load_split(config)
        report_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report_dir / "data.json", json.dumps(data_record(split), indent=1))
        write_config(report_dir / "config.yaml", config)
        return evaluate_split(report_dir, detector, split, config, batch_size)
    split = load_split(config)
    record_path = run_dir / "data.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") != split.fingerprint:
            raise DataError(
                f"the data found ({split.data_source}) is not the data this run was trained and "
                f"tested on ({record.get('data_source')}): fingerprints differ"
            )
        if record.get("test_ids") != split.test_ids:
            raise DataError("the test split differs from the run's recorded test ids")
    return evaluate_split(run_dir, detector, split, config, batch_size)


def summary_line(metrics: dict[str, Any], run_dir: Path) -> str:
    """The one line printed when a run ends."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"{run_dir}: AUROC {fmt(metrics.get('auroc'))}  AUPR {fmt(metrics.get('aupr'))}  "
        f"F1 {fmt(metrics.get('f1'))} @ threshold {metrics['threshold']:.4g}  "
        f"({metrics['n_test']} test images, {metrics['n_test_abnormal']} abnormal; "
        f"trained {metrics.get('train_seconds', 0):.0f} s)"
    )
