"""A textured anomaly-detection set with drawn defects and their masks, in the MVTec AD layout,
built deterministically from the two photographs that ship with scikit-learn
(`sklearn.datasets.load_sample_images`) and one procedural texture.

    python benchmarks/textured.py --out data/textured-64 --size 64
    ganomaly benchmark --data mvtec --data-dir data/textured-64 --image-size 64 \\
        --methods ganomaly,skip-ganomaly,autoencoder,raw-pixel ...

Categories (one MVTec-style category folder each):
    foliage  crops of the trees in china.jpg (two regions), flipped left-right at random
    petals   crops of the dahlia in flower.jpg, flipped and turned at random
    tiles    crops of the bottom roof's tiles in china.jpg: a strip 29 px high, so every crop is
             upsampled (2.2x at 64, 4.4x at 128); never flipped, the tiles' slant is the texture
    weave    procedural: a plain weave of noisy threads (seeded thread width, phase, shading)

Photo crops have a random side (0.85-1.15 of the output size where the region allows) at a
random place, resized to the output size with Lanczos. Train and test crops come from the same
regions, as an MVTec texture's train and test images show the same material, so they overlap.

Defects, drawn on clean crops of their own (`test/<defect>/NNN.png`, mask
`ground_truth/<defect>/NNN_mask.png`, 255 = defect). Every changed pixel is inside the mask,
and (nearly) every mask pixel is changed:
    scratch  a thin curved line (1 px at 64, 2 px at 128), very light or very dark
    hole     a dark ellipse, darkest at its centre
    patch    a square of another category's texture pasted in (a foreign patch)

Per category: `train/good` (normal), `test/good`, and `test/<defect>` for each defect. Every
image is a function of (category, part, index, size) alone: building twice gives the same
pixels, and a larger set extends a smaller one.
"""

from __future__ import annotations

import argparse
import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ("foliage", "petals", "tiles", "weave")
DEFECTS = ("scratch", "hole", "patch")
SEED = 20190118  # Skip-GANomaly's arXiv date; any fixed number would do

# Photo regions (x0, y0, x1, y1) in the photograph's pixels, chosen by eye to hold only the
# texture; and the crop side in those pixels as a share of the output size.
PHOTO_REGIONS = {
    "foliage": ("china.jpg", ((420, 310, 640, 427), (0, 345, 185, 427))),
    "petals": ("flower.jpg", ((205, 125, 405, 325),)),
    "tiles": ("china.jpg", ((215, 358, 295, 387),)),
}
CROP_SHARE = (0.85, 1.15)


@dataclass(frozen=True)
class Counts:
    """Images per category: normal training images, normal test images, images per defect."""

    train: int = 640  # 576 after the 10% validation hold-out: 9 steps of 64 per epoch
    good: int = 60
    per_defect: int = 20


def rng_for(category: str, part: str, index: int, size: int) -> np.random.Generator:
    """The random stream of one image: a function of its name alone (crc32 is stable across
    runs and platforms, unlike Python's str hash)."""
    return np.random.default_rng(
        [SEED, zlib.crc32(category.encode()), zlib.crc32(part.encode()), index, size]
    )


@functools.cache
def photograph(name: str) -> Image.Image:
    """One of scikit-learn's sample photographs, as an RGB image."""
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


