"""benchmarks/textured.py: a tiny textured set's MVTec layout, its masks against the defects
drawn, its determinism, and that `--data mvtec` reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganomaly.data.folders import load_mvtec
from tests._trained import benchmark_script

textured = benchmark_script("textured")
SIZE = 32
COUNTS = textured.Counts(train=3, good=2, per_defect=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(textured.build(tmp_path_factory.mktemp("textured") / "set", SIZE, COUNTS))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_layout_is_mvtec_ad_and_the_loader_reads_it(built):
    assert sorted(p.name for p in built.iterdir()) == sorted(textured.CATEGORIES)
    names = [f"{i:03d}.png" for i in range(COUNTS.per_defect)]
    for category in textured.CATEGORIES:
        root = built / category
        assert sorted(p.name for p in (root / "train" / "good").iterdir()) == [
            f"{i:03d}.png" for i in range(COUNTS.train)
        ]
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(
            ["good", *textured.DEFECTS]
        )
        assert len(list((root / "test" / "good").iterdir())) == COUNTS.good
        assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(textured.DEFECTS)
        for defect in textured.DEFECTS:
            assert sorted(p.name for p in (root / "test" / defect).iterdir()) == names
            masks = sorted(p.name for p in (root / "ground_truth" / defect).iterdir())
            assert masks == [n.replace(".png", "_mask.png") for n in names]
        for image in root.glob("t*/*/*.png"):
            assert Image.open(image).mode == "RGB" and Image.open(image).size == (SIZE, SIZE)
        found = load_mvtec(str(built), category)
        assert len(found.train) == COUNTS.train
        assert int(found.test_is_abnormal.sum()) == COUNTS.per_defect * len(textured.DEFECTS)
        has_mask = [m is not None for m in found.test_masks]
        assert has_mask == [bool(a) for a in found.test_is_abnormal]


def test_every_mask_is_exactly_its_drawn_defect(built):
    for category in textured.CATEGORIES:
        for defect in textured.DEFECTS:
            for i in range(COUNTS.per_defect):
                image = pixels(built / category / "test" / defect / f"{i:03d}.png")
                mask_pixels = pixels(
                    built / category / "ground_truth" / defect / f"{i:03d}_mask.png"
                )
                assert set(np.unique(mask_pixels)) == {0, 255}
                mask = mask_pixels == 255
                clean = textured.clean_image(category, SIZE, defect, i)
                changed = (image != clean).any(axis=-1)
                where = f"{category}/{defect}/{i}"
                assert not changed[~mask].any(), f"{where}: pixels changed outside the mask"
                assert changed[mask].mean() >= 0.9, f"{where}: mask pixels left unchanged"
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
                if defect == "patch":  # a filled square
                    assert mask.sum() == box and rows[-1] - rows[0] == cols[-1] - cols[0]
                if defect == "scratch":  # a thin line: a small share of its bounding box
                    assert mask.sum() < 0.5 * box and mask.mean() < 0.1


def test_the_set_is_a_function_of_its_names(built, tmp_path):
    again = Path(textured.build(tmp_path / "again", SIZE, COUNTS, categories=["weave", "tiles"]))
    for path in again.rglob("*.png"):
        np.testing.assert_array_equal(pixels(path), pixels(built / path.relative_to(again)))
    # Normal images differ from each other: every one is its own crop or weave.
    for category in textured.CATEGORIES:
        train = [pixels(p) for p in sorted((built / category / "train" / "good").iterdir())]
        assert not any(np.array_equal(train[0], other) for other in train[1:]), category
