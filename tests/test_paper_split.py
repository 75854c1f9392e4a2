"""`--protocol paper` selects, image for image, what the authors' code selects.

The expected split is re-stated here from samet-akcay/ganomaly lib/data.py
(`get_mnist_anomaly_dataset` with `manualseed` != -1), with numpy's global legacy seeding as
the reference calls it, and compared with what `load_split` gives through the real data path:
IDX files on disk, and scikit-learn's digits as a pool without an official split.
"""

from __future__ import annotations

import numpy as np
import pytest

from ganomaly.config import RunConfig
from ganomaly.data import DataError, load_split
from ganomaly.data.protocols import Labelled, one_class_split
from tests.synthetic_data import idx_bytes

SEEDS = [0, 1, 2]
DIGITS = list(range(10))


def reference_split(
    train_labels: np.ndarray, test_labels: np.ndarray, abnormal_class: int, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[int]]:
    """The reference's procedure, step by step, on (split, index) pairs instead of images.

    Returns the new train set, the new test set (in order) and the test labels (1 = abnormal).
    """
    nrm_trn = [("train", int(i)) for i in np.where(train_labels != abnormal_class)[0]]
    abn_trn = [("train", int(i)) for i in np.where(train_labels == abnormal_class)[0]]
    nrm_tst = [("test", int(i)) for i in np.where(test_labels != abnormal_class)[0]]
    abn_tst = [("test", int(i)) for i in np.where(test_labels == abnormal_class)[0]]
    nrm = nrm_trn + nrm_tst  # torch.cat((nrm_trn_img, nrm_tst_img))
    idx = np.arange(len(nrm))
    np.random.seed(seed)
    np.random.shuffle(idx)
    nrm_trn_len = int(len(idx) * 0.80)
    new_trn = [nrm[i] for i in idx[:nrm_trn_len]]
    new_tst = [nrm[i] for i in idx[nrm_trn_len:]] + abn_trn + abn_tst
    labels = [0] * (len(idx) - nrm_trn_len) + [1] * (len(abn_trn) + len(abn_tst))
    return new_trn, new_tst, labels


def as_pairs(ids: list[str]) -> list[tuple[str, int]]:
    """'fashion-mnist:train:17' -> ('train', 17)."""
    return [(part, int(index)) for part, index in (i.split(":")[-2:] for i in ids)]


@pytest.fixture
def keep_global_numpy_rng():
    """The re-statement reseeds numpy's global generator, as the reference does: restore it."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory):
    """Fashion-MNIST IDX files with labels in random order (so pooling order matters) and
    uneven class sizes, as in the real files."""
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(7)
    for prefix, n in (("train", 613), ("t10k", 157)):
        labels = rng.choice(10, size=n, p=np.linspace(0.05, 0.15, 10)).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return folder


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("digit", DIGITS)
def test_idx_pool_matches_the_reference(
    digit, seed, idx_folder, monkeypatch, isolated_cache, keep_global_numpy_rng
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    config = RunConfig(
        data="fashion-mnist", data_dir=str(idx_folder), protocol="paper",
        target_class=digit, split_seed=seed,
    )  # fmt: skip
    state_before = np.random.get_state()[1].copy()
    split = load_split(config)
    # Our split leaves numpy's global generator alone (the library changes nothing outside it).
    assert np.array_equal(np.random.get_state()[1], state_before)

    from ganomaly.data.idx import read_idx

    train_labels = read_idx(idx_folder / "train-labels-idx1-ubyte").astype(np.int64)
    test_labels = read_idx(idx_folder / "t10k-labels-idx1-ubyte").astype(np.int64)
    expected_train, expected_test, expected_labels = reference_split(
        train_labels, test_labels, digit, seed
    )
    assert as_pairs(split.train_ids) == expected_train
    assert as_pairs(split.test_ids) == expected_test
    assert split.test_is_abnormal.tolist() == expected_labels
    # ... and the images are those of the ids (not only the bookkeeping).
    train_images = read_idx(idx_folder / "train-images-idx3-ubyte")
    test_images = read_idx(idx_folder / "t10k-images-idx3-ubyte")
    files = {"train": train_images, "test": test_images}
    expected_pixels = np.stack([files[part][i] for part, i in expected_test])
    assert np.array_equal(split.test[:, 0], expected_pixels)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("digit", DIGITS)
def test_digits_pool_matches_the_reference(digit, seed, keep_global_numpy_rng):
    """scikit-learn's digits have no official split: the pool is the whole file, in order."""
    import sklearn.datasets

    labels = sklearn.datasets.load_digits().target
    split = load_split(
        RunConfig(data="digits", protocol="paper", target_class=digit, split_seed=seed)
    )
    expected_train, expected_test, expected_labels = reference_split(
        labels, labels[:0], digit, seed
    )
    index = [int(i.split(":")[-1]) for i in split.train_ids]
    assert index == [i for _, i in expected_train]
    assert [int(i.split(":")[-1]) for i in split.test_ids] == [i for _, i in expected_test]
    assert split.test_is_abnormal.tolist() == expected_labels
    # A sanity check of the re-statement itself: every pool image is used exactly once.
    assert sorted(index + [i for _, i in expected_test]) == list(range(len(labels)))


def test_split_seed_out_of_numpy_range_is_refused():
    ids = [str(i) for i in range(10)]
    pool = Labelled(np.zeros((10, 1, 8, 8), np.uint8), np.arange(10) % 2, ids)
    with pytest.raises(DataError, match="split seed"):
        one_class_split("paper", 1, [0, 1], -1, pool, None)
