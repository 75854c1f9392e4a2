"""Your own images, end to end, offline: a folder of good parts -> a detector that finds and
locates the bad ones, scores new parts, and runs as ONNX.

The photographs are the two that ship inside scikit-learn (`load_sample_images()`, 427 x 640),
so nothing is downloaded. 32 x 32 crops of the tree canopy in front of the lake in china.jpg
are the "good parts"; the same kind of crop with a drawn defect is a bad part:

    scratch   thin light lines
    hole      dark blobs
    patch     a foreign square of petals cut from the other photograph (flower.jpg)

Training crops come from the left of the canopy; every test crop comes from its right part,
never seen in training. The dataset is written in the `folder` layout:

    WORKDIR/parts/train/*.png                          good parts only
    WORKDIR/parts/test/good/*.png                      good, held out
    WORKDIR/parts/test/<defect>/*.png                  bad
    WORKDIR/parts/ground_truth/<defect>/<name>_mask.png  where the defect is (white)

then the `ganomaly` command trains, evaluates, scores new crops, exports to ONNX and scores
them again with the exported model (onnxruntime, no PyTorch):

    python examples/own_data/walkthrough.py                     # a few minutes on a CPU
    python examples/own_data/walkthrough.py --quick             # tiny settings, seconds
    python examples/own_data/walkthrough.py --tensorboard       # also watch it in TensorBoard
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

CROP = 32  # crop side in photo pixels (the model's input size: no resizing)
# The canopy in china.jpg, as (left, top, right, bottom) in pixels: its left part trains,
# its right part is held out for the test crops.
TRAIN_REGION = (372, 332, 490, 427)
TEST_REGION = (490, 305, 560, 427)
PETALS = (200, 120, 420, 340)  # the dahlia in flower.jpg: the foreign material of `patch`
DEFECTS = ("scratch", "hole", "patch")
# Model and training settings of the `train` step (flags of `ganomaly train`).
SETTINGS = ["--image-size", str(CROP), "--epochs", "15", "--seed", "0"]
QUICK_SETTINGS = ["--image-size", "16", "--ngf", "8", "--nz", "16", "--epochs", "1", "--seed", "0"]


def crops(photo: np.ndarray, region: tuple[int, int, int, int], stride: int) -> list[np.ndarray]:
    """Every CROP x CROP window of `region` whose corner lies on a `stride` grid."""
    left, top, right, bottom = region
    return [
        photo[y : y + CROP, x : x + CROP]
        for y in range(top, bottom - CROP + 1, stride)
        for x in range(left, right - CROP + 1, stride)
    ]


def draw_defect(
    crop: np.ndarray, kind: str, petals: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of `crop` with one defect of `kind` drawn on it, and its mask (uint8 0/255)."""
    image = Image.fromarray(crop)
    mask = Image.new("L", image.size, 0)
    paint, mark = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    if kind == "scratch":  # one or two thin light lines, as a scratch catches the light
        for _ in range(rng.integers(1, 3)):
            x0, y0 = rng.uniform(4, CROP - 4, size=2)
            angle, length = rng.uniform(0, np.pi), rng.uniform(10, 22)
            end = (x0 + length * np.cos(angle), y0 + length * np.sin(angle))
            light = tuple(int(v) for v in rng.integers(200, 250, size=3))
            paint.line([(x0, y0), end], fill=light, width=2)
            mark.line([(x0, y0), end], fill=255, width=2)
    elif kind == "hole":  # a dark blob
        cx, cy = rng.uniform(8, CROP - 8, size=2)
        rx, ry = rng.uniform(3, 6, size=2)
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        paint.ellipse(box, fill=tuple(int(v) for v in rng.integers(5, 30, size=3)))
        mark.ellipse(box, fill=255)
    else:  # patch: a square of foreign material
        side = int(rng.integers(7, 13))
        x, y = (int(v) for v in rng.integers(2, CROP - side - 2, size=2))
        px, py = (int(v) for v in rng.integers(0, len(petals) - side, size=2))
        image.paste(Image.fromarray(petals[py : py + side, px : px + side]), (x, y))
        mark.rectangle([x, y, x + side - 1, y + side - 1], fill=255)
    return np.asarray(image), np.asarray(mask)


