"""scikit-learn's bundled 8x8 digits (1,797 images, 16 grey levels): always available offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganomaly.data.mnist import Source
from ganomaly.data.protocols import Labelled


def load_digits_dataset() -> Source:
    """The digits as uint8 (N, 1, 8, 8) with 0..16 scaled to 0..255; no official split."""
    import sklearn.datasets

    bunch = sklearn.datasets.load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    ids = [f"digits:{i}" for i in range(len(images))]
    data_file = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    return Source(Labelled(images, labels, ids), None, "sklearn:digits", [data_file])
