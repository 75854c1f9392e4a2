"""TensorBoard for a training run (`ganomaly train --tensorboard`): event files under
RUN_DIR/tensorboard/, to watch live with `tensorboard --logdir RUN_DIR/tensorboard`.

Scalar tags are history.csv's column names:

    step/<loss>      every training step: the model's five losses (GANomaly l_enc, l_con,
                     l_adv, l_g, l_d; Skip-GANomaly l_lat for l_enc); x = global step
    epoch/<column>   every epoch: each history.csv column (the losses' epoch means, d_reinits,
                     val_score_median, val_score_q99, seconds, images_per_second); x = epoch

and one image per epoch, `restoration`: validation images x (top row), their reconstructions
x_hat and |x - x_hat| on the fixed 0..1 heat scale of figures/restoration.png.

The writer is `torch.utils.tensorboard.SummaryWriter`, which needs the `tensorboard` package
(`pip install 'ganomaly[tensorboard]'`); nothing imports this module unless asked to.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ganomaly.config import ConfigError, RunConfig
from ganomaly.detector import load_images, validation_split
from ganomaly.images import to_display
from ganomaly.scoring import batch_statistics, make_scorer
from ganomaly.training import TrainState, history_columns

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

GRID_IMAGES = 8  # validation images in the restoration grid
GRID_MIN_SIDE = 64  # small images are enlarged (whole pixels) to at least this many pixels
MISSING = (
    "--tensorboard needs the tensorboard package: pip install 'ganomaly[tensorboard]' "
    "(or pip install tensorboard)"
)


def require_tensorboard() -> type[SummaryWriter]:
    """torch's SummaryWriter class; ConfigError with the install command when the
    `tensorboard` package is missing (checked before a run writes anything)."""
    try:
        import tensorboard  # noqa: F401  (torch's module may already be imported without it)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(MISSING) from None
    return SummaryWriter


def validation_sample(train: Any, config: RunConfig, channels: int) -> Tensor:
    """The first GRID_IMAGES of the validation images `fit` holds out of `train` (the same
    seeded split), preprocessed as the model sees them."""
    _, val_index = validation_split(len(train), config.val_fraction, config.split_seed)
    picks = val_index[:GRID_IMAGES]
    subset = [train[i] for i in picks] if isinstance(train, list) else train[picks]
    return load_images(subset, config.image_hw(), channels, config.interpolation, config.max_pixels)


def restoration_grid(x: Tensor, x_hat: Tensor) -> np.ndarray:
    """Rows x, x_hat and the heat map of mean |x - x_hat| (colormap "hot", 0..1, as the run's
    restoration figure) for model-space images (n, C, H, W) -> float (3, height, width)."""
    from matplotlib import colormaps

    x_shown, x_hat_shown = to_display(x), to_display(x_hat)  # (n, C, H, W) in [0, 1]
    diff = np.abs(x_shown - x_hat_shown).mean(axis=1)  # (n, H, W)
    heat = colormaps["hot"](diff)[..., :3].transpose(0, 3, 1, 2)  # (n, 3, H, W)
    rows = [np.broadcast_to(x_shown, heat.shape), np.broadcast_to(x_hat_shown, heat.shape), heat]
    n, _, h, w = heat.shape
    scale = max(1, math.ceil(GRID_MIN_SIDE / min(h, w)))
    pad = 2
    grid = np.zeros((3, pad + 3 * (h * scale + pad), pad + n * (w * scale + pad)), np.float32)
    for r, row in enumerate(rows):
        for j in range(n):
            image = row[j].repeat(scale, axis=1).repeat(scale, axis=2)
            top, left = pad + r * (h * scale + pad), pad + j * (w * scale + pad)
            grid[:, top : top + h * scale, left : left + w * scale] = image
    return grid


class TrainingBoard:
    """Writes one training run's scalars and restoration grids (see the module docstring).

    Example:
        >>> board = TrainingBoard(run_dir / "tensorboard", val_images)   # doctest: +SKIP
        >>> detector.fit(X, on_epoch=board.log_epoch, on_losses=board.log_losses)
    """

    def __init__(self, log_dir: Path, val_images: Tensor) -> None:
        self.writer = require_tensorboard()(log_dir=str(log_dir))
        self.val_images = val_images

    def log_losses(self, global_step: int, losses: dict[str, float]) -> None:
        """One training step's losses as step/<loss> scalars."""
        for name, value in losses.items():
            self.writer.add_scalar(f"step/{name}", value, global_step)

    def log_epoch(self, state: TrainState) -> None:
        """The finished epoch's history row as epoch/<column> scalars and its restoration
        grid; nothing at mid-epoch checkpoints (state.step > 0), whose rows are not done."""
        if state.step or not state.history:
            return
        row = state.history[-1]
        epoch = int(row["epoch"])
        for column in history_columns(state.config)[1:]:
            self.writer.add_scalar(f"epoch/{column}", row[column], epoch)
        x = self.val_images.to(next(state.generator.parameters()).device)
        self.writer.add_image("restoration", restoration_grid(x, reconstruct(state, x)), epoch)
        self.writer.flush()  # an epoch is worth showing at once, not after the writer's 2 min

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


@torch.no_grad()
def reconstruct(state: TrainState, x: Tensor) -> Tensor:
    """x_hat of the networks in training, scored as the model will be (the configured
    BatchNorm mode); the networks' train/eval modes are restored after."""
    modes = state.generator.training, state.discriminator.training
    scorer = make_scorer(state.config, state.generator, state.discriminator, 1.0, 0.0)
    scorer.eval()
    batch = state.config.bn_mode == "batch"
    try:
        with batch_statistics(scorer) if batch else contextlib.nullcontext():
            return scorer.reconstruct(x).float()
    finally:
        state.generator.train(modes[0])
        state.discriminator.train(modes[1])
