"""A run directory: train on a dataset's normal images, evaluate on its test split, write

config.yaml  model.pt  checkpoints/  history.csv  metrics.json  scores.csv
data.json (source, fingerprint, test ids)  figures/*.png  report.html

Without a test set (a folder of normal images only) the run is described by its validation
images instead: metrics.json holds their statistics and `"n_test": 0`, no scores.csv, and
report.html says how to evaluate it later on labelled images.

A run that fails before its first checkpoint removes what it created, so the same command
can simply be run again; from the first checkpoint on, `ganomaly train --resume RUN_DIR`
continues it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import shutil
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
from ganomaly.checkpoint import list_checkpoints, load_latest_checkpoint, save_checkpoint
from ganomaly.config import (
    INFERENCE_DEVICE,
    ConfigError,
    RunConfig,
    detector_part,
    from_dict,
    read_settings,
    stored_settings,
)
from ganomaly.data import DataError, DataSplit, choose_data, load_split, resolve_protocol
from ganomaly.data.layout import detect_layout
from ganomaly.detector import GANomalyDetector, Scores, resolve_device, validation_split
from ganomaly.images import to_display
from ganomaly.localization import PixelEvaluation
from ganomaly.process import release_free_memory, scoped_threads
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
# A run without a test set shows its validation images (normal, held out of training).
VALIDATION_FIGURES = (
    FIGURES[0],
    (
        "figures/restoration.png",
        "Validation images (normal, never trained on), their reconstructions x̂ and |x − x̂|",
    ),
    ("figures/score_histogram.png", "Scores of the validation images and the threshold"),
)
# What a failed attempt wrote before its first checkpoint (figures/ stays empty until the end);
# an --out holding only these is taken over.
FAILED_ATTEMPT_LEFTOVERS = frozenset({"config.yaml", "data.json", "figures"})


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
    """Check --out before any work: it must be new or empty unless --overwrite, or hold only
    what a failed attempt left before its first checkpoint (taken over, with a note)."""
    if not out:
        raise ConfigError("--out is required: the run directory to create")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if not entries or overwrite:
        return path
    if {"config.yaml", "data.json"} <= set(entries) <= FAILED_ATTEMPT_LEFTOVERS and not any(
        (path / "figures").glob("*")
    ):
        say(f"--out {out}: taking over what a failed attempt left (no checkpoint, no model)")
        return path
    if "model.pt" in entries:
        raise ConfigError(
            f"--out {out} already holds files of a finished run (model.pt); choose another "
            "--out, or pass --overwrite to replace it"
        )
    if "checkpoints" in entries and list_checkpoints(path):
        raise ConfigError(
            f"--out {out} already holds files of an unfinished run; continue it with "
            f"`ganomaly train --resume {out}`, or pass --overwrite to start again"
        )
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise ConfigError(
        f"--out {out} already holds files ({shown}); choose a new or empty directory, "
        "or pass --overwrite"
    )


@contextlib.contextmanager
def removed_unless_kept(run_dir: Path) -> Iterator[Callable[[], None]]:
    """Inside the block, a failure removes what the block created in and above `run_dir`
    (what was there before stays) unless `keep()` was called first: a run calls it once its
    first checkpoint is saved, from when on `--resume` can continue it."""
    created_top = next(
        (p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None
    )  # the outermost folder this run will create, if any
    before = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    kept = False

    def keep() -> None:
        nonlocal kept
        kept = True

    try:
        yield keep
    except BaseException:
        if not kept:
            if created_top is not None:
                shutil.rmtree(created_top, ignore_errors=True)
            elif run_dir.is_dir():
                for entry in run_dir.iterdir():
                    if entry.name not in before:
                        _remove(entry)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_config(path: Path, config: RunConfig) -> None:
    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))


def read_config(run_dir: Path) -> RunConfig:
    """config.yaml of a run directory as a RunConfig."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    return from_dict(RunConfig, stored_settings(read_settings(path, str(path))))


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
    """Train, save, evaluate; returns metrics. With resume, continue from checkpoints/.

    Everything that can fail on the user's input (settings, device, --out, data) is checked
    before anything is written; a later failure before the first checkpoint removes what the
    run created (`removed_unless_kept`)."""
    config.validate()
    resolve_device(config.device)  # a device this machine lacks fails before any file exists
    if config.tensorboard:  # a missing package is named before anything is written
        from ganomaly.tensorboard import require_tensorboard

        require_tensorboard()
    # torchrun (ganomaly/distributed.py): every rank trains, rank 0 alone writes and logs.
    distributed.setup(config.device)
    if not distributed.is_main():
        return _train_other_rank(config, resume)
    choice = choose_data(config)
    if choice.description:
        say(f"data: {choice.description}")
    config.data, config.category = choice.data, config.category or choice.category
    run_dir = (
        Path(config.out) if resume and config.out else prepare_out_dir(config.out, config.overwrite)
    )
    checkpoint = None
    if resume and not list_checkpoints(run_dir):
        raise ConfigError(
            f"{run_dir}: no checkpoints to resume from (the run stopped before its first epoch "
            f"ended); start it again: ganomaly train --config {run_dir}/config.yaml "
            f"--out {run_dir} --overwrite"
        )
    if resume:
        checkpoint = load_latest_checkpoint(run_dir)
    split = load_split(config)
    protocol = resolve_protocol(config)
    # too few images to hold out any fails here, before anything is written
    _, val_index = validation_split(len(split.train_ids), config.val_fraction, config.split_seed)
    say(f"{split_line(config, split, protocol)} | {len(val_index)} of them held out for validation")
    if not resume and config.overwrite:
        for stale in list_checkpoints(run_dir):  # another run's: they would outrank this one's
            stale.unlink()
    with removed_unless_kept(run_dir) as keep:
        if checkpoint is not None:
            keep()
        run_dir.mkdir(parents=True, exist_ok=True)
        config.protocol = protocol
        write_config(run_dir / "config.yaml", config)
        atomic_write_text(run_dir / "data.json", json.dumps(data_record(split), indent=1))

        board = None
        if config.tensorboard:
            from ganomaly.tensorboard import TrainingBoard, validation_sample

            channels = config.channels or split.channels
            board = TrainingBoard(
                run_dir / "tensorboard", validation_sample(split.train, config, channels)
            )

        def on_epoch(state: TrainState) -> None:
            save_checkpoint(run_dir, state)
            keep()
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
    if split.has_test:
        metrics = evaluate_split(run_dir, detector, split, config, progress=config.progress)
    else:
        (run_dir / "scores.csv").unlink(missing_ok=True)  # an overwritten run's test scores
        metrics = describe_validation(run_dir, detector, split, config)
    detector.annotate(metrics={k: metrics[k] for k in ("auroc", "aupr", "f1") if k in metrics})
    detector.save(run_dir / "model.pt")
    return metrics


