"""`model.pt`: the inference file. A plain dict of tensors, numbers and strings, so it loads
with `torch.load(path, weights_only=True)` and can never run code when opened.

    {"format": "ganomaly-model", "format_version": 1, "config": {...}, "generator": state_dict,
     "image_size": [H, W], "channels": C, "interpolation": "bilinear", "bn_mode": "eval",
     "score_metric": "l2", "threshold": t, "val_median": m, "n_val": n,
     "threshold_quantile": q, "map_sigma": s, "versions": {...}, "card": {...}}
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "ganomaly-model"
FORMAT_VERSION = 1
REQUIRED = {
    "format": str, "format_version": int, "config": dict, "generator": dict,
    "image_size": list, "channels": int, "interpolation": str, "bn_mode": str,
    "score_metric": str, "threshold": float, "val_median": float, "n_val": int,
    "map_sigma": float, "versions": dict,
}  # fmt: skip


class ModelFileError(ValueError):
    """A model file is missing, not ours, damaged, or from a newer version."""


def plain(value: Any) -> Any:
    """JSON-able data as plain Python types (numpy scalars -> float/int), so that
    weights_only loading accepts it."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`:
    a crash at any moment leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def safe_load(path: Path, what: str = "model file") -> dict[str, Any]:
    """torch.load with weights_only=True; every failure becomes a one-line ModelFileError."""
    if not path.is_file():
        raise ModelFileError(f"{path}: no such {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unpickling failed"
        raise ModelFileError(
            f"{path}: refused to load, not a plain {what} ({first[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise ModelFileError(f"{path}: not a readable {what} ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: not a ganomaly {what}")
    return obj


def load_model_file(path: Path) -> dict[str, Any]:
    """Load and validate a model.pt; the generator's shapes are checked by the caller."""
    obj = safe_load(path)
    if obj.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a ganomaly model file")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this ganomaly "
            f"understands ({FORMAT_VERSION}); upgrade ganomaly"
        )
    for key, kind in REQUIRED.items():
        value = obj.get(key)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            raise ModelFileError(f"{path}: damaged model file (field {key!r} missing or invalid)")
    if not all(isinstance(v, torch.Tensor) for v in obj["generator"].values()):
        raise ModelFileError(f"{path}: damaged model file (generator weights are not tensors)")
    return obj
