"""`model.pt`: the inference file. A plain dict of tensors, numbers and strings, so it loads
with `torch.load(path, weights_only=True)` and can never run code when opened.

    {"format": "ganomaly-model", "format_version": 2, "config": {...}, "generator": state_dict,
     "image_size": [H, W], "channels": C, "interpolation": "bilinear", "bn_mode": "eval",
     "score_metric": "l2", "threshold": t, "val_median": m, "n_val": n,
     "threshold_quantile": q, "map_sigma": s, "versions": {...},
     "val_scores": tensor, "decision_scores": tensor,
     "fitted": {"threshold_from", "history", "n_train", "fit_seconds", "warnings", "annotations"},
     "card": GANomalyDetector.model_card()}

Version 2 added `val_scores`, `decision_scores` and `fitted` (so a loaded detector has every
fitted attribute a fitted one has); version 1 files still load (their `card` held the facts).
`decision_scores` are the scores of every image given to `fit`, in input order (files written
before `labels_` existed hold those of the training part only); `labels_` is derived from them
and `threshold`.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ganomaly.atomic import atomic_path
from ganomaly.images import first_line

FORMAT = "ganomaly-model"
FORMAT_VERSION = 2
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
    """torch.save through `atomic_path`: a crash at any moment leaves either the old file or
    the new one, never half of one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def safe_load(path: Path, what: str = "model file") -> dict[str, Any]:
    """torch.load with weights_only=True; every failure becomes a one-line ModelFileError.

    weights_only refuses any pickle that names a function or class outside torch's short
    list of tensor types, before calling it: a file that tries to run code runs nothing.
    """
    if not path.exists():
        raise ModelFileError(f"{path}: no such {what}")
    if not path.is_file():  # a FIFO would block torch.load forever
        raise ModelFileError(f"{path}: not a regular file, so not a {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Weights only load failed" not in text:
            raise ModelFileError(f"{path}: not a readable {what} ({first_line(error)})") from None
        named = re.search(r"GLOBAL (\S+)", text)
        asks = f" (it asks for {named.group(1)})" if named else ""
        raise ModelFileError(
            f"{path}: refused to load: not a plain {what}, it would build objects other than "
            f"tensors and numbers{asks}; nothing in it was run"
        ) from None
    except Exception as error:  # torch.load fails in many ways on damaged archives
        raise ModelFileError(f"{path}: not a readable {what} ({first_line(error)})") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: not a ganomaly {what}")
    return obj


def check_format(path: Path, obj: dict[str, Any], name: str, version: int, what: str) -> None:
    """The file's "format" is `name` and its "format_version" one this code reads."""
    if obj.get("format") != name:
        raise ModelFileError(f"{path}: not a ganomaly {what}")
    found = obj.get("format_version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise ModelFileError(f"{path}: damaged {what} (format version {found!r})")
    if found > version:
        raise ModelFileError(
            f"{path}: {what} format version {found} is newer than this ganomaly "
            f"understands ({version}); upgrade ganomaly"
        )


def load_model_file(path: Path) -> dict[str, Any]:
    """Load and validate a model.pt; the generator's shapes are checked by `build_checked`."""
    obj = safe_load(path)
    check_format(path, obj, FORMAT, FORMAT_VERSION, "model file")
    for key, kind in REQUIRED.items():
        value = obj.get(key)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if not ok or isinstance(value, bool):
            raise ModelFileError(f"{path}: damaged model file (field {key!r} missing or invalid)")
    for key in ("threshold", "val_median", "map_sigma"):
        if not math.isfinite(obj[key]):
            raise ModelFileError(f"{path}: damaged model file ({key} is {obj[key]})")
    weights = obj["generator"].values()
    if not all(isinstance(v, torch.Tensor) for v in weights):
        raise ModelFileError(f"{path}: damaged model file (generator weights are not tensors)")
    if not all(bool(torch.isfinite(v).all()) for v in weights if v.is_floating_point()):
        raise ModelFileError(f"{path}: damaged model file (non-finite generator weights)")
    return obj


NetworkT = TypeVar("NetworkT", bound=nn.Module)


def build_checked(path: Path, state: dict[str, Any], build: Callable[[], NetworkT]) -> NetworkT:
    """`build()` the network and load `state` into it, once the file is known to fit.

    The settings in a file decide the network's size, so a small hostile file could ask for
    terabytes: the network is first built on the meta device (shapes only, no memory) and its
    names and shapes compared with `state`; only then is it built for real.
    """
    try:
        with torch.device("meta"):
            skeleton = build()
    except Exception as error:  # settings that build no network (a negative size, ...)
        raise ModelFileError(
            f"{path}: damaged model file (its settings build no network: {first_line(error)})"
        ) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        names = ", ".join(
            [*(f"missing {k}" for k in missing[:2]), *(f"unexpected {k}" for k in extra[:2])]
        )
        raise ModelFileError(f"{path}: weights do not match the model ({names})")
    wrong = [k for k in expected if expected[k] != found[k]]
    if wrong:
        key = wrong[0]
        raise ModelFileError(
            f"{path}: weights do not match the model ({key} has shape {list(found[key])}, "
            f"the settings need {list(expected[key])})"
        )
    network = build()
    network.load_state_dict(state)
    return network
