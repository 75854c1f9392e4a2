"""benchmarks/precision_parity.py: rows pair seeds across precisions, and the verdict follows
the seed spread (or 0.01 for one seed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests._trained import benchmark_script


def write_cell(root: Path, precision: str, name: str, seed: int, auroc: float) -> None:
    path = root / f"mnist-{precision}" / "cells" / "ganomaly" / name / f"seed{seed}-k.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {
        "class": name, "seed": seed, "data": {"name": "mnist"},
        "settings": {"protocol": "normal-class", "precision": precision},
        "metrics": {"auroc": auroc},
    }  # fmt: skip
    path.write_text(json.dumps(cell))


def test_verdicts_follow_the_fp32_seed_spread(tmp_path: Path) -> None:
    parity = benchmark_script("precision_parity")
    for seed, (fp32, bf16) in enumerate([(0.90, 0.91), (0.94, 0.93), (0.92, 0.93)]):
        write_cell(tmp_path, "fp32", "1", seed, fp32)  # spread 0.04, bf16 mean +0.0033
        write_cell(tmp_path, "bf16", "1", seed, bf16)
    write_cell(tmp_path, "fp32", "2", 0, 0.80)  # one seed: 0.02 apart is a loss
    write_cell(tmp_path, "bf16", "2", 0, 0.78)
    write_cell(tmp_path, "bf16", "2", 1, 0.99)  # no fp32 partner: left out of the means
    write_cell(tmp_path, "fp32", "3", 0, 0.70)  # bf16 not run yet
    rows = parity.table(parity.read_cells([tmp_path])).splitlines()[2:]
    assert [row.split(" | ")[-1] for row in rows] == ["yes |", "**no** |", "not yet |"]
    assert "+0.0033 | 0.0400" in rows[0]
    assert "-0.0200 | (1 seed)" in rows[1]
