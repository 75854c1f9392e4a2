"""`ganomaly benchmark`: one protocol over classes (or MVTec categories) and seeds, GANomaly next
to two baselines on the very same splits, as tables with mean +- std over seeds.

    ganomaly benchmark --data mnist --protocol paper --classes 0-9 --seeds 0,1,2 \\
        --epochs 15 --out bench/mnist
    ganomaly benchmark --data mvtec --data-dir D --classes bottle,grid --seeds 0 --out bench/mv

Methods (`--methods`, all by default):
- `ganomaly`: a full run (`ganomaly train`) per cell; its run directory is kept in the cell.
- `autoencoder`: the same networks and training loop with w_adv = 0 and w_enc = 0 (a plain
  reconstruction autoencoder), scored by the mean of |x - x_hat|. The discriminator still
  trains (its loss no longer reaches G), which costs time but changes nothing.
- `raw-pixel`: no learning; score = mean squared distance of the image to the mean of the
  normal training images (model resolution, [-1, 1]); its map is |x - mean| smoothed.
Baselines use GANomaly's threshold rule (quantile of the held-out validation normals) and
anomaly-map smoothing, so only the scoring function differs.

Layout of --out: `cells/<method>/<class>/seed<k>/result.json` per finished cell, and
`results.md`, `results.csv`, `results.json`, `results.png`. A cell whose result.json holds
the same settings is never run again, so an interrupted benchmark resumes where it stopped and
a finished one re-writes identical tables. The "mean" row averages over classes per seed, then
reports mean +- std of those per-seed averages (std over seeds, ddof 0).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.atomic import atomic_write_text
from ganomaly.config import ConfigError, RunConfig, detector_part
from ganomaly.data import DataSplit, choose_data, load_split, resolve_protocol

METHODS = ("ganomaly", "autoencoder", "raw-pixel")
METHOD_TITLES = {"ganomaly": "GANomaly", "autoencoder": "autoencoder", "raw-pixel": "raw pixels"}
IMAGE_METRICS = ("auroc", "aupr", "f1")
PIXEL_METRICS = ("pixel_auroc", "pixel_aupro")
METRIC_TITLES = {
    "auroc": "AUROC",
    "aupr": "AUPR",
    "f1": "F1 at the saved threshold",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "pixel AUPRO (FPR <= 0.3)",
}
# Settings that do not change a cell's result, so they may differ between resumed runs.
# `max_pixels` and `skip_bad` only decide whether bad images stop a run: a cell that finished
# gives the same result under any value that lets it finish.
_IGNORED = (
    "out", "overwrite", "progress", "threads", "device", "target_class", "category", "seed",
    "max_pixels", "skip_bad",
)  # fmt: skip


def parse_classes(text: str, protocol: str) -> list[str]:
    """'0-9' or '0,3,5' (class datasets), 'bottle,grid' (mvtec) -> names."""
    items: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if protocol != "mvtec" and "-" in part:
            low, _, high = part.partition("-")
            if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
                raise ConfigError(f"--classes {text!r}: a range is written like 0-9")
            items += [str(k) for k in range(int(low), int(high) + 1)]
        else:
            if protocol != "mvtec" and not part.isdigit():
                raise ConfigError(f"--classes {text!r}: classes are integers, e.g. 0-9 or 1,3")
            items.append(part)
    if not items:
        raise ConfigError("--classes is empty")
    return list(dict.fromkeys(items))


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' -> [0, 1, 2]."""
    try:
        return [int(s) for s in parse_classes(text, "seeds")]
    except ConfigError:
        raise ConfigError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-2") from None


def cell_config(base: RunConfig, name: str, seed: int, out: Path) -> RunConfig:
    """The run config of one cell."""
    config = dataclasses.replace(base, seed=seed, out=str(out), overwrite=True, progress=False)
    if base.protocol == "mvtec":
        config.category = name
    elif base.protocol != "folder":
        config.target_class = int(name)
    return config