def split_line(config: RunConfig, split: DataSplit, protocol: str) -> str:
    """The line that says what a run trains and tests on."""
    target = f" class {config.target_class}" if config.target_class is not None else ""
    test = (
        f"{len(split.test_ids)} test ({int(split.test_is_abnormal.sum())} abnormal)"
        if split.has_test
        else "no test set (normal-only training)"
    )
    return (
        f"data: {config.data} from {split.data_source} | protocol {protocol}{target} | "
        f"{len(split.train_ids)} normal training images, {test}"
    )


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


# Images preprocessed and scored per progress-bar step (scores do not depend on it).
SCORING_CHUNK = 256


def score_split(
    detector: GANomalyDetector, split: DataSplit, batch_size: int, progress: bool = False
) -> TestScores:
    """Preprocess and score a split's test images (with maps when it has masks)."""
    from tqdm.auto import tqdm

    with_maps = any(m is not None for m in split.test_masks)
    n = len(split.test_ids)
    parts: list[tuple[torch.Tensor, Scores]] = []
    with tqdm(total=n, unit="img", desc="scoring", disable=not progress, leave=False) as bar:
        for start in range(0, n, SCORING_CHUNK):
            images = detector.preprocess(split.test[start : start + SCORING_CHUNK])
            parts.append((images, detector.score_preprocessed(images, batch_size, with_maps)))
            bar.update(len(images))
    scored = [part for _, part in parts]
    maps = [part.maps for part in scored if part.maps is not None]
    scores = Scores(
        np.concatenate([part.score for part in scored]),
        np.concatenate([part.normalized_score for part in scored]),
        np.concatenate([part.is_anomaly for part in scored]),
        np.concatenate(maps) if with_maps else None,
    )
    release_free_memory()  # the batches' activations, before metrics and figures load more
    return TestScores(torch.cat([x for x, _ in parts]), split.test_is_abnormal, scores)


