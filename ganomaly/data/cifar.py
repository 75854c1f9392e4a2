"""CIFAR-10 from its official python pickle batches.

    cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta

Each batch is a pickled dict: b"data" uint8 (10000, 3072) as 1024 red, 1024 green, 1024 blue
values per image (row-major 32x32), b"labels" a list of ints. The batches are read with a
restricted unpickler that only builds dicts, lists, strings, numbers and NumPy arrays, so a
tampered file cannot run code. Found by the search order (`--data-dir`, `$GANOMALY_DATA`,
cache) as the folder or as the tarball; else the canonical tarball is fetched and md5-checked.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ganomaly.data.errors import DataError
from ganomaly.data.locate import cache_dir, download, search_roots
from ganomaly.data.mnist import Source
from ganomaly.data.protocols import Labelled

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_SUBDIRS = ("", "cifar10", "cifar-10")

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
        pixels = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as error:
        raise DataError(f"{name}: not a CIFAR-10 python batch ({error})") from None
    if pixels.ndim != 2 or pixels.shape[1] != 3072 or len(labels) != len(pixels):
        raise DataError(
            f"{name}: expected data (N, 3072) and N labels, got {pixels.shape} and {len(labels)}"
        )
    return pixels.reshape(-1, 3, 32, 32), labels


def _labelled(parts: list[tuple[np.ndarray, np.ndarray]], split: str) -> Labelled:
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Labelled(images, labels, [f"cifar10:{split}:{i}" for i in range(len(images))])


def _from_folder(folder: Path) -> Source:
    files = [folder / name for name in (*TRAIN_BATCHES, TEST_BATCH)]
    parts = [read_batch(path.read_bytes(), str(path)) for path in files]
    return Source(
        _labelled(parts[:5], "train"), _labelled(parts[5:], "test"), "pickle:cifar10", files
    )


def _from_tarball(tarball: Path) -> Source:
    parts = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for name in (*TRAIN_BATCHES, TEST_BATCH):
                member = tar.extractfile(f"{FOLDER}/{name}")
                if member is None:
                    raise DataError(f"{tarball}: {FOLDER}/{name} missing")
                parts[name] = read_batch(member.read(), f"{tarball}:{name}")
    except (tarfile.TarError, KeyError, OSError) as error:
        raise DataError(f"{tarball}: not a readable CIFAR-10 tarball ({error})") from None
    train = _labelled([parts[n] for n in TRAIN_BATCHES], "train")
    return Source(train, _labelled([parts[TEST_BATCH]], "test"), "pickle:cifar10", [tarball])


def find_cifar10(roots: list[Path]) -> Path | None:
    """The unpacked batches folder or the tarball in the first root that has one, or None."""
    for root in roots:
        for sub in _SUBDIRS:
            folder = root / sub / FOLDER
            if all((folder / n).is_file() for n in (*TRAIN_BATCHES, TEST_BATCH)):
                return folder
            if (root / sub / TARBALL).is_file():
                return root / sub / TARBALL
    return None


def load_cifar10(data_dir: str | None) -> Source:
    """CIFAR-10 by the search order, else the canonical tarball (md5-checked)."""
    roots = search_roots(data_dir)
    found = find_cifar10(roots)
    if found is not None:
        return _from_folder(found) if found.is_dir() else _from_tarball(found)
    try:
        return _from_tarball(download(URL, cache_dir() / "cifar10" / TARBALL, TARBALL_MD5))
    except DataError as error:
        places = ", ".join(str(r) for r in roots)
        raise DataError(
            f"cifar10 not found: put {TARBALL} or its unpacked {FOLDER}/ folder in --data-dir, "
            f"$GANOMALY_DATA/cifar10 or {cache_dir() / 'cifar10'} (looked in {places}); "
            f"fetching failed: {error}"
        ) from None
