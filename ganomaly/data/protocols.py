"""Turn a labelled dataset into a one-class anomaly-detection split.

- normal-class K:  train on class K; test on the whole test split, normal iff class K.
- anomaly-class K: train on every class but K; test on the whole test split, abnormal iff K.
- paper K:         the reference code's split with `--manualseed S`, to the image (see
                   `paper_split`): pool the normal images (class != K) of the train then the
                   test split, shuffle with the split seed, 80% train / 20% test, and add every
                   class-K image (train then test) to the test set.

A dataset without an official train/test split is first split per class, seeded, 80/20.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ganomaly.data.errors import DataError

TRAIN_SHARE = 0.8


@dataclass
class Labelled:
    """Images with class labels and stable ids (e.g. 'mnist:test:17')."""

    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int
    ids: list[str]

    def take(self, index: np.ndarray) -> Labelled:
        return Labelled(self.images[index], self.labels[index], [self.ids[i] for i in index])

    @staticmethod
    def concat(parts: list[Labelled]) -> Labelled:
        return Labelled(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.labels for p in parts]),
            [i for p in parts for i in p.ids],
        )


@dataclass
class OneClassSplit:
    train: Labelled  # normal images only
    test: Labelled
    test_is_abnormal: np.ndarray  # (N_test,) 0/1
    normal_classes: list[int]


def split_per_class(
    pool: Labelled, seed: int, share: float = TRAIN_SHARE
) -> tuple[Labelled, Labelled]:
    """Seeded per-class split: `share` of every class to the first part, the rest to the second."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for label in np.unique(pool.labels):
        index = np.flatnonzero(pool.labels == label)
        index = index[rng.permutation(len(index))]
        cut = int(round(share * len(index)))
        first.append(np.sort(index[:cut]))
        second.append(np.sort(index[cut:]))
    return pool.take(np.concatenate(first)), pool.take(np.concatenate(second))


def paper_split(
    pool: Labelled, target_class: int, split_seed: int, normal_classes: list[int]
) -> OneClassSplit:
    """The reference code's split (samet-akcay/ganomaly, lib/data.py,
    `get_mnist_anomaly_dataset` / `get_cifar_anomaly_dataset` with `manualseed` != -1).

    `pool` is the official train split followed by the official test split, in file order.
    The normal images keep that order; `idx = np.arange(n)` is shuffled by numpy's legacy
    generator seeded with the split seed (the reference calls `np.random.seed(S);
    np.random.shuffle(idx)`; a private RandomState(S) draws the same numbers without touching
    the global one); the first int(0.8 * n) of idx train, in idx order. The test set is the
    rest of idx, then the class-K images of the train split, then those of the test split.
    """
    if not 0 <= split_seed < 2**32:
        raise DataError(f"split seed {split_seed}: the paper protocol needs 0 <= seed < 2**32")
    normal = np.flatnonzero(pool.labels != target_class)
    idx = np.arange(len(normal))
    np.random.RandomState(split_seed).shuffle(idx)
    cut = int(len(idx) * TRAIN_SHARE)
    abnormal = np.flatnonzero(pool.labels == target_class)
    test = pool.take(np.concatenate([normal[idx[cut:]], abnormal]))
    return OneClassSplit(
        train=pool.take(normal[idx[:cut]]),
        test=test,
        test_is_abnormal=(test.labels == target_class).astype(np.int64),
        normal_classes=normal_classes,
    )


def one_class_split(
    protocol: str,
    target_class: int,
    classes: list[int],
    split_seed: int,
    train: Labelled,
    test: Labelled | None,
) -> OneClassSplit:
    """Apply a protocol. `test` is None for a dataset without an official split."""
    if target_class not in classes:
        raise DataError(
            f"class {target_class} is not in this dataset (classes: {', '.join(map(str, classes))})"
        )
    normal_classes = [c for c in classes if c != target_class]
    if protocol == "paper":
        pool = train if test is None else Labelled.concat([train, test])
        return paper_split(pool, target_class, split_seed, normal_classes)
    if test is None:
        train, test = split_per_class(train, split_seed)
    if protocol == "normal-class":
        keep = train.labels == target_class
        is_abnormal = test.labels != target_class
        normal_classes = [target_class]
    elif protocol == "anomaly-class":
        keep = train.labels != target_class
        is_abnormal = test.labels == target_class
    else:
        raise DataError(f"protocol {protocol!r} does not apply to a labelled class dataset")
    return OneClassSplit(
        train=train.take(np.flatnonzero(keep)),
        test=test,
        test_is_abnormal=is_abnormal.astype(np.int64),
        normal_classes=normal_classes,
    )