def photo_crop(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a category's photo regions, resized to size x size; (H, W, 3) uint8."""
    name, regions = PHOTO_REGIONS[category]
    wanted = int(round(size * rng.uniform(*CROP_SHARE)))
    largest = max(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in regions)
    side = min(wanted, largest)
    fitting = [r for r in regions if min(r[2] - r[0], r[3] - r[1]) >= side]
    areas = np.array([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in fitting], dtype=np.float64)
    x0, y0, x1, y1 = fitting[int(rng.choice(len(fitting), p=areas / areas.sum()))]
    left = int(rng.integers(x0, x1 - side + 1))
    top = int(rng.integers(y0, y1 - side + 1))
    crop = photograph(name).crop((left, top, left + side, top + side))
    crop = crop.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(crop)
    if category != "tiles" and rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    if category == "petals":
        pixels = np.rot90(pixels, int(rng.integers(4)))
    return np.ascontiguousarray(pixels)


def weave(size: int, rng: np.random.Generator) -> np.ndarray:
    """A plain weave: where (row cell + column cell) is even the vertical thread lies on top,
    else the horizontal one; each thread is rounded across its width and has its own
    brightness; fine noise on top. (H, W, 3) uint8."""
    thread = size / 10 * rng.uniform(0.95, 1.05)  # thread width in pixels
    offset_y, offset_x = rng.uniform(0, 2 * thread, size=2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    row, col = (y + offset_y) / thread, (x + offset_x) / thread
    row_cell, col_cell = np.floor(row).astype(int), np.floor(col).astype(int)
    n = size // 4 + 4
    vertical_shade = rng.uniform(0.85, 1.15, n)  # per vertical thread
    horizontal_shade = rng.uniform(0.75, 1.05, n)  # per horizontal thread (a darker weft)
    vertical_on_top = (row_cell + col_cell) % 2 == 0
    across = np.where(vertical_on_top, col - col_cell, row - row_cell)  # 0..1 across a thread
    profile = 0.55 + 0.45 * np.sin(np.pi * across)  # rounded: dark at a thread's edges
    shade = np.where(vertical_on_top, vertical_shade[col_cell % n], horizontal_shade[row_cell % n])
    value = profile * shade + rng.normal(0, 0.04, (size, size))
    colour = np.array([205.0, 180.0, 140.0])  # unbleached linen
    return np.clip(value[..., None] * colour, 0, 255).round().astype(np.uint8)


def texture(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A normal image of a category; (size, size, 3) uint8."""
    if category == "weave":
        return weave(size, rng)
    return photo_crop(category, size, rng)


def clean_image(category: str, size: int, part: str, index: int) -> np.ndarray:
    """The normal image `index` of `part` (train, good, or a defect's clean original)."""
    return texture(category, size, rng_for(category, part, index, size))


def _scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    while True:  # a chord of at least 0.3 of the side, so the scratch is never a dot
        start, end = rng.uniform(0.15 * size, 0.85 * size, size=(2, 2))
        if np.hypot(*(end - start)) >= 0.3 * size:
            break
    bend = (start + end) / 2 + rng.normal(0, 0.12 * size, 2)
    t = np.linspace(0, 1, 40)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier
    canvas = Image.new("L", (size, size), 0)
    width = max(1, round(size / 64))
    ImageDraw.Draw(canvas).line([tuple(p) for p in points], fill=255, width=width, joint="curve")
    mask = np.asarray(canvas) > 0
    light = rng.random() < 0.5
    level = rng.uniform(225, 250) if light else rng.uniform(10, 35)
    image[mask] = np.clip(level + rng.normal(0, 6, (int(mask.sum()), 3)), 0, 255).round()
    return mask


def _hole(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    a, b = rng.uniform(0.05 * size, 0.11 * size, 2)
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    radius = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the rim
    mask = radius <= 1
    depth = 12 + 28 * radius[mask] ** 2  # darkest at the centre
    image[mask] = np.clip(depth[:, None] + rng.normal(0, 3, (int(mask.sum()), 3)), 0, 255).round()
    return mask


def _patch(image: np.ndarray, rng: np.random.Generator, category: str) -> np.ndarray:
    size = image.shape[0]
    side = int(round(rng.uniform(0.18, 0.3) * size))
    top, left = rng.integers(0, size - side + 1, 2)
    foreign = CATEGORIES[(CATEGORIES.index(category) + 1) % len(CATEGORIES)]
    image[top : top + side, left : left + side] = texture(foreign, side, rng)
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def defect_sample(
    category: str, size: int, defect: str, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean, defective, mask) of test image `index` of a defect; mask (H, W) bool."""
    clean = clean_image(category, size, defect, index)
    rng = rng_for(category, f"{defect}:draw", index, size)
    image = clean.copy()
    if defect == "scratch":
        mask = _scratch(image, rng)
    elif defect == "hole":
        mask = _hole(image, rng)
    else:
        mask = _patch(image, rng, category)
    return clean, image, mask


def build(out: Path, size: int, counts: Counts = Counts(), categories=CATEGORIES) -> Path:
    """Write the set under `out` (one folder per category); returns `out`."""
    for category in categories:
        root = out / category

        def save(pixels: np.ndarray, path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)

        for i in range(counts.train):
            save(clean_image(category, size, "train", i), root / "train" / "good" / f"{i:03d}.png")
        for i in range(counts.good):
            save(clean_image(category, size, "good", i), root / "test" / "good" / f"{i:03d}.png")
        for defect in DEFECTS:
            for i in range(counts.per_defect):
                _, image, mask = defect_sample(category, size, defect, i)
                save(image, root / "test" / defect / f"{i:03d}.png")
                save(
                    mask.astype(np.uint8) * 255,
                    root / "ground_truth" / defect / f"{i:03d}_mask.png",
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write (created)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (64 or 128)")
    parser.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated")
    parser.add_argument("--train", type=int, default=Counts.train, help="normal training images")
    parser.add_argument("--good", type=int, default=Counts.good, help="normal test images")
    parser.add_argument("--per-defect", type=int, default=Counts.per_defect, help="per defect")
    args = parser.parse_args()
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or args.size < 16:
        parser.error(f"categories: {', '.join(CATEGORIES)}; size >= 16")
    build(args.out, args.size, Counts(args.train, args.good, args.per_defect), categories)
    print(f"wrote {args.out}: {', '.join(categories)} at {args.size}x{args.size}")


if __name__ == "__main__":
    main()
