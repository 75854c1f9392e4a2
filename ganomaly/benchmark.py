"""`ganomaly benchmark`: one protocol over classes (or MVTec categories) and seeds, the models
next to two baselines on the very same splits, as tables with mean +- std over seeds.

    ganomaly benchmark --data mnist --protocol paper --classes 0-9 --seeds 0,1,2 \\
        --pair-split-seed --epochs 15 --out bench/mnist-paper --results docs/results/mnist-paper
    ganomaly benchmark --data mvtec --data-dir D --classes bottle,grid --seeds 0 --out bench/mv

Methods (`--methods`; default ganomaly,autoencoder,raw-pixel):
- `ganomaly`, `skip-ganomaly`: a full run (`ganomaly train`, with that `--model`) per cell.
- `autoencoder`, `raw-pixel`: the baselines of `ganomaly.baselines`.

Two folders:
- `--results` (default: `--out`), the part worth committing: one small JSON per finished cell
  (`ganomaly.cells`: metrics, path-free settings, the data's source name and fingerprint,
  seconds, versions, code fingerprint), and the tables `results.md`, `results.csv`,
  `results.json`, `results.png`.
- `--out`: the bulky part, never needed again for the tables: the run directory of every
  trained cell (`runs/<method>/<class>/seed<k>-<key>/`: model, checkpoints, figures) and
  `benchmark.yaml` (the command's settings, machine paths included).

A cell whose key (data fingerprint + settings) is found in `--results` is never run again, so an
interrupted benchmark resumes where it stopped, a finished one re-writes identical tables from
its cells alone, and a grid can be committed cell by cell as it progresses. A cell made by other
code (its code fingerprint differs) is re-used with a warning; `--rerun-stale` runs it again.

`--pair-split-seed` gives each cell the split seed of its own seed, as the reference's
`--manualseed S` sets both: a cell then selects the same training and test images as the
authors' code run with that seed. Without it every seed shares `--split-seed`, so the spread
over seeds is the initialisation's and data order's alone.

The "mean" row averages over classes per seed, then reports mean +- std of those per-seed
averages (std over seeds, ddof 0).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.atomic import atomic_write_text
from ganomaly.config import MODEL_DEFAULTS, ConfigError, RunConfig, rule_quantile
from ganomaly.data import DataSplit, choose_data, load_split, resolve_protocol

METHODS = ("ganomaly", "skip-ganomaly", "autoencoder", "raw-pixel")
# The paper's table: GANomaly and its two baselines. Skip-GANomaly is asked for by name.
DEFAULT_METHODS = ("ganomaly", "autoencoder", "raw-pixel")
METHOD_TITLES = {
    "ganomaly": "GANomaly",
    "skip-ganomaly": "Skip-GANomaly",
    "autoencoder": "autoencoder",
    "raw-pixel": "raw pixels",
}
# What each method sets on top of the benchmark's settings (the autoencoder: GANomaly's
# networks with its adversarial and latent losses off).
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "ganomaly": {"model": "ganomaly"},
    "skip-ganomaly": {"model": "skip-ganomaly"},
    "autoencoder": {"model": "ganomaly", "w_adv": 0.0, "w_enc": 0.0},
    "raw-pixel": {"model": "ganomaly"},
}
IMAGE_METRICS = ("auroc", "aupr", "f1")
PIXEL_METRICS = ("pixel_auroc", "pixel_aupro")
# What a cell keeps of a run's metrics: the table's metrics and the facts that explain them.
KEPT_METRICS = (
    *IMAGE_METRICS, *PIXEL_METRICS, "threshold", "n_train", "n_val", "n_test",
    "n_test_abnormal", "train_seconds", "d_reinits",
)  # fmt: skip
METRIC_TITLES = {
    "auroc": "AUROC",
    "aupr": "AUPR",
    "f1": "F1 at the saved threshold",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "pixel AUPRO (FPR <= 0.3)",
}
# Fields of a run config that are not part of a cell's settings: the cell's own class and
# seed; machine paths (replaced by the data's source name and fingerprint); and settings that
# cannot change a finished cell's numbers (where files go, threads, progress bars, how often
# to checkpoint, how images are held or decoded, which bad files stop a run).
_NOT_SETTINGS = (
    "target_class", "category", "seed", "out", "data_dir", "source", "val_dir", "overwrite",
    "progress", "threads", "device", "checkpoint_every", "tensorboard",
    "max_pixels", "skip_bad",
)  # fmt: skip


@dataclass
class Grid:
    """A benchmark: the settings shared by every cell, and what varies."""

    base: RunConfig
    classes: list[str]
    seeds: list[int]
    methods: list[str]
    out: Path  # run directories (bulky, not committed)
    results: Path  # cells and tables (small, committed)
    pair_split_seed: bool = False  # split seed = seed, as the reference's --manualseed
    rerun_stale: bool = False  # run cells made by other code again
    tables_only: bool = False  # run nothing: tables of the cells found, the rest shown missing


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


def cell_config(grid: Grid, method: str, name: str, seed: int) -> RunConfig:
    """The run config of one cell (its `out` is set by the caller that trains)."""
    config = dataclasses.replace(
        grid.base, seed=seed, out=None, overwrite=True, progress=False, **METHOD_SETTINGS[method]
    )
    if grid.pair_split_seed:
        config.split_seed = seed
    if config.protocol == "mvtec":
        config.category = name
    elif config.protocol != "folder":
        config.target_class = int(name)
    return config


def settings_of(config: RunConfig) -> dict[str, Any]:
    """What a cell's numbers depend on besides its method, class, seed and data: every
    setting that can change them, per-model defaults resolved to their values."""
    values = dataclasses.asdict(config)
    values.update({name: config.setting(name) for name in MODEL_DEFAULTS[config.model]})
    return canonical_settings(values)


def canonical_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (a config's, or a cell's as recorded by any version) in one form, so that
    two runs that compute the same numbers have equal settings: only what can change a
    result, and each threshold rule as the quantile it means."""
    values = {k: v for k, v in settings.items() if k not in _NOT_SETTINGS}
    # Cells made before --precision existed trained in float32.
    values.setdefault("precision", "fp32")
    values["threshold_quantile"] = rule_quantile(
        values.get("threshold_quantile"), values.pop("contamination", None), values.get("threshold")
    )
    return values