def settings_of(config: RunConfig, method: str) -> dict[str, Any]:
    """What a cell's result depends on (besides its class and seed)."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in _IGNORED}
    return {"method": method, **values}


def _baseline_metrics(
    method: str, config: RunConfig, split: DataSplit, scores: np.ndarray, val: np.ndarray,
    maps: np.ndarray | None,
) -> dict[str, Any]:  # fmt: skip
    from ganomaly.localization import pixel_evaluation
    from ganomaly.metrics import image_metrics
    from ganomaly.scoring import fit_threshold

    fit = fit_threshold(val, config.threshold_quantile, config.threshold)
    metrics: dict[str, Any] = image_metrics(split.test_is_abnormal, scores, fit.threshold)
    metrics["threshold"] = fit.threshold
    if maps is not None:
        pixel = pixel_evaluation(maps, split.test_masks, split.test, split.test_is_abnormal)
        if pixel is not None:
            metrics.update(pixel.metrics)
    return metrics


def run_raw_pixel(config: RunConfig, split: DataSplit) -> dict[str, Any]:
    """Distance of each image to the mean normal training image."""
    from ganomaly.detector import load_images, validation_split
    from ganomaly.scoring import gaussian_kernel, smooth_maps

    size, channels = config.image_hw(), config.channels or split.channels
    train = load_images(split.train, size, channels, config.interpolation)
    train_index, val_index = validation_split(len(train), config.val_fraction, config.split_seed)
    mean = train[train_index].mean(0, keepdim=True)  # (1, C, H, W)
    test = load_images(split.test, size, channels, config.interpolation)
    scores = ((test - mean) ** 2).mean((1, 2, 3)).numpy()
    val = ((train[val_index] - mean) ** 2).mean((1, 2, 3)).numpy()
    maps = None
    if any(m is not None for m in split.test_masks):
        error = (test - mean).abs().mean(1, keepdim=True)  # (N, 1, H, W)
        if config.map_sigma > 0:
            error = smooth_maps(error, gaussian_kernel(config.map_sigma))
        maps = error[:, 0].numpy()
    return _baseline_metrics("raw-pixel", config, split, scores, val, maps)


def run_autoencoder(config: RunConfig, split: DataSplit) -> dict[str, Any]:
    """The same networks trained with w_adv = w_enc = 0, scored by mean |x - x_hat|; its
    anomaly map is the model's own (smoothed |x - x_hat|)."""
    from ganomaly.detector import GANomalyDetector, validation_split

    params = dataclasses.asdict(detector_part(config))
    params.update(w_adv=0.0, w_enc=0.0)
    started = time.perf_counter()
    detector = GANomalyDetector(**params).fit(split.train)
    seconds = time.perf_counter() - started
    train = detector.preprocess(split.train)
    _, val_index = validation_split(len(train), config.val_fraction, config.split_seed)
    val = train[val_index]
    val_errors = (val - detector.reconstruct_preprocessed(val)).abs().mean((1, 2, 3))
    test = detector.preprocess(split.test)
    scores = (test - detector.reconstruct_preprocessed(test)).abs().mean((1, 2, 3)).numpy()
    maps = None
    if any(m is not None for m in split.test_masks):
        maps = detector.score_preprocessed(test, with_maps=True).maps
    metrics = _baseline_metrics("autoencoder", config, split, scores, val_errors.numpy(), maps)
    metrics["train_seconds"] = round(seconds, 3)
    return metrics


