"""Small datasets written in each real on-disk format, for end-to-end tests."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX by hand: magic (0, 0, ubyte 0x08, ndim), big-endian sizes, raw data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def class_images(labels: np.ndarray, size: int, channels: int, seed: int) -> np.ndarray:
    """uint8 (N, C, size, size): each class a bright bar at its own row, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (len(labels), channels, size, size)).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 2 + int(label) * (size - 4) // 10
        images[i, :, row : row + 3, 2:-2] = 230
    return images


def write_idx_dataset(folder: Path, n_train: int = 200, n_test: int = 100) -> None:
    """The four Fashion-MNIST style IDX files, gzip-compressed, 10 classes."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        labels = np.arange(n) % 10
        images = class_images(labels, 28, 1, seed)[:, 0]
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))


def cifar_batch(n: int, seed: int) -> bytes:
    """One CIFAR-10 python batch (protocol 2, as the official files), 10 classes."""
    labels = np.arange(n) % 10
    data = class_images(labels, 32, 3, seed).reshape(n, 3072)
    batch = {b"batch_label": b"synthetic", b"labels": labels.tolist(), b"data": data}
    return pickle.dumps(batch, protocol=2)


def write_cifar_folder(folder: Path, per_batch: int = 40) -> Path:
    """cifar-10-batches-py/ with five training batches and a test batch."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(cifar_batch(per_batch, i))
    (root / "test_batch").write_bytes(cifar_batch(per_batch * 2, 9))
    return root


def write_cifar_tarball(path: Path, per_batch: int = 40) -> Path:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
            data = cifar_batch(per_batch * (2 if name == "test_batch" else 1), i)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth normal 'product' image, uint8 (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 110 + 50 * np.sin(xx / 3.0) + rng.normal(0, 6, (h, w))
    return np.clip(base, 0, 255).astype(np.uint8)


def defect_box(index: int, h: int, w: int) -> tuple[slice, slice]:
    top, left = 4 + (index * 5) % (h - 14), 4 + (index * 7) % (w - 14)
    return slice(top, top + 8), slice(left, left + 8)


def write_mvtec_category(
    root: Path, category: str = "widget", size: tuple[int, int] = (40, 48), rgb: bool = True
) -> Path:
    """An MVTec AD category: train/good, test/good, test/<2 defects>, ground_truth masks."""
    h, w = size
    rng = np.random.default_rng(0)
    folder = root / category

    def save(array: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.stack([array] * 3, -1) if rgb else array)
        image.save(path)

    for i in range(30):
        save(texture(rng, h, w), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(6):
        save(texture(rng, h, w), folder / "test" / "good" / f"{i:03d}.png")
    for defect in ("crack", "stain"):
        for i in range(4):
            image = texture(rng, h, w)
            mask = np.zeros((h, w), np.uint8)
            box = defect_box(i + (4 if defect == "stain" else 0), h, w)
            image[box] = 250 if defect == "crack" else 5
            mask[box] = 255
            save(image, folder / "test" / defect / f"{i:03d}.png")
            mask_path = folder / "ground_truth" / defect / f"{i:03d}_mask.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
    return folder


def write_user_folder(root: Path) -> Path:
    """A user's folder: nested train/, mixed formats and modes, test/good and test/dent."""
    rng = np.random.default_rng(1)

    def product(h: int = 30, w: int = 36) -> np.ndarray:
        return texture(rng, h, w)

    writers = [
        ("png", lambda a: Image.fromarray(a)),
        ("png", lambda a: Image.fromarray(np.stack([a] * 3, -1))),
        ("png", lambda a: Image.fromarray(np.stack([a] * 3 + [np.full_like(a, 255)], -1))),
        ("png", lambda a: Image.fromarray(a).convert("P")),
        ("png", lambda a: Image.fromarray(a.astype(np.uint16) * 257)),
        ("jpg", lambda a: Image.fromarray(np.stack([a] * 3, -1))),
        ("bmp", lambda a: Image.fromarray(a)),
        ("tif", lambda a: Image.fromarray(np.stack([a] * 3, -1))),
    ]
    for i in range(32):
        suffix, make = writers[i % len(writers)]
        sub = root / "train" / ("line_a" if i % 2 else "line_b") / ("day2" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        make(product()).save(sub / f"img{i:02d}.{suffix}")
    for i in range(6):
        suffix, make = writers[i % len(writers)]
        (root / "test" / "good").mkdir(parents=True, exist_ok=True)
        make(product()).save(root / "test" / "good" / f"ok{i}.{suffix}")
    for i in range(4):
        image = product()
        image[10:20, 12:22] = 255
        (root / "test" / "dent").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "test" / "dent" / f"d{i}.png")
    return root