def data_of(config: RunConfig, split: DataSplit) -> dict[str, str]:
    """The data a cell saw, without machine paths: dataset, source name, fingerprint."""
    return {
        "name": str(config.data),  # resolved by choose_data before any cell runs
        "source": split.data_source,
        "fingerprint": split.fingerprint,
    }


def _device_of(config: RunConfig) -> str:
    from ganomaly.detector import resolve_device
    from ganomaly.hardware import device_description

    return device_description(resolve_device(config.device))


def run_cell(
    method: str, config: RunConfig, split: DataSplit, run_dir: Path, resume: bool = False
) -> dict[str, Any]:
    """Run one (method, class, seed) cell and return its metrics; `resume` continues a
    trained method's interrupted run in `run_dir` from its last checkpoint."""
    from ganomaly import baselines

    if method in ("ganomaly", "skip-ganomaly"):
        from ganomaly.run import train_run

        return train_run(dataclasses.replace(config, out=str(run_dir)), resume=resume)
    if method == "autoencoder":
        return baselines.run_autoencoder(config, split)
    return baselines.run_raw_pixel(config, split)


def run_benchmark(grid: Grid) -> dict[str, Any]:
    """Every cell (re-using those in `grid.results`), then the tables; returns the summary."""
    import torch

    from ganomaly import __version__
    from ganomaly.cells import cell_key, cell_path, code_fingerprint, find_cell, write_cell
    from ganomaly.checkpoint import list_checkpoints
    from ganomaly.run import say

    code = code_fingerprint()
    versions = {"ganomaly": __version__, "torch": str(torch.__version__), "numpy": np.__version__}
    # Per method and class, one cell per seed in --seeds order (None: missing, --tables-only).
    cells: dict[str, dict[str, list[dict[str, Any] | None]]] = {
        m: {c: [] for c in grid.classes} for m in grid.methods
    }
    sources: dict[str, dict[str, str]] = {}  # per class, the data its cells saw
    stale: list[list[str]] = []  # per stale cell re-used, the files that differ
    loaded: tuple[tuple[str, int], DataSplit] | None = None
    total, done = len(grid.methods) * len(grid.classes) * len(grid.seeds), 0
    for name in grid.classes:
        for seed in grid.seeds:
            for method in grid.methods:
                done += 1
                config = cell_config(grid, method, name, seed)
                if loaded is None or loaded[0] != (name, config.split_seed):
                    loaded = (name, config.split_seed), load_split(config)
                split = loaded[1]
                settings = settings_of(config)
                sources[name] = data_of(config, split)
                identity = {"method": method, "class": name, "seed": seed,
                            "data": sources[name], "settings": settings}  # fmt: skip
                key = cell_key(identity)
                path = cell_path(grid.results, method, name, seed, key)
                where = f"[{done}/{total}] {method} class {name} seed {seed}"
                found = find_cell(path.parent, identity, _identity_of)
                if found is not None:
                    old_path, cell = found
                    differing = code.differing(cell["code"]["files"])
                    if not differing or not grid.rerun_stale:
                        if differing:
                            stale.append(differing)
                        cells[method][name].append(cell)
                        say(f"{where}: done before, kept{' (stale)' if differing else ''}")
                        continue
                if grid.tables_only:
                    cells[method][name].append(None)
                    say(f"{where}: not run yet, shown as missing")
                    continue
                run_dir = grid.out / "runs" / method / name / f"seed{seed}-{key}"
                # A cell stopped after a checkpoint (its folder is named by its settings' key)
                # continues from it: a 15-epoch cell is many minutes of a 2-core CPU. A stale
                # cell run again starts afresh: its checkpoints were made by the other code.
                checkpoints = list_checkpoints(run_dir) if found is None else []
                if checkpoints:
                    say(f"{where}: continuing from {checkpoints[-1].name}")
                started = time.perf_counter()
                metrics = run_cell(method, config, split, run_dir, resume=bool(checkpoints))
                seconds = time.perf_counter() - started
                cell = {
                    "key": key, **identity,
                    "metrics": {k: metrics[k] for k in KEPT_METRICS if k in metrics},
                    "seconds": round(seconds, 1),
                    "device": _device_of(config),
                    # --threads is scoped to the cell's fit: afterwards torch has its own count.
                    "threads": config.threads or torch.get_num_threads(),
                    "versions": versions,
                    "code": {"fingerprint": code.fingerprint, "files": code.files},
                }  # fmt: skip
                write_cell(path, cell)
                if found is not None and old_path != path:
                    old_path.unlink()  # the stale cell it replaces, recorded by older settings
                cells[method][name].append(cell)
                say(f"{where}: AUROC {_fmt(metrics.get('auroc'))} in {seconds:.0f} s")
    if stale:
        files = sorted({f for differing in stale for f in differing})
        warnings.warn(
            f"{len(stale)} of {total} cells were made by other code (differs in "
            f"{', '.join(files)}); re-used as they are, --rerun-stale runs them again",
            stacklevel=2,
        )
    if all(c is None for m in grid.methods for c_list in cells[m].values() for c in c_list):
        raise ConfigError(f"--tables-only: no finished cell of this grid in {grid.results}")
    summary = summarize(grid, cells, sources, len(stale))
    write_tables(grid.results, summary)
    return summary