def run_cell(method: str, config: RunConfig, cell_dir: Path) -> dict[str, Any]:
    """Run one (method, class, seed) cell and return its metrics."""
    if method == "ganomaly":
        from ganomaly.run import train_run

        return train_run(dataclasses.replace(config, out=str(cell_dir / "run")))
    split = load_split(config)
    if method == "autoencoder":
        return run_autoencoder(config, split)
    return run_raw_pixel(config, split)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def run_benchmark(
    base: RunConfig, classes: list[str], seeds: list[int], methods: list[str]
) -> dict[str, Any]:
    """Every cell (resuming finished ones), then the tables; returns the results summary."""
    from ganomaly.run import say

    assert base.out is not None
    out = Path(base.out)
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {
        m: {c: [] for c in classes} for m in methods
    }
    total = len(methods) * len(classes) * len(seeds)
    done = 0
    for name in classes:
        for seed in seeds:
            for method in methods:
                done += 1
                cell_dir = out / "cells" / method / name / f"seed{seed}"
                config = cell_config(base, name, seed, cell_dir)
                settings = settings_of(config, method)
                saved = _read_result(cell_dir / "result.json")
                if saved is not None and saved.get("settings") == settings:
                    cells[method][name].append(saved["metrics"])
                    say(f"[{done}/{total}] {method} class {name} seed {seed}: done before, kept")
                    continue
                started = time.perf_counter()
                metrics = run_cell(method, config, cell_dir)
                seconds = time.perf_counter() - started
                kept = {k: metrics.get(k) for k in (*IMAGE_METRICS, *PIXEL_METRICS) if k in metrics}
                kept["seconds"] = round(seconds, 1)
                atomic_write_text(
                    cell_dir / "result.json",
                    json.dumps({"settings": settings, "metrics": kept}, indent=1),
                )
                cells[method][name].append(kept)
                say(
                    f"[{done}/{total}] {method} class {name} seed {seed}: "
                    f"AUROC {_fmt(kept.get('auroc'))} in {seconds:.0f} s"
                )
    summary = summarize(cells, classes, seeds, methods, base)
    write_tables(out, summary)
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _stats(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    array = np.asarray(present, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(present)}


def summarize(
    cells: dict[str, dict[str, list[dict[str, Any]]]],
    classes: list[str],
    seeds: list[int],
    methods: list[str],
    base: RunConfig,
) -> dict[str, Any]:
    """Per method, metric and class: mean, std and n over seeds; plus the class average."""
    first = cells[methods[0]][classes[0]][0]
    metrics = [m for m in (*IMAGE_METRICS, *PIXEL_METRICS) if first.get(m) is not None]
    table: dict[str, Any] = {}
    for method in methods:
        table[method] = {}
        for metric in metrics:
            rows = {c: _stats([cell.get(metric) for cell in cells[method][c]]) for c in classes}
            per_seed: list[float | None] = []
            for k in range(len(seeds)):
                values = [cells[method][c][k].get(metric) for c in classes]
                if all(v is not None for v in values):
                    per_seed.append(float(np.mean(np.asarray(values, dtype=np.float64))))
            rows["mean"] = _stats(list(per_seed))
            table[method][metric] = rows
    settings = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("out", "overwrite")}
    return {
        "data": base.data,
        "protocol": base.protocol,
        "classes": classes,
        "seeds": seeds,
        "methods": methods,
        "metrics": metrics,
        "settings": settings,
        "table": table,
        "cell_seconds": {
            m: round(sum(cell.get("seconds", 0.0) for c in classes for cell in cells[m][c]), 1)
            for m in methods
        },
    }


def _cell_text(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def markdown(summary: dict[str, Any]) -> str:
    """One table per metric: rows = classes + mean, columns = methods."""
    methods = summary["methods"]
    s = summary["settings"]
    protocol_note = {
        "paper": "class = the anomalous class (paper protocol)",
        "normal-class": "class = the normal class",
        "anomaly-class": "class = the anomalous class",
        "mvtec": "class = MVTec AD category",
        "folder": "the user folder",
    }.get(summary["protocol"], "")
    lines = [
        f"# Benchmark: {summary['data']}, protocol {summary['protocol']}",
        "",
        f"{protocol_note}; mean ± std over seeds {', '.join(map(str, summary['seeds']))}; "
        f"{s['epochs']} epoch{'s' if s['epochs'] != 1 else ''}, image {s['image_size']}, "
        f"nz {s['nz']}, ngf {s['ngf']}, batch {s['batch_size']}, split seed {s['split_seed']}.",
        "The mean row averages the classes per seed, then gives mean ± std over seeds.",
    ]
    for metric in summary["metrics"]:
        lines += ["", f"## {METRIC_TITLES[metric]}", ""]
        lines.append("| class | " + " | ".join(METHOD_TITLES[m] for m in methods) + " |")
        lines.append("|---|" + "---|" * len(methods))
        for name in [*summary["classes"], "mean"]:
            cells = [_cell_text(summary["table"][m][metric][name]) for m in methods]
            label = "**mean**" if name == "mean" else name
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, summary: dict[str, Any]) -> None:
    """results.md, results.csv, results.json and results.png in `out`."""
    (out / "results.md").write_text(markdown(summary))
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "metric", "class", "mean", "std", "n_seeds"])
        for method in summary["methods"]:
            for metric in summary["metrics"]:
                for name, stats in summary["table"][method][metric].items():
                    mean = "" if stats["mean"] is None else f"{stats['mean']:.6f}"
                    std = "" if stats["std"] is None else f"{stats['std']:.6f}"
                    writer.writerow([method, metric, name, mean, std, stats["n"]])
    bar_chart(summary, out / "results.png")


