"""Datasets by name, turned into a one-class split by a protocol.

    split = load_split(config)   # config: a RunConfig
    split.train                  # normal images only: uint8 (N, C, H, W), or image files
    split.test, split.test_is_abnormal, split.test_ids, split.test_classes, split.test_masks
    split.val, split.val_is_abnormal   # --val-dir, when given
    split.has_test                     # False: normal-only training (a folder with no test/)

Class datasets (mnist, fashion-mnist, cifar10, digits) are arrays in memory; folder datasets
(mvtec, folder) are lists of files that the one preprocessing reads (see docs/datasets.md).
Without `--data`, `--data-dir` decides the dataset (`ganomaly.data.layout`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.config import RunConfig
from ganomaly.data.errors import DataError
from ganomaly.data.layout import (
    CLASS_DATASETS,
    DATASETS,
    FOLDER_DATASETS,
    DataChoice,
    choose_data,
)
from ganomaly.data.protocols import one_class_split

__all__ = [
    "CLASS_DATASETS",
    "DATASETS",
    "FOLDER_DATASETS",
    "DataChoice",
    "DataError",
    "DataSplit",
    "choose_data",
    "load_split",
    "resolve_protocol",
]


@dataclass
class DataSplit:
    """What training and evaluation need, with the provenance a run records."""

    train: Any  # normal images: uint8 array (N, C, H, W), or a list of image files
    train_ids: list[str]
    test: Any  # as train
    test_ids: list[str]
    test_is_abnormal: np.ndarray  # (N_test,) 0/1
    test_classes: list[str]
    normal_classes: list[str]
    channels: int
    data_source: str
    fingerprint: str
    test_masks: list[Path | None] = field(default_factory=list)  # per test image, or empty
    val: list[Path] | None = None  # --val-dir images (good/ and defect folders)
    val_is_abnormal: np.ndarray | None = None

    @property
    def has_test(self) -> bool:
        """False when there is no test set (normal-only training)."""
        return len(self.test_ids) > 0


def resolve_protocol(config: RunConfig) -> str:
    """The protocol a run uses: the given one, else the dataset's natural default."""
    if config.protocol is not None:
        return config.protocol
    data = config.data or choose_data(config).data
    return data if data in FOLDER_DATASETS else "normal-class"


def load_split(config: RunConfig, need_train: bool = True) -> DataSplit:
    """Load the dataset `config` names (`choose_data`) and apply the protocol; raises
    DataError with a one-line reason. Without `need_train` (evaluating a saved model) a folder
    dataset's training images are not read, and a labelled folder is enough."""
    choice = choose_data(config, need_train)
    if choice.data in FOLDER_DATASETS:
        split = _folder_split(config, choice, need_train)
    else:
        split = _class_split(config, choice.data)
    if config.val_dir:
        from ganomaly.data.folders import load_val_dir

        test_files = split.test if isinstance(split.test, list) else []
        split.val, split.val_is_abnormal = load_val_dir(
            config.val_dir, test_files, config.skip_bad, config.max_pixels
        )
    return split


def _folder_split(config: RunConfig, choice: DataChoice, need_train: bool) -> DataSplit:
    from ganomaly.data.folders import load_mvtec, load_user_folder
    from ganomaly.image_files import natural_channels

    data = choice.data  # choose_data has refused class flags for these datasets
    protocol = config.protocol or data
    if protocol != data:
        raise DataError(f"protocol {protocol!r} does not apply to {data}")
    if data == "mvtec":
        category = config.category or choice.category
        found = load_mvtec(
            config.data_dir, category, config.skip_bad, config.max_pixels, need_train
        )
        source = f"mvtec:{found.root.name}"
    else:
        found = load_user_folder(config.data_dir, config.skip_bad, config.max_pixels, need_train)
        source = f"folder:{found.root.name}"
    return DataSplit(
        train=found.train,
        train_ids=[p.relative_to(found.root).as_posix() for p in found.train],
        test=found.test,
        test_ids=found.test_ids,
        test_is_abnormal=found.test_is_abnormal,
        test_classes=found.test_classes,
        normal_classes=["good"],
        channels=natural_channels((found.train or found.test)[0]),
        data_source=source,
        fingerprint=found.fingerprint,
        test_masks=found.test_masks,
    )


def _class_split(config: RunConfig, data: str) -> DataSplit:
    protocol = config.protocol or "normal-class"
    if protocol not in ("normal-class", "anomaly-class", "paper"):
        raise DataError(f"protocol {protocol!r} does not apply to {data}")
    if config.target_class is None:
        raise DataError(
            f"{data} needs a class: --normal-class K, --anomaly-class K "
            "or --protocol paper --target-class K"
        )
    if data == "digits":
        from ganomaly.data.digits import load_digits_dataset

        source = load_digits_dataset()
    elif data == "cifar10":
        from ganomaly.data.cifar import load_cifar10

        source = load_cifar10(config.data_dir)
    else:
        from ganomaly.data.mnist import load_idx_dataset

        source = load_idx_dataset(data, config.data_dir, config.source)
    classes = sorted(int(c) for c in np.unique(source.train.labels))
    split = one_class_split(
        protocol, config.target_class, classes, config.split_seed, source.train, source.test
    )
    return DataSplit(
        train=split.train.images,
        train_ids=split.train.ids,
        test=split.test.images,
        test_ids=split.test.ids,
        test_is_abnormal=split.test_is_abnormal,
        test_classes=[str(c) for c in split.test.labels],
        normal_classes=[str(c) for c in split.normal_classes],
        channels=int(split.train.images.shape[1]),
        data_source=source.name,
        fingerprint=source.fingerprint,
    )