def _identity_of(cell: dict[str, Any]) -> dict[str, Any]:
    """What a recorded cell was made from, in the form `run_benchmark` compares."""
    identity = {k: cell.get(k) for k in ("method", "class", "seed", "data")}
    return {**identity, "settings": canonical_settings(cell.get("settings") or {})}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _stats(values: list[float | None]) -> dict[str, Any]:
    """Mean, std (ddof 0), min, max and count of the values present; `values` as given, one
    per seed (None where a metric is undefined)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": values}
    array = np.asarray(present, dtype=np.float64)
    return {
        "mean": float(array.mean()), "std": float(array.std()), "min": float(array.min()),
        "max": float(array.max()), "n": len(present), "values": values,
    }  # fmt: skip


def summarize(
    grid: Grid,
    cells: dict[str, dict[str, list[dict[str, Any] | None]]],
    sources: dict[str, dict[str, str]],
    n_stale: int = 0,
) -> dict[str, Any]:
    """Per method, metric and class: mean, std, min, max, n and the per-seed values (None
    where a cell is missing); the class average per seed; the settings, data and compute time
    behind them."""
    classes, seeds, methods = grid.classes, grid.seeds, grid.methods
    done = [cell for m in methods for c in classes for cell in cells[m][c] if cell is not None]
    metrics = [m for m in (*IMAGE_METRICS, *PIXEL_METRICS) if done[0]["metrics"].get(m) is not None]

    def value(cell: dict[str, Any] | None, metric: str) -> float | None:
        return None if cell is None else cell["metrics"].get(metric)

    table: dict[str, Any] = {}
    for method in methods:
        table[method] = {}
        for metric in metrics:
            rows = {c: _stats([value(cell, metric) for cell in cells[method][c]]) for c in classes}
            per_seed: list[float | None] = []
            for k in range(len(seeds)):
                values = [value(cells[method][c][k], metric) for c in classes]
                present = all(v is not None for v in values)
                per_seed.append(float(np.mean(np.asarray(values, np.float64))) if present else None)
            rows["mean"] = _stats(per_seed)
            table[method][metric] = rows
    # What every cell of a method was made with: its config's settings (a found cell records
    # the same ones), so a method whose cells are all missing is still described.
    settings = {m: settings_of(cell_config(grid, m, classes[0], seeds[0])) for m in methods}
    shared = {k: v for k, v in settings[methods[0]].items()
              if k not in ("model", "w_adv", "w_con", "w_enc", "w_lat", "split_seed")}  # fmt: skip
    return {
        "data": grid.base.data,
        "protocol": grid.base.protocol,
        "classes": classes,
        "seeds": seeds,
        "methods": methods,
        "metrics": metrics,
        "split_seed": "paired" if grid.pair_split_seed else grid.base.split_seed,
        "settings": shared,
        "method_settings": {m: {k: settings[m][k] for k in _METHOD_KEYS[m]} for m in methods},
        "data_sources": {c: sources[c] for c in classes},
        "table": table,
        "cell_seconds": {
            m: round(sum(c["seconds"] for n in classes for c in cells[m][n] if c is not None), 1)
            for m in methods
        },
        "images": {
            k: sorted({cell["metrics"].get(k) for cell in done} - {None})
            for k in ("n_train", "n_test", "n_test_abnormal")
        },
        # Cells made before the CPU's model was recorded say only "cpu".
        "devices": sorted(
            {"cpu (model not recorded)" if c["device"] == "cpu" else c["device"] for c in done}
        ),
        "stale_cells": n_stale,
        "missing_cells": len(methods) * len(classes) * len(seeds) - len(done),
    }


# The settings that tell the methods apart, shown per method in the tables' header.
_METHOD_KEYS = {
    "ganomaly": ("w_adv", "w_con", "w_enc"),
    "skip-ganomaly": ("w_adv", "w_con", "w_lat", "score_lambda"),
    "autoencoder": ("w_adv", "w_con", "w_enc"),
    "raw-pixel": (),
}


def _cell_text(stats: dict[str, Any]) -> str:
    """mean ± std over the seeds; with some seeds missing, how many the figure is of."""
    if stats["mean"] is None:
        return "—"
    if stats["n"] == len(stats["values"]):
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    if stats["n"] == 1:
        return f"{stats['mean']:.3f} (1 seed)"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f} ({stats['n']} seeds)"


def _seeds_text(stats: dict[str, Any]) -> str:
    return " / ".join("—" if v is None else f"{v:.3f}" for v in stats["values"])


def _paper(name: str, settings: dict[str, Any]) -> str:
    """A setting's value, and the paper's (the config's default) where it differs."""
    paper = next(f.default for f in dataclasses.fields(RunConfig) if f.name == name)
    value = settings[name]
    return f"{value}" if value == paper else f"{value} (paper: {paper})"


def _images_text(images: dict[str, list[int]]) -> str:
    def span(values: list[int]) -> str:
        return "?" if not values else "–".join(map(str, sorted({values[0], values[-1]})))

    return (
        f"{span(images['n_train'])} training images per cell (after the validation hold-out), "
        f"{span(images['n_test'])} test images ({span(images['n_test_abnormal'])} abnormal)"
    )


def _method_line(method: str, values: dict[str, Any]) -> str:
    weights = ", ".join(f"{k} {v:g}" for k, v in values.items())
    return {
        "ganomaly": f"GANomaly ({weights})",
        "skip-ganomaly": f"Skip-GANomaly ({weights})",
        "autoencoder": f"autoencoder (GANomaly's networks, {weights}: D never trained; "
        "score mean |x − x̂|)",
        "raw-pixel": "raw pixels (squared distance to the mean normal training image)",
    }[method]


def markdown(summary: dict[str, Any]) -> str:
    """One table per metric (rows = classes + mean, columns = methods), then AUROC per seed."""
    methods = summary["methods"]
    s = summary["settings"]
    protocol_note = {
        "paper": "class = the anomalous class (paper protocol)",
        "normal-class": "class = the normal class",
        "anomaly-class": "class = the anomalous class",
        "mvtec": "class = MVTec AD-layout category",
        "folder": "the user folder",
    }.get(summary["protocol"], "")
    # With a fixed train/test split (mvtec, folder) the split seed only picks the validation
    # images held out of training.
    what = "validation split seed" if summary["protocol"] in ("mvtec", "folder") else "split seed"
    split = (
        f"{what} = seed (paired, as the reference's --manualseed)"
        if summary["split_seed"] == "paired"
        else f"{what} {summary['split_seed']}"
    )
    precision = f", precision {s['precision']}" if "precision" in s else ""
    sources = sorted(
        {(d["source"], d["fingerprint"][:12]) for d in summary["data_sources"].values()}
    )
    compute = ", ".join(f"{METHOD_TITLES[m]} {summary['cell_seconds'][m]:.0f} s" for m in methods)
    lines = [
        f"# Benchmark: {summary['data']}, protocol {summary['protocol']}",
        "",
        f"{protocol_note}; mean ± std over seeds {', '.join(map(str, summary['seeds']))}, "
        f"{split}; epochs {_paper('epochs', s)}, image {s['image_size']}, "
        f"nz {_paper('nz', s)}, ngf {_paper('ngf', s)}, "
        f"batch {_paper('batch_size', s)}{precision}.",
        "",
        "Methods: "
        + "; ".join(_method_line(m, summary["method_settings"][m]) for m in methods)
        + ".",
        "",
        "Data: "
        + ", ".join(f"{src} (fingerprint {fp}…)" for src, fp in sources)
        + "; "
        + _images_text(summary["images"])
        + ". "
        f"Compute, all cells: {compute} on {', '.join(summary['devices'])}.",
        "The mean row averages the classes per seed, then gives mean ± std over seeds.",
    ]
    if summary["stale_cells"]:
        lines.append(
            f"{summary['stale_cells']} cells were made by other code than the one that wrote "
            "this table (see their `code` record)."
        )
    if summary.get("missing_cells"):
        total = len(summary["methods"]) * len(summary["classes"]) * len(summary["seeds"])
        lines.append(
            f"**Incomplete: {summary['missing_cells']} of {total} cells not run yet** (—); a "
            "figure over fewer seeds says how many, and a mean row needs every class of a seed."
        )
    for metric in summary["metrics"]:
        lines += _table(summary, METRIC_TITLES[metric], metric, _cell_text)
    lines += _table(
        summary,
        f"AUROC per seed ({' / '.join(f'seed {k}' for k in summary['seeds'])})",
        "auroc",
        _seeds_text,
    )
    return "\n".join(lines) + "\n"


def _table(summary: dict[str, Any], title: str, metric: str, text: Any) -> list[str]:
    methods = summary["methods"]
    lines = ["", f"## {title}", ""]
    lines.append("| class | " + " | ".join(METHOD_TITLES[m] for m in methods) + " |")
    lines.append("|---|" + "---|" * len(methods))
    for name in [*summary["classes"], "mean"]:
        cells = [text(summary["table"][m][metric][name]) for m in methods]
        label = "**mean**" if name == "mean" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_tables(folder: Path, summary: dict[str, Any]) -> None:
    """results.md, results.csv, results.json and results.png in `folder`."""

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6f}"

    atomic_write_text(folder / "results.md", markdown(summary))
    atomic_write_text(folder / "results.json", json.dumps(summary, indent=1) + "\n")
    seeds = [f"seed{k}" for k in summary["seeds"]]
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["method", "metric", "class", "mean", "std", "min", "max", "n_seeds", *seeds]
        )
        for method in summary["methods"]:
            for metric in summary["metrics"]:
                for name, stats in summary["table"][method][metric].items():
                    writer.writerow([
                        method, metric, name, number(stats["mean"]), number(stats["std"]),
                        number(stats["min"]), number(stats["max"]), stats["n"],
                        *(number(v) for v in stats["values"]),
                    ])  # fmt: skip
    bar_chart(summary, folder / "results.png")


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


