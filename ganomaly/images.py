"""The one preprocessing every face uses (train, evaluate, predict, API, server, export):

    load -> convert channels -> resize (the model's size and filter) -> scale to [-1, 1]

Loading files and the channel rules live in `ganomaly.image_files` (numpy and Pillow only, so
the ONNX runtime shares them without torch); its names are re-exported here. This module adds
the torch part: arrays and tensors to the model's input. `ganomaly.onnx_runtime` repeats that
part in numpy, and its tests hold the two equal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ganomaly.image_files import (
    DEFAULT_MAX_PIXELS,
    GREY_MODES,
    IMAGE_KINDS,
    IMAGE_SUFFIXES,
    ImageError,
    check_images,
    convert_pil,
    find_images,
    first_line,
    list_inputs,
    load_image,
    natural_channels,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "GREY_MODES",
    "IMAGE_KINDS",
    "IMAGE_SUFFIXES",
    "ImageError",
    "check_images",
    "convert_channels",
    "convert_pil",
    "find_images",
    "first_line",
    "list_inputs",
    "load_image",
    "natural_channels",
    "preprocess",
    "to_display",
    "to_unit_float",
]


def to_unit_float(images: Tensor | np.ndarray) -> Tensor:
    """uint8 and other integers (0..255), or floats (already 0..1; bool is 0/1) -> float32 in
    [0, 1].

    NaN, infinities, complex numbers and values outside those ranges raise ValueError.
    """
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    if tensor.is_complex():
        raise ValueError(f"images must be real numbers, got {tensor.dtype}")
    dtype = tensor.dtype
    integer = not dtype.is_floating_point and dtype != torch.bool
    tensor = tensor.float()
    if not tensor.numel():
        return tensor
    if integer:
        if tensor.min() < 0.0 or tensor.max() > 255.0:
            name = str(dtype).removeprefix("torch.")
            raise ValueError(f"{name} images must be in 0..255; pass floats in [0, 1] otherwise")
        return tensor.div_(255.0)
    if not torch.isfinite(tensor).all():
        raise ValueError("images hold NaN or infinite values")
    if tensor.min() < 0.0 or tensor.max() > 1.0:
        name = "float" if dtype.is_floating_point else str(dtype).removeprefix("torch.")
        raise ValueError(f"{name} images must be in [0, 1]; pass uint8 for 0..255 data")
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
    if 0 in x.shape[1:]:
        raise ValueError(f"images with no pixels or channels: shape {tuple(x.shape)}")
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
