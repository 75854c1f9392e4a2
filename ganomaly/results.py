"""Per-file results as the prediction faces write them: one record per input, the CSV and JSON
layouts and the terminal table. Standard library and numpy only, so the ONNX runtime writes
exactly the same files as `ganomaly predict` without torch.

CSV columns, one row per input in input order (a folder stands for its image files, sorted):

    path,score,normalized_score,is_anomaly,error[,map]

`score` and `normalized_score` are written with `%.9g`, `is_anomaly` as 0 or 1, `error` is empty
for a scored file; a file that could not be scored has empty score fields and the reason in
`error`. `map` (with `ganomaly predict --maps`) is the written overlay's path.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CSV_COLUMNS = ("path", "score", "normalized_score", "is_anomaly", "error")
EXIT_SOME_FAILED = 1  # some inputs could not be scored (the others were)
EXIT_ERROR = 2  # bad usage, or nothing could be scored


@dataclass
class FileResult:
    """One input: its scores, or why it could not be scored (then the score fields are None)."""

    path: str
    score: float | None = None
    normalized_score: float | None = None
    is_anomaly: bool | None = None
    error: str | None = None
    anomaly_map: np.ndarray | None = field(default=None, repr=False)  # (H, W), model resolution
    map_path: str | None = None  # where `ganomaly predict --maps` wrote the map's overlay

    @property
    def ok(self) -> bool:
        """True when the file was scored."""
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The JSON record: path, score, normalized_score, is_anomaly, error (None when fine),
        and `map` when an overlay was written."""
        record: dict[str, Any] = {
            "path": self.path,
            "score": self.score,
            "normalized_score": self.normalized_score,
            "is_anomaly": self.is_anomaly,
            "error": self.error,
        }
        if self.map_path is not None:
            record["map"] = self.map_path
        return record


def output_problem(batch_size: int, csv_target: str | None, json_target: str | None) -> str | None:
    """Why the prediction commands' output options cannot work (a one-line reason), or None:
    checked before any model is loaded."""
    if batch_size < 1:
        return "--batch-size must be >= 1"
    for option, target in (("--csv", csv_target), ("--json", json_target)):
        if target and target != "-" and Path(target).is_dir():
            return f"{option} {target}: is a directory; give a file name"
    return None


def report(
    results: Sequence[FileResult],
    threshold: float,
    csv_target: str | None,
    json_target: str | None,
    prog: str,
) -> int:
    """What the prediction commands print and write: a warning per failed input, the CSV and
    JSON files, the table (unless a file goes to stdout). Returns the exit code: 0 all scored,
    EXIT_SOME_FAILED some failed, EXIT_ERROR none could be scored (with a one-line error)."""
    failed = [r for r in results if not r.ok]
    for result in failed:
        print(f"{prog}: warning: {result.path}: {result.error}", file=sys.stderr)
    if csv_target:
        write_csv(csv_target, results)
    if json_target:
        write_json(json_target, results, threshold)
    if "-" not in (csv_target, json_target):
        print(format_table(results, threshold))
    if failed and len(failed) == len(results):
        print(f"{prog}: error: no image could be scored ({len(failed)} input(s) failed)",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    if failed:
        print(f"{prog}: {len(failed)} input(s) could not be scored", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def _csv_row(result: FileResult) -> list[str]:
    if not result.ok:
        return [result.path, "", "", "", result.error or ""]
    return [
        result.path,
        f"{result.score:.9g}",
        f"{result.normalized_score:.9g}",
        str(int(bool(result.is_anomaly))),
        "",
    ]


def write_csv(target: str, results: Sequence[FileResult]) -> None:
    """Write `CSV_COLUMNS` (and `map` when overlays were written), one row per result, to a
    file or to stdout (`-`)."""
    with_maps = any(result.map_path for result in results)
    handle = sys.stdout if target == "-" else open(target, "w", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(handle)
        writer.writerow([*CSV_COLUMNS, *(["map"] if with_maps else [])])
        for result in results:
            writer.writerow([*_csv_row(result), *([result.map_path or ""] if with_maps else [])])
    finally:
        if handle is not sys.stdout:
            handle.close()


def write_json(target: str, results: Sequence[FileResult], threshold: float) -> None:
    """{"threshold": t, "n_errors": k, "results": [FileResult.as_dict(), ...]} to a file or
    stdout (`-`)."""
    records = [result.as_dict() for result in results]
    n_errors = sum(not result.ok for result in results)
    report = {"threshold": threshold, "n_errors": n_errors, "results": records}
    text = json.dumps(report, indent=1)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")


def format_table(results: Sequence[FileResult], threshold: float) -> str:
    """Every input as a plain-text table for the terminal; a failed one shows its error."""
    width = max([len("path"), *(len(r.path) for r in results)])
    lines = [f"{'path':<{width}}  {'score':>11}  {'normalized':>10}  verdict"]
    for r in results:
        if not r.ok or r.score is None or r.normalized_score is None:
            lines.append(f"{r.path:<{width}}  {'-':>11}  {'-':>10}  error: {r.error}")
            continue
        verdict = "ANOMALY" if r.is_anomaly else "normal"
        lines.append(f"{r.path:<{width}}  {r.score:>11.6g}  {r.normalized_score:>10.3f}  {verdict}")
    scored = [r for r in results if r.ok]
    n_anomalies = sum(bool(r.is_anomaly) for r in scored)
    summary = f"{len(scored)} images, {n_anomalies} anomalies (score > threshold {threshold:.6g})"
    failed = len(results) - len(scored)
    return "\n".join([*lines, summary + (f"; {failed} could not be scored" if failed else "")])
