"""Datasets by name, turned into a one-class split by a protocol.

    split = load_split(config)   # config: a RunConfig
    split.train                  # normal images only, uint8 (N, C, H, W)
    split.test, split.test_is_abnormal, split.test_ids, split.test_classes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganomaly.config import RunConfig
from ganomaly.data.errors import DataError
from ganomaly.data.protocols import one_class_split

CLASS_DATASETS = ("mnist", "fashion-mnist", "digits")
DATASETS = CLASS_DATASETS

__all__ = ["DATASETS", "DataError", "DataSplit", "load_split", "resolve_protocol"]


@dataclass
class DataSplit:
    """What training and evaluation need, with the provenance a run records."""

    train: np.ndarray  # normal images, uint8 (N, C, H, W)
    train_ids: list[str]
    test: np.ndarray
    test_ids: list[str]
    test_is_abnormal: np.ndarray  # (N_test,) 0/1
    test_classes: list[str]
    normal_classes: list[str]
    channels: int
    data_source: str
    fingerprint: str
    test_masks: list[Path | None] = field(default_factory=list)


def resolve_protocol(config: RunConfig) -> str:
    """The protocol a run uses: the given one, else the dataset's natural default."""
    if config.protocol is not None:
        return config.protocol
    return config.data if config.data in ("mvtec", "folder") else "normal-class"


def load_split(config: RunConfig) -> DataSplit:
    """Load `config.data` and apply the protocol; raises DataError with a one-line reason."""
    protocol = resolve_protocol(config)
    if config.data not in DATASETS:
        raise DataError(f"unknown dataset {config.data!r}; choose one of {', '.join(DATASETS)}")
    if protocol not in ("normal-class", "anomaly-class", "paper"):
        raise DataError(f"protocol {protocol!r} does not apply to {config.data}")
    if config.target_class is None:
        raise DataError(
            f"{config.data} needs a class: --normal-class K, --anomaly-class K "
            "or --protocol paper --target-class K"
        )
    if config.data == "digits":
        from ganomaly.data.digits import load_digits_dataset

        source = load_digits_dataset()
    else:
        from ganomaly.data.mnist import load_idx_dataset

        source = load_idx_dataset(config.data, config.data_dir, config.source)
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