def bar_chart(summary: dict[str, Any], path: Path, metric: str = "auroc") -> Path:
    """Grouped bars of one metric per class and the mean, one colour per method, std as whiskers."""
    from matplotlib.figure import Figure

    names = [*summary["classes"], "mean"]
    methods = summary["methods"]
    width = 0.8 / len(methods)
    fig = Figure(
        figsize=(max(6.0, 0.7 * len(names) * len(methods) / 2 + 2), 3.6), layout="constrained"
    )
    ax = fig.subplots()
    x = np.arange(len(names))
    for k, method in enumerate(methods):
        rows = summary["table"][method][metric]
        means = [rows[n]["mean"] if rows[n]["mean"] is not None else np.nan for n in names]
        stds = [rows[n]["std"] if rows[n]["std"] is not None else 0.0 for n in names]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=METHOD_TITLES[method])  # fmt: skip
    ax.set_xticks(x, names)
    ax.set_ylim(0.0, 1.05)
    ax.axhline(0.5, color="#888888", linewidth=0.8, linestyle=":")
    ax.set_ylabel(METRIC_TITLES[metric])
    ax.set_title(f"{summary['data']} ({summary['protocol']}): {METRIC_TITLES[metric]}, mean ± std")
    ax.legend(fontsize=8, ncols=len(methods))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, facecolor="white")
    return path


def _prepare(out: str | None) -> Path:
    if not out:
        raise ConfigError("--out is required: the benchmark directory (re-use it to resume)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / "benchmark.yaml").is_file():
        raise ConfigError(f"--out {out}: holds files but is not a benchmark directory")
    return path


def cmd_benchmark(args: argparse.Namespace) -> int:
    """The `ganomaly benchmark` handler."""
    import yaml

    from ganomaly.cli import build_config
    from ganomaly.run import say

    base = build_config(args)
    base.data = choose_data(base).data  # without --data: what --data-dir holds, else mnist
    base.protocol = resolve_protocol(base)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods {args.methods!r}: choose from {', '.join(METHODS)}")
    seeds = parse_seeds(args.seeds)
    if args.classes:
        classes = parse_classes(args.classes, base.protocol)
    elif base.protocol == "mvtec":
        from ganomaly.data.folders import mvtec_categories

        classes = mvtec_categories(base.data_dir)
    elif base.protocol == "folder":
        classes = [Path(base.data_dir or ".").name]
    else:
        raise ConfigError("--classes is required, e.g. --classes 0-9")
    out = _prepare(base.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.yaml").write_text(
        yaml.safe_dump(
            {"classes": classes, "seeds": seeds, "methods": methods,
             **{k: v for k, v in dataclasses.asdict(base).items() if k != "overwrite"}},
            sort_keys=False,
        )
    )  # fmt: skip
    started = time.perf_counter()
    summary = run_benchmark(base, classes, seeds, methods)
    say(f"benchmark took {time.perf_counter() - started:.0f} s; wrote {out}/results.md")
    print(markdown(summary), end="")
    return 0


def register(subparsers: Any) -> None:
    """Add `ganomaly benchmark` to the CLI."""
    from ganomaly.cli import add_config_flags, describe

    parser = subparsers.add_parser(
        "benchmark", help="a protocol over classes and seeds, with baselines -> result tables"
    )
    describe(
        parser,
        "Train and evaluate one protocol for every class and seed, with the baselines, and "
        "write result tables (mean +- std over seeds) to --out; finished cells are kept, so "
        "the same command resumes an interrupted benchmark.",
        """
  ganomaly benchmark --data mnist --protocol paper --classes 0-9 --seeds 0,1,2 --out bench/mnist
  ganomaly benchmark --data mvtec --data-dir mvtec/ --classes bottle,grid --out bench/mvtec
  ganomaly benchmark --data digits --classes 0-2 --epochs 2 --image-size 16 --out bench/quick
""",
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="settings file (flags override it)")
    parser.add_argument("--classes", metavar="LIST", help="0-9, 1,3,5 or (mvtec) bottle,grid")
    parser.add_argument(
        "--seeds", metavar="LIST", default="0", help="seeds, e.g. 0,1,2 (default 0)"
    )
    parser.add_argument(
        "--methods", metavar="LIST", default=",".join(METHODS),
        help=f"methods to run (default: {','.join(METHODS)})",
    )  # fmt: skip
    add_config_flags(parser, RunConfig)
    parser.set_defaults(handler=cmd_benchmark)