def _folder(value: str, flag: str, marker: str) -> Path:
    """A benchmark folder: new, empty, or one this command made (it holds `marker`)."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {value}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise ConfigError(f"{flag} {value}: holds files but is not a benchmark folder")
    return path


def grid_from_args(args: argparse.Namespace) -> Grid:
    """The benchmark the command line asks for; ConfigError on a bad flag."""
    from ganomaly.cli import build_config

    given = vars(args)
    if "model" in given:
        raise ConfigError("--model: the benchmark's --methods choose the models")
    if "val_dir" in given:
        raise ConfigError("--val-dir: benchmark cells are keyed on the test data alone")
    if args.pair_split_seed and "split_seed" in given:
        raise ConfigError("--pair-split-seed sets each cell's split seed to its seed: drop it")
    base = build_config(args)
    base.data = choose_data(base).data  # without --data: what --data-dir holds, else mnist
    base.protocol = resolve_protocol(base)
    # The precision a cell really trains in (auto resolves per device): tables and cell keys
    # name fp32 or bf16, never "auto".
    from ganomaly.detector import resolve_device
    from ganomaly.hardware import resolve_precision

    base.precision = resolve_precision(base.precision, resolve_device(base.device))
    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods {args.methods!r}: choose from {', '.join(METHODS)}")
    if args.classes:
        classes = parse_classes(args.classes, base.protocol)
    elif base.protocol == "mvtec":
        from ganomaly.data.folders import mvtec_categories

        classes = mvtec_categories(base.data_dir)
    elif base.protocol == "folder":
        classes = [Path(base.data_dir or ".").name]
    else:
        raise ConfigError("--classes is required, e.g. --classes 0-9")
    if args.tables_only:
        if args.rerun_stale:
            raise ConfigError("--tables-only runs nothing: drop --rerun-stale")
        if not (args.results or base.out):
            raise ConfigError("--tables-only: give --results, the folder that holds the cells")
    elif not base.out:
        raise ConfigError("--out is required: the folder for run directories (re-use to resume)")
    results = _folder(str(args.results or base.out), "--results", "cells")
    out = _folder(base.out, "--out", "benchmark.yaml") if base.out else results
    return Grid(
        base, classes, parse_seeds(args.seeds), methods, out, results,
        pair_split_seed=args.pair_split_seed, rerun_stale=args.rerun_stale,
        tables_only=args.tables_only,
    )  # fmt: skip


def cmd_benchmark(args: argparse.Namespace) -> int:
    """The `ganomaly benchmark` handler."""
    import yaml

    from ganomaly.run import say

    grid = grid_from_args(args)
    if not grid.tables_only:
        grid.out.mkdir(parents=True, exist_ok=True)
        (grid.results / "cells").mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in dataclasses.asdict(grid.base).items() if k != "overwrite"}
        (grid.out / "benchmark.yaml").write_text(
            yaml.safe_dump(
                {"classes": grid.classes, "seeds": grid.seeds, "methods": grid.methods,
                 "results": str(grid.results), "pair_split_seed": grid.pair_split_seed,
                 **settings},
                sort_keys=False,
            )
        )  # fmt: skip
    started = time.perf_counter()
    summary = run_benchmark(grid)
    say(f"benchmark took {time.perf_counter() - started:.0f} s; wrote {grid.results}/results.md")
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
        "--methods", metavar="LIST", default=",".join(DEFAULT_METHODS),
        help=f"methods to run, of {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})",
    )  # fmt: skip
    parser.add_argument(
        "--results", metavar="DIR",
        help="folder for the finished cells (small JSON, meant to be committed) and the tables "
        "(default: --out); cells found there are re-used, never run again",
    )  # fmt: skip
    parser.add_argument(
        "--pair-split-seed", action="store_true",
        help="each cell's split seed = its seed, as the reference's --manualseed sets both "
        "(default: every seed shares --split-seed)",
    )  # fmt: skip
    parser.add_argument(
        "--rerun-stale", action="store_true",
        help="run again the cells made by other code (default: re-use them, with a warning)",
    )  # fmt: skip
    parser.add_argument(
        "--tables-only", action="store_true",
        help="run nothing: write the tables from the cells already in --results, the cells "
        "not run yet shown as missing (a grid that is still running, or split over machines)",
    )  # fmt: skip
    add_config_flags(parser, RunConfig)
    parser.set_defaults(handler=cmd_benchmark)
