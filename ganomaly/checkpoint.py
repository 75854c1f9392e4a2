"""Training checkpoints in `RUN_DIR/checkpoints/`: both networks, both optimizers, the epoch,
the D re-init count, the history and the RNG state, all as tensors and plain values so that
`torch.load(weights_only=True)` reads them. Written atomically; the newest two are kept.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch

from ganomaly.images import first_line
from ganomaly.modelfile import ModelFileError, atomic_save, check_format, safe_load
from ganomaly.training import TrainingError, TrainState

KEEP = 2
CHECKPOINT_FORMAT = "ganomaly-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_dict(state: TrainState) -> dict[str, Any]:
    """The full training state of `state` as a weights_only-loadable dict."""
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": dataclasses.asdict(state.config),
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "optimizer_g": state.optimizer_g.state_dict(),
        "optimizer_d": state.optimizer_d.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "partial": dict(state.partial),
        "d_reinits": state.d_reinits,
        "history": [dict(row) for row in state.history],
        "torch_rng": torch.get_rng_state(),
    }


def check_finite_weights(state: TrainState) -> None:
    """Refuse to checkpoint non-finite weights: an update can overflow while its loss, computed
    before the update, was still finite. The previous checkpoints stay the good ones."""
    for name, network in (("generator", state.generator), ("discriminator", state.discriminator)):
        if not all(torch.isfinite(p).all() for p in network.parameters()):
            mid_epoch = f"epoch {state.epoch + 1}, step {state.step}"
            where = mid_epoch if state.step else f"the end of epoch {state.epoch}"
            raise TrainingError(
                f"non-finite {name} weights at {where}; not checkpointed (the last good "
                "checkpoint is kept); try a lower --lr"
            )


def save_checkpoint(run_dir: Path, state: TrainState) -> Path:
    """Write checkpoints/epoch-EEEE-step-SSSSSS.pt (epochs finished, steps into the next) and
    delete all but the newest KEEP."""
    check_finite_weights(state)
    folder = run_dir / "checkpoints"
    path = folder / f"epoch-{state.epoch:04d}-step-{state.step:06d}.pt"
    atomic_save(checkpoint_dict(state), path)
    for old in list_checkpoints(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files, oldest first (zero-padded names sort by epoch, then step)."""
    return sorted((run_dir / "checkpoints").glob("epoch-*.pt"))


def load_latest_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The newest checkpoint that loads; a damaged newer one is skipped with a warning."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise ModelFileError(f"{run_dir}: no checkpoints to resume from")
    for path in reversed(candidates):
        try:
            obj = safe_load(path, "checkpoint")
            check_format(path, obj, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "checkpoint")
            return obj
        except ModelFileError as error:
            warnings.warn(f"skipping damaged checkpoint: {error}", stacklevel=2)
    raise ModelFileError(f"{run_dir}: every checkpoint is damaged; cannot resume")


def restore_state(state: TrainState, checkpoint: dict[str, Any]) -> None:
    """Load a checkpoint into freshly built networks and optimizers."""
    try:
        state.generator.load_state_dict(checkpoint["generator"])
        state.discriminator.load_state_dict(checkpoint["discriminator"])
        state.optimizer_g.load_state_dict(checkpoint["optimizer_g"])
        state.optimizer_d.load_state_dict(checkpoint["optimizer_d"])
        state.epoch = int(checkpoint["epoch"])
        state.step = int(checkpoint["step"])
        state.partial = {k: float(v) for k, v in checkpoint["partial"].items()}
        state.d_reinits = int(checkpoint["d_reinits"])
        state.history = [dict(row) for row in checkpoint["history"]]
        torch.set_rng_state(checkpoint["torch_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as error:
        raise ModelFileError(f"checkpoint does not match this run ({first_line(error)})") from None
