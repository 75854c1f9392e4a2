"""Per-file results as the prediction faces write them: one record per input, the CSV and JSON
layouts and the terminal table. Standard library and numpy only, so the ONNX runtime writes
exactly the same files as `ganomaly predict` without torch.

CSV columns, one row per input in input order (a folder stands for its image files, sorted):

    path,score,normalized_score,is_anomaly,error

`score` and `normalized_score` are written with `%.9g`, `is_anomaly` as 0 or 1, `error` is empty
for a scored file; a file that could not be scored has empty score fields and the reason in
`error`.
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

    @property
    def ok(self) -> bool:
        """True when the file was scored."""
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        """The JSON record: path, score, normalized_score, is_anomaly, error (None when fine)."""
        return {
            "path": self.path,
            "score": self.score,
            "normalized_score": self.normalized_score,
            "is_anomaly": self.is_anomaly,
            "error": self.error,
        }


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
    """Write `CSV_COLUMNS`, one row per result, to a file or to stdout (`-`)."""
    handle = sys.stdout if target == "-" else open(target, "w", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(_csv_row(result) for result in results)
    finally:
        if handle is not sys.stdout:
            handle.close()


def write_json(target: str, results: Sequence[FileResult], threshold: float) -> None:
    """{"threshold": t, "results": [FileResult.as_dict(), ...]} to a file or stdout (`-`)."""
    records = [result.as_dict() for result in results]
    text = json.dumps({"threshold": threshold, "results": records}, indent=1)
    if target == "-":
        print(text)
    else:
        Path(target).write_text(text + "\n")


def format_table(results: Sequence[FileResult], threshold: float) -> str:
    """The scored files as a plain-text table for the terminal (failures go to stderr)."""
    scored = [r for r in results if r.ok]
    width = max([len("path"), *(len(r.path) for r in scored)])
    lines = [f"{'path':<{width}}  {'score':>11}  {'normalized':>10}  verdict"]
    for r in scored:
        verdict = "ANOMALY" if r.is_anomaly else "normal"
        lines.append(f"{r.path:<{width}}  {r.score:>11.6g}  {r.normalized_score:>10.3f}  {verdict}")
    n_anomalies = sum(bool(r.is_anomaly) for r in scored)
    lines.append(
        f"{len(scored)} images, {n_anomalies} anomalies (score > threshold {threshold:.6g})"
    )
    return "\n".join(lines)