def build_dataset(root: Path, new_parts: Path, quick: bool) -> dict[str, int]:
    """Write the folder dataset under `root` and a few new crops to score under `new_parts`;
    returns the number of images per folder."""
    china, flower = load_sample_images().images
    petals = flower[PETALS[1] : PETALS[3], PETALS[0] : PETALS[2]]
    rng = np.random.default_rng(0)
    train = crops(china, TRAIN_REGION, 9 if quick else 3)
    train += [c[:, ::-1] for c in train]  # mirrored canopy is still canopy
    test = crops(china, TEST_REGION, 16 if quick else 8)
    counts = {"train": save_all(root / "train", train)}
    counts["test/good"] = save_all(root / "test" / "good", test)
    per_defect = max(2, len(test) // 2)
    for kind in DEFECTS:
        picks = rng.choice(len(test), size=per_defect, replace=False)
        drawn = [draw_defect(test[i], kind, petals, rng) for i in picks]
        counts[f"test/{kind}"] = save_all(root / "test" / kind, [image for image, _ in drawn])
        save_all(root / "ground_truth" / kind, [mask for _, mask in drawn], suffix="_mask")
    # New parts, as if photographed tomorrow: windows between the test grid's positions.
    left, top = TEST_REGION[0] + 4, TEST_REGION[1] + 4
    fresh = [china[top + dy : top + dy + CROP, left + dx : left + dx + CROP] for dx, dy in
             ((0, 8), (24, 56), (32, 32), (8, 80))]  # fmt: skip
    named = {
        "good_1.png": fresh[0],
        "good_2.png": fresh[1],
        "scratched.png": draw_defect(fresh[2], "scratch", petals, rng)[0],
        "patched.png": draw_defect(fresh[3], "patch", petals, rng)[0],
    }
    new_parts.mkdir(parents=True)
    for name, image in named.items():
        Image.fromarray(image).save(new_parts / name)
    return counts


def save_all(folder: Path, images: list[np.ndarray], suffix: str = "") -> int:
    """images as folder/000<suffix>.png, 001<suffix>.png, ...; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{i:03d}{suffix}.png")
    return len(images)


def run(shown: str, *args: str) -> None:
    """Run a command of this package as a user would type it (shown with `$`), stopping the
    walk-through if it fails."""
    module = {"ganomaly": "ganomaly", "ganomaly-onnx": "ganomaly.onnx_runtime"}[shown]
    print(f"\n$ {shown} {shlex.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", module, *args])
    if result.returncode != 0:
        sys.exit(f"walkthrough: `{shown} {args[0]}` failed (exit {result.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path("own-data-walkthrough"),
        help="a new directory for the dataset, the run and the exports "
        "(default: ./own-data-walkthrough)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument(
        "--tensorboard", action="store_true", help="also write TensorBoard event files"
    )
    args = parser.parse_args()
    work: Path = args.workdir
    if work.exists() and any(work.iterdir()):
        parser.error(f"--workdir {work}: already holds files; remove it or choose another")
    data, new_parts, run_dir = work / "parts", work / "new_parts", work / "run"

    counts = build_dataset(data, new_parts, args.quick)
    print(f"dataset {data}: " + ", ".join(f"{n} {folder}" for folder, n in counts.items()))
    print(f"new parts to score: {', '.join(sorted(p.name for p in new_parts.iterdir()))}")

    settings = QUICK_SETTINGS if args.quick else SETTINGS
    train = ["train", "--data", "folder", "--data-dir", str(data), "--out", str(run_dir)]
    run("ganomaly", *train, *settings, "--no-progress", *(["--tensorboard"] * args.tensorboard))
    run("ganomaly", "evaluate", str(run_dir))
    predictions = str(work / "predictions.csv")
    run("ganomaly", "predict", str(run_dir), str(new_parts), "--csv", predictions, "--no-progress")
    onnx = work / "model.onnx"
    run("ganomaly", "export", str(run_dir), "--out", str(onnx))
    run("ganomaly-onnx", "predict", str(onnx), str(new_parts))

    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(
        f"\nimage AUROC {metrics['auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f} "
        f"on {metrics['n_test']} held-out crops ({metrics['n_test_abnormal']} with defects)"
    )
    print(f"report:       {run_dir / 'report.html'}")
    print(f"localization: {run_dir / 'figures' / 'localization.png'}")
    if args.tensorboard:
        print(f"tensorboard:  tensorboard --logdir {run_dir / 'tensorboard'}")


if __name__ == "__main__":
    main()
