"""Pixel-level evaluation: anomaly maps against ground-truth masks.

The anomaly map (channel mean of |x - x_hat|, Gaussian-smoothed, at the model's resolution;
see `ganomaly.scoring`) is compared with the masks on one evaluation grid per test set:

- a mask is read as 0/1 (any non-zero pixel is a defect); a normal test image without a mask
  file gets an all-zero mask of its own size (read from its header, nothing decoded);
- the grid is the most common mask size; a grid whose longer side is over
  `MAX_GRID_SIDE` pixels is scaled down to it, keeping the aspect ratio (MVTec AD's 1024 x 1024
  masks are evaluated at 256 x 256, as anomalib does, so the pixel sort fits in memory);
- maps are upsampled to the grid bilinearly, masks that differ from it are resized with
  nearest-neighbour sampling (so they stay 0/1);
- abnormal images without a mask (allowed in a user's folder) are left out of the pixel
  metrics; `n_pixel_images` records how many images they cover.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ganomaly.images import ImageError, load_image
from ganomaly.metrics import pixel_aupro, pixel_auroc

MAX_GRID_SIDE = 256


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise ImageError(f"{path}: not a readable image ({error})") from None
    return height, width


def evaluation_grid(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The most common (h, w), scaled down so its longer side is at most MAX_GRID_SIDE."""
    h, w = Counter(sizes).most_common(1)[0][0]
    scale = min(1.0, MAX_GRID_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def load_mask(path: Path, grid: tuple[int, int]) -> np.ndarray:
    """A mask file as bool (h, w) on `grid` (nearest-neighbour when its size differs)."""
    mask = load_image(path, 1)[0] > 0  # (H, W)
    if mask.shape != grid:
        resized = F.interpolate(
            torch.from_numpy(mask)[None, None].float(), size=grid, mode="nearest-exact"
        )
        mask = resized[0, 0].numpy() > 0.5
    return mask


def upsample_maps(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, h, w) maps -> (N, *grid), bilinear."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    if tuple(tensor.shape[-2:]) != grid:
        tensor = F.interpolate(tensor, size=grid, mode="bilinear", align_corners=False)
    return tensor[:, 0].numpy()


@dataclass
class PixelEvaluation:
    """Pixel metrics of a test split, and what the localization figure shows."""

    metrics: dict[str, Any]  # pixel_auroc, pixel_aupro, pixel_grid, n_pixel_images
    index: np.ndarray  # (M,) the test images evaluated: those with a mask, and the normals
    grid_maps: np.ndarray  # (M, *grid) their maps on the evaluation grid
    grid_masks: np.ndarray  # (M, *grid) bool, their masks (all False for normal images)


def pixel_evaluation(
    maps: np.ndarray,
    masks: list[Path | None],
    images: list[Any],
    is_abnormal: np.ndarray,
) -> PixelEvaluation | None:
    """Pixel metrics of test maps against their masks, or None when no image has a mask.

    Args:
        maps: (N, h, w) anomaly maps at the model's resolution.
        masks: per test image, its mask file or None.
        images: per test image, its file (for the size of a normal image's empty mask).
        is_abnormal: (N,) 0/1 image labels.

    Returns:
        metrics `pixel_auroc`, `pixel_aupro` (FPR <= 0.3), `pixel_grid` and `n_pixel_images`;
        the test indices used, and their maps and masks on the evaluation grid.
    """
    if not any(m is not None for m in masks):
        return None
    index = np.array(
        [i for i in range(len(masks)) if masks[i] is not None or not is_abnormal[i]], dtype=np.int64
    )
    sizes = [
        image_size(masks[i]) if masks[i] is not None else image_size(Path(images[i])) for i in index
    ]
    grid = evaluation_grid(sizes)
    grid_masks = np.zeros((len(index), *grid), dtype=bool)
    for row, i in enumerate(index):
        mask_path = masks[i]
        if mask_path is not None:
            grid_masks[row] = load_mask(mask_path, grid)
    grid_maps = upsample_maps(maps[index], grid)
    metrics: dict[str, Any] = {"pixel_auroc": None, "pixel_aupro": None}
    if grid_masks.any() and not grid_masks.all():
        metrics["pixel_auroc"] = pixel_auroc(grid_maps, grid_masks)
        metrics["pixel_aupro"] = pixel_aupro(grid_maps, grid_masks)
    metrics["pixel_grid"] = list(grid)
    metrics["n_pixel_images"] = int(len(index))
    return PixelEvaluation(metrics, index, grid_maps, grid_masks)


def figure_picks(is_abnormal: np.ndarray, per_kind: int = 3) -> np.ndarray:
    """Up to `per_kind` normal then `per_kind` abnormal positions, spread evenly."""
    picks = []
    for kind in (0, 1):
        where = np.flatnonzero(is_abnormal == kind)
        if len(where):
            count = min(per_kind, len(where))
            picks.append(where[np.linspace(0, len(where) - 1, count).astype(int)])
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
