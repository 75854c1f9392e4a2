"""fp32 against bf16 training: the AUROC parity table of docs/performance.md, made from the
benchmark cells under docs/results/ (each a `ganomaly benchmark` result; see that page for the
commands that made them).

Rows pair the cells of one dataset, protocol and class, over the seeds run in both precisions;
the seed spread is max - min of fp32's AUROC over those seeds. A row passes when
|mean bf16 - mean fp32| is within that spread, or within 0.01 where a row has one seed (the
rule `--precision auto` is held to).

    python benchmarks/precision_parity.py docs/results/precision docs/results/mnist-paper-15
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ONE_SEED_TOLERANCE = 0.01


def read_cells(folders: list[Path]) -> dict[tuple[str, str, str], dict[str, dict[int, float]]]:
    """{(data, protocol, class): {precision: {seed: auroc}}} of every GANomaly cell found."""
    rows: dict[tuple[str, str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for folder in folders:
        for path in sorted(folder.glob("**/cells/ganomaly/*/*.json")):
            cell = json.loads(path.read_text())
            settings = cell["settings"]
            row = (cell["data"]["name"], settings["protocol"], str(cell["class"]))
            rows[row][settings["precision"]][int(cell["seed"])] = cell["metrics"]["auroc"]
    return rows


def table(rows: dict[tuple[str, str, str], dict[str, dict[int, float]]]) -> str:
    """The markdown table: per row each precision's AUROC per seed, mean and spread."""
    lines = [
        "| data | protocol | class | fp32 AUROC (seeds) | bf16 AUROC (seeds) | Δ mean | "
        "fp32 spread | parity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (data, protocol, name), by_precision in sorted(rows.items()):
        fp32, bf16 = by_precision.get("fp32", {}), by_precision.get("bf16", {})

        def seeds(aurocs: dict[int, float]) -> str:
            return " / ".join(f"{aurocs[s]:.4f}" for s in sorted(aurocs)) or "not run"

        verdict, delta, spread = "not yet", "", ""
        common = sorted(set(fp32) & set(bf16))  # seeds run in both precisions
        if common:
            ours, theirs = [fp32[s] for s in common], [bf16[s] for s in common]
            gap = statistics.mean(theirs) - statistics.mean(ours)
            width = max(ours) - min(ours)
            allowed = width if len(common) > 1 else ONE_SEED_TOLERANCE
            verdict = "yes" if abs(gap) <= allowed else "**no**"
            delta, spread = f"{gap:+.4f}", f"{width:.4f}" if len(common) > 1 else "(1 seed)"
        lines.append(
            f"| {data} | {protocol} | {name} | {seeds(fp32)} | {seeds(bf16)} | {delta} | "
            f"{spread} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="benchmark --results folders")
    print(table(read_cells(parser.parse_args().folders)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