def run_facts(detector: GANomalyDetector, split: DataSplit, config: RunConfig) -> dict[str, Any]:
    """What every metrics.json states besides its metrics: threshold and normalisation, the
    data, the settings that decide the result, and the training facts."""
    card = detector.model_card()
    return dict(
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


def split_metrics(
    detector: GANomalyDetector, split: DataSplit, config: RunConfig, test: TestScores
) -> tuple[dict[str, Any], PixelEvaluation | None]:
    """metrics.json's content: image metrics at the saved threshold, the run's settings and
    training facts, and pixel metrics when the split has masks."""
    from ganomaly.localization import pixel_evaluation
    from ganomaly.metrics import image_metrics

    metrics: dict[str, Any] = image_metrics(test.labels, test.scores.score, detector.threshold_)
    metrics.update(run_facts(detector, split, config))
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
) -> list[tuple[str, str]]:
    """The run's figures: loss curves, restorations, score plots, outcomes, localization.
    Returns the (path, caption) pairs drawn, for the report."""
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
        lambda shown: to_display(test.images[torch.as_tensor(shown)]),
        labels, test.scores.is_anomaly, scores, fig_dir / "outcomes.png",
    )  # fmt: skip
    drawn = {"restoration.png", "score_boxplot.png", "score_histogram.png", "roc.png", "pr.png"}
    drawn |= {"outcomes.png"} | ({"loss_curves.png"} if detector.history_ else set())
    if pixel is not None:
        picked = figure_picks(labels[pixel.index])
        figures.localization_figure(
            to_display(test.images[pixel.index[picked]]), pixel.grid_maps[picked],
            pixel.grid_masks[picked], fig_dir / "localization.png", n=len(picked),
        )  # fmt: skip
        drawn.add("localization.png")
    return [f for f in FIGURES if Path(f[0]).name in drawn]


