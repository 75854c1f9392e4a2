"""The one preprocessing every face uses (train, evaluate, predict, API, server, export):

    load -> convert channels -> resize (the model's size and filter) -> scale to [-1, 1]

Channel rules (files and arrays alike):
- to 1 channel: RGB -> luminance L = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as Pillow's "L");
- to 3 channels: grey is repeated into R, G and B;
- alpha is dropped (RGBA -> RGB); palette images are expanded through their palette;
- 16-bit and 32-bit integer images are scaled to 8 bits by their type's range (I;16: / 257);
- CMYK is converted by Pillow's CMYK -> RGB; EXIF orientation is applied before anything else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 50_000_000  # refuse decompression bombs before decoding


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and the reason."""


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.uint16).astype(np.float64) / 257.0
        return Image.fromarray(np.round(array).astype(np.uint8), mode="L")
    if image.mode == "I":
        array = np.asarray(image, dtype=np.int64)
        high = 65535.0 if array.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.round(array * 255.0 / high), 0, 255).astype(np.uint8))
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8))
    return image


def convert_pil(image: Image.Image, channels: int) -> np.ndarray:
    """A Pillow image -> uint8 array (C, H, W) with `channels` channels, by the module's rules."""
    image = ImageOps.exif_transpose(image) or image
    image = _to_8bit(image)
    if image.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGBA" if image.mode in ("P", "PA") else "RGB")
        image = image.convert("RGB")
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        image = image.convert(target)
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch warns on read-only arrays
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()


def load_image(path: str | Path, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 (C, H, W); raises ImageError naming the file on any fault."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} pixels is over the limit of {max_pixels:,}"
                )
            image.load()
            return convert_pil(image, channels)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: too many pixels ({error})") from None
    except Exception as error:  # Pillow raises many types for corrupt data
        reason = "empty file" if path.stat().st_size == 0 else f"not a readable image ({error})"
        raise ImageError(f"{path}: {reason}") from None


def to_unit_float(images: Tensor | np.ndarray) -> Tensor:
    """uint8 (0..255) or float (already 0..1) images -> float32 tensor in [0, 1]."""
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    tensor = tensor.float()
    if tensor.numel() and (tensor.min() < 0.0 or tensor.max() > 1.0):
        raise ValueError("float images must be in [0, 1]; pass uint8 for 0..255 data")
    return tensor


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """(N, C, H, W) float -> (N, channels, H, W) by the module's channel rules."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 4:  # drop alpha
        images, c = images[:, :3], 3
    if c == 3 and channels == 1:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if c == channels:
        return images
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def preprocess(
    images: Tensor | np.ndarray,
    size: tuple[int, int],
    channels: int,
    interpolation: str = "bilinear",
) -> Tensor:
    """(N, C, H, W) uint8 or [0, 1] float -> float32 (N, channels, *size) in [-1, 1].

    Example:
        >>> preprocess(np.zeros((2, 1, 28, 28), np.uint8), (32, 32), 1).shape
        torch.Size([2, 1, 32, 32])
    """
    x = to_unit_float(images)
    if x.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got {tuple(x.shape)}")
    x = convert_channels(x, channels)
    if tuple(x.shape[-2:]) != tuple(size):
        if interpolation in ("bilinear", "bicubic"):
            x = F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)  # bicubic overshoots
        elif interpolation == "nearest":
            x = F.interpolate(x, size=size, mode="nearest-exact")
        else:
            x = F.interpolate(x, size=size, mode=interpolation)
    return (x * 2.0 - 1.0).contiguous()


def to_display(x: Tensor) -> np.ndarray:
    """Model-space [-1, 1] images -> numpy [0, 1] for figures."""
    return ((x.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0).numpy()


def find_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted; symlink loops are not followed twice."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            stat = folder.stat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                stack.append(entry)
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                found.append(entry)
    return sorted(found)
