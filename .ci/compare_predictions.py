"""Compare the CSV of `ganomaly-onnx predict` (no torch) with the CSV of `ganomaly predict`.

    python .ci/compare_predictions.py ONNX.csv TORCH.csv BAD_FILE...

Checks: the ONNX CSV has exactly the columns path,score,normalized_score,is_anomaly,error; both
score the same files in the same order; scores agree within 1e-4 relative, normalized scores
within 1e-4 (in units of threshold - median) and the verdicts are equal; every BAD_FILE has a
row with an error and no score in the ONNX CSV (and in the torch CSV, when it has an error
column). Exit 0 when all hold, else 1 with one line per problem. Standard library only.
"""

from __future__ import annotations

import csv
import math
import sys

COLUMNS = ["path", "score", "normalized_score", "is_anomaly", "error"]
RELATIVE = 1e-4


def read(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def scored(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row.get("score", "") != ""]


def main(onnx_csv: str, torch_csv: str, bad_files: list[str]) -> int:
    problems = []
    onnx_columns, onnx_rows = read(onnx_csv)
    torch_columns, torch_rows = read(torch_csv)
    if onnx_columns != COLUMNS:
        problems.append(f"{onnx_csv}: columns {onnx_columns}, expected {COLUMNS}")
    onnx_scored, torch_scored = scored(onnx_rows), scored(torch_rows)
    onnx_paths = [row["path"] for row in onnx_scored]
    torch_paths = [row["path"] for row in torch_scored]
    if onnx_paths != torch_paths:
        problems.append(f"scored paths differ: onnx {onnx_paths} vs torch {torch_paths}")
    for mine, theirs in zip(onnx_scored, torch_scored, strict=False):
        path = mine["path"]
        score, reference = float(mine["score"]), float(theirs["score"])
        if not math.isclose(score, reference, rel_tol=RELATIVE, abs_tol=0.0):
            problems.append(f"{path}: score {score:.9g} vs {reference:.9g}")
        normalized, reference = float(mine["normalized_score"]), float(theirs["normalized_score"])
        if abs(normalized - reference) > RELATIVE * max(1.0, abs(reference)):
            problems.append(f"{path}: normalized_score {normalized:.9g} vs {reference:.9g}")
        if mine["is_anomaly"] != theirs["is_anomaly"]:
            problems.append(f"{path}: is_anomaly {mine['is_anomaly']} vs {theirs['is_anomaly']}")
    if not onnx_scored:
        problems.append(f"{onnx_csv}: no scored rows")
    for bad in bad_files:
        for name, columns, rows in (
            (onnx_csv, onnx_columns, onnx_rows),
            (torch_csv, torch_columns, torch_rows),
        ):
            if "error" not in columns:
                print(f"note: {name} has no error column: its bad-file rows are not checked")
                continue
            row = next((r for r in rows if r["path"] == bad), None)
            if row is None or not row["error"] or row["score"]:
                problems.append(f"{name}: {bad} should have a row with an error and no score")
    for problem in problems:
        print(f"compare_predictions: {problem}")
    if not problems:
        print(
            f"compare_predictions: {len(onnx_scored)} files agree (scores within {RELATIVE:g} "
            f"relative), {len(bad_files)} bad file(s) reported with an error"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