def evaluate_split(
    run_dir: Path,
    detector: GANomalyDetector,
    split: DataSplit,
    config: RunConfig,
    batch_size: int = 256,
    progress: bool = False,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """Score the test split; write scores.csv, metrics.json, figures and report.html.
    `model_dir`: where the model lives, for the report's commands (default: `run_dir`)."""
    from ganomaly.report import write_report

    test = score_split(detector, split, batch_size, progress)
    write_scores(run_dir / "scores.csv", split, test.scores)
    metrics, pixel = split_metrics(detector, split, config, test)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    shown = draw_figures(run_dir / "figures", detector, split, test, pixel)
    write_report(
        run_dir, metrics, dataclasses.asdict(config), shown, detector.model_card(),
        next_steps(model_dir or run_dir, has_test=True),
    )  # fmt: skip
    return metrics


def validation_images(split: DataSplit, config: RunConfig) -> Any:
    """The normal images the threshold was fitted on: --val-dir's normal ones, else those
    `fit` held out of training (the same seeded split)."""
    if split.val is not None and split.val_is_abnormal is not None:
        return [p for p, bad in zip(split.val, split.val_is_abnormal, strict=True) if not bad]
    _, val_index = validation_split(len(split.train_ids), config.val_fraction, config.split_seed)
    if isinstance(split.train, list):
        return [split.train[i] for i in val_index]
    return split.train[val_index]


def describe_validation(
    run_dir: Path, detector: GANomalyDetector, split: DataSplit, config: RunConfig
) -> dict[str, Any]:
    """A run without a test set: metrics.json with the validation statistics and
    `"n_test": 0` (no test metrics), figures of the validation images, and a report that
    says how to evaluate the model later."""
    from ganomaly import figures
    from ganomaly.report import write_report

    val = detector.val_scores_
    threshold = detector.threshold_
    metrics: dict[str, Any] = {
        "n_test": 0,
        "n_test_abnormal": 0,
        "val_score_min": float(val.min()),
        "val_score_mean": float(val.mean()),
        "val_score_max": float(val.max()),
        "n_val_above_threshold": int((val > threshold).sum()),
        **run_facts(detector, split, config),
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    shown = list(VALIDATION_FIGURES)
    if detector.history_:
        figures.loss_curves(detector.history_, fig_dir / "loss_curves.png")
    else:
        shown.remove(FIGURES[0])
    images = validation_images(split, config)
    pick = np.linspace(0, len(images) - 1, min(8, len(images))).astype(int)
    x = detector.preprocess([images[i] for i in pick] if isinstance(images, list) else images[pick])
    figures.restoration_grid(
        to_display(x), to_display(detector.reconstruct_preprocessed(x)),
        fig_dir / "restoration.png", title="Validation images (normal) and reconstructions",
    )  # fmt: skip
    figures.score_histogram(
        val, np.zeros(len(val), np.int64), threshold, fig_dir / "score_histogram.png"
    )
    write_report(
        run_dir, metrics, dataclasses.asdict(config), shown, detector.model_card(),
        next_steps(run_dir, has_test=False),
    )  # fmt: skip
    return metrics


def next_steps(run_dir: Path, has_test: bool) -> list[tuple[str, str]]:
    """What to do with a run, as (what, command) pairs for its report."""
    steps = [
        (
            "Score new images (prints a table; --csv FILE or --json FILE saves it)",
            f"ganomaly predict {run_dir} IMAGES_OR_FOLDERS",
        ),
        ("Export it for deployment (ONNX)", f"ganomaly export {run_dir} --format onnx"),
    ]
    evaluate = (
        "Evaluate it on labelled images: test/good/ + test/<defect>/ or good/ + <defect>/ "
        "folders (the report goes to --out)",
        f"ganomaly evaluate {run_dir} --data-dir LABELLED_DIR --out {run_dir}-evaluated",
    )
    if not has_test:
        return [
            (
                "This run had no test set, so it has no test metrics. " + evaluate[0],
                evaluate[1],
            ),
            *steps,
        ]
    return [*steps, evaluate]


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
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Re-score a run's test split with its saved model; refuse data that does not match.

    With `data` (settings such as data, data_dir, category, target_class), score the saved
    model on that other labelled set instead (a new batch, a drift check; without `data`
    named, `data_dir`'s layout decides it) and write a fresh report to `out`, leaving the
    run directory untouched. `threads`: CPU threads while scoring (None: unchanged).
    """
    config = read_config(run_dir)
    record_path = run_dir / "data.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if not data and record is not None and not record.get("test_ids"):
        raise ConfigError(
            f"{run_dir} was trained without a test set; evaluate it on labelled images: "
            f"ganomaly evaluate {run_dir} --data-dir LABELLED_DIR --out REPORT_DIR"
        )
    with scoped_threads(threads):
        detector = GANomalyDetector.load(run_dir, device=device)
        if data:
            if not out:
                raise ConfigError("evaluating on other data needs --out DIR for the new report")
            report_dir = prepare_out_dir(out, overwrite)
            if report_dir.resolve() == run_dir.resolve():
                raise ConfigError("--out must not be the run directory itself")
            config = evaluation_config(config, data)
            split = load_split(config, need_train=False)
            n, abnormal = len(split.test_ids), int(split.test_is_abnormal.sum())
            say(f"evaluating on {split.data_source}: {n} images, {abnormal} abnormal")
            with removed_unless_kept(report_dir):  # a failure leaves no half-written report
                report_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(
                    report_dir / "data.json", json.dumps(data_record(split), indent=1)
                )
                write_config(report_dir / "config.yaml", config)
                return evaluate_split(
                    report_dir, detector, split, config, batch_size, progress, run_dir
                )
        split = load_split(config)
        if record is not None:
            if record.get("fingerprint") != split.fingerprint:
                raise DataError(
                    f"the data found ({split.data_source}) is not the data this run was trained "
                    f"and tested on ({record.get('data_source')}): fingerprints differ"
                )
            if record.get("test_ids") != split.test_ids:
                raise DataError("the test split differs from the run's recorded test ids")
        return evaluate_split(run_dir, detector, split, config, batch_size, progress)


def evaluation_config(config: RunConfig, data: dict[str, Any]) -> RunConfig:
    """A run's config pointed at other labelled data: `data`'s settings replace the run's;
    without `data` naming the dataset, what `data_dir` holds decides it, and a dataset of
    another kind drops the run's protocol, class and category unless `data` gives them."""
    new = dataclasses.replace(config, val_dir=None, **data)
    if "data" not in data and data.get("data_dir") is not None:
        layout = detect_layout(data["data_dir"])
        say(f"data: {layout.description}")
        new.data = layout.data or config.data
    if new.data != config.data:
        for name in ("protocol", "target_class", "category"):
            if name not in data:
                setattr(new, name, None)
    new.validate()
    new.category = new.category or choose_data(new, need_train=False).category
    return new


def summary_line(metrics: dict[str, Any], run_dir: Path) -> str:
    """The one line printed when a run ends."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    if not metrics["n_test"]:
        quantile = metrics.get("threshold_quantile")
        fitted = (
            f"the {quantile:g} quantile of {metrics['n_val']} validation images' scores"
            if quantile is not None
            else metrics.get("threshold_from", "")
        )
        return (
            f"{run_dir}: threshold {metrics['threshold']:.4g} ({fitted}); no test set, so no "
            f"test metrics; trained {metrics.get('train_seconds', 0):.0f} s on "
            f"{metrics.get('n_train', 0)} images. Score new images: ganomaly predict {run_dir} "
            "IMAGES"
        )
    return (
        f"{run_dir}: AUROC {fmt(metrics.get('auroc'))}  AUPR {fmt(metrics.get('aupr'))}  "
        f"F1 {fmt(metrics.get('f1'))} @ threshold {metrics['threshold']:.4g}  "
        f"({metrics['n_test']} test images, {metrics['n_test_abnormal']} abnormal; "
        f"trained {metrics.get('train_seconds', 0):.0f} s)"
    )
