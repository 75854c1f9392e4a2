"""Image files, without PyTorch: checks, loading with the channel rules, finding images.

This module imports only numpy and Pillow, so the ONNX runtime (`ganomaly.onnx_runtime`) reads
files exactly as training and `ganomaly.images.preprocess` do, in an environment without torch.

Channel rules (files and arrays alike):
- to 1 channel: RGB -> luminance L = 0.299 R + 0.587 G + 0.114 B (ITU-R 601, as Pillow's "L");
- to 3 channels: grey is repeated into R, G and B;
- alpha is dropped (RGBA -> RGB); palette images are expanded through their palette;
- 16-bit and 32-bit integer images are scaled to 8 bits by their type's range (I;16: / 257);
- CMYK is converted by Pillow's CMYK -> RGB; EXIF orientation is applied before anything else
  (`PIL.ImageOps.exif_transpose`), so a photo is used upright, as viewers show it;
- float images ("F") are taken as [0, 1]; a NaN or infinite pixel makes the file unusable.

Arrays (the Python API): `array_layout` tells (N, H, W) grey, (N, H, W, C) channels-last (as
PIL and imageio give images) and (N, C, H, W) channels-first apart by their shape; channels are
in RGB(A) order (OpenCV's BGR arrays need `[..., ::-1]` first).

Hostile files never get past `load_image` as anything but an `ImageError` naming the file:
empty files, FIFOs and devices (refused from `stat`, never opened: reading them could block),
unknown formats, truncated data, and images over `max_pixels` (refused from the header, before
any pixel is decoded). Pillow keeps its own hard limit, 2 x `PIL.Image.MAX_IMAGE_PIXELS`
(about 179 million pixels); a larger `max_pixels` is capped by it.
"""

from __future__ import annotations

import glob
import math
import re
import stat
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# For messages: "no images (png, jpg, jpeg, ...)" names exactly what is looked for.
IMAGE_KINDS = ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES)
# Image files with more pixels than this are refused from their header, before decoding:
# a decompression bomb must not take the machine's memory. 50 M pixels is far above any
# training or inspection image (an 8K frame is 33 M) and well under Pillow's own 179 M cap.
# The server, which reads uploads from anyone, uses a lower limit (ganomaly.server).
DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and the reason."""


ARRAY_LAYOUTS = ("NCHW", "NHWC", "NHW")
CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA
ARRAY_FORMS = (
    "(N, H, W) grey, (N, H, W, C) channels-last or (N, C, H, W) channels-first, "
    "C = 1, 3 or 4 (grey, RGB, RGBA)"
)


def array_layout(shape: Sequence[int], layout: str | None = None) -> str:
    """The layout of a batch of images shaped `shape`: "NHW" for three axes; for four,
    "NHWC" when only the last axis has 1, 3 or 4 entries, "NCHW" otherwise, unless both the
    second and the last have (an image side of 1, 3 or 4 pixels looks like a channel axis):
    that ambiguity raises ValueError, and `layout` given says which it is.

    Example:
        >>> array_layout((10, 28, 28)), array_layout((10, 32, 32, 3)), array_layout((10, 3, 32, 32))
        ('NHW', 'NHWC', 'NCHW')
    """
    shape = tuple(int(n) for n in shape)
    if layout is not None:
        if layout not in ARRAY_LAYOUTS:
            raise ValueError(f"layout={layout!r}: choose one of {', '.join(ARRAY_LAYOUTS)}")
        if len(shape) != len(layout):
            raise ValueError(f"layout={layout!r} does not fit images shaped {shape}")
        return layout
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise ValueError(f"images shaped {shape}: expected {ARRAY_FORMS}")
    channels_first, channels_last = shape[1] in CHANNEL_COUNTS, shape[3] in CHANNEL_COUNTS
    if channels_first and channels_last:
        raise ValueError(
            f"images shaped {shape} are ambiguous: arrays are {ARRAY_FORMS}, and here both the "
            "second and the last axis could be C; resize images with a side of 1, 3 or 4 "
            "pixels, or say which with preprocess(X, layout='NCHW' or 'NHWC')"
        )
    return "NHWC" if channels_last else "NCHW"


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
        if not np.isfinite(array).all():
            raise ValueError("NaN or infinite pixel values")
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


def _file_problem(path: Path) -> str | None:
    """Why `path` is no image file, from `stat` alone: a FIFO or a device must never be opened
    (reading one blocks, or never ends)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "no such file"
    except PermissionError:
        return "permission denied"
    except OSError as error:  # a symlink loop (ELOOP), a name too long, ...
        reason = error.strerror or type(error).__name__
        return reason[:1].lower() + reason[1:]
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a FIFO, socket or device)"
    if info.st_size == 0:
        return "empty file"
    return None


def _over_limit(error: Exception, max_pixels: int) -> str:
    # Pillow's own bomb check fires inside Image.open, before we see the size; its message
    # carries the pixel count ("Image size (400000000 pixels) exceeds limit of ...").
    limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or math.inf))
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
    return f"{pixels} is over the limit of {int(limit):,}"


def first_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message cut to one line (libraries' messages run over several)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def natural_channels(path: str | Path) -> int:
    """1 for a greyscale file (by its mode, from the header), else 3: a dataset's own channel
    count when --channels is not given. Refuses FIFOs and the like before opening them."""
    path = Path(path)
    problem = _file_problem(path)
    if problem is not None:
        raise ImageError(f"{path}: {problem}")
    try:
        with Image.open(path) as image:
            return 1 if image.mode in GREY_MODES else 3
    except (OSError, ValueError) as error:
        raise ImageError(f"{path}: not a readable image ({first_line(error)})") from None


def load_image(path: str | Path, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 (C, H, W) by the module's channel rules; EXIF orientation
    is applied first (`ImageOps.exif_transpose`). Raises ImageError naming the file on any
    fault; an image over `max_pixels` is refused from its header, before decoding.

    Example:
        >>> load_image("scan.png", 1).shape   # doctest: +SKIP
        (1, 480, 640)
    """
    path = Path(path)
    problem = _file_problem(path)
    if problem:
        raise ImageError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 M pixels; our own limit is checked right below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} pixels is over the limit of {max_pixels:,}"
                )
            image.load()
            return convert_pil(image, channels)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{path}: {_over_limit(error, max_pixels)}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (unknown format, or damaged)") from None
    except Exception as error:  # Pillow raises many types for corrupt data
        raise ImageError(f"{path}: not a readable image ({first_line(error)})") from None


def check_images(
    paths: Sequence[Path], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 4
) -> dict[Path, str]:
    """{path: reason} for every file that `load_image` refuses (an empty dict: all good).

    Each file is fully decoded, since a truncated body only shows when decoding; threads,
    because Pillow releases the GIL while it decodes.
    """

    def problem(path: Path) -> str | None:
        try:
            load_image(path, 3, max_pixels)
        except ImageError as error:
            return str(error).removeprefix(f"{path}: ")
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(problem, paths))
    return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason}


def find_images(root: Path, problems: dict[Path, str] | None = None) -> list[Path]:
    """Image files under `root`, recursively, sorted; symlink loops are not followed twice.

    Files are listed by name, not opened. A folder that cannot be listed is added to
    `problems` as {folder: reason} when given, so a caller can report it instead of
    losing its images silently.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            entries = sorted(folder.iterdir())
        except OSError as error:
            if problems is not None:
                problems[folder] = f"cannot list folder ({error.strerror or error})"
            continue
        for entry in entries:
            if entry.is_dir():
                stack.append(entry)
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                found.append(entry)
    return sorted(found)


def list_inputs(inputs: Iterable[str]) -> list[tuple[str, str | None]]:
    """Files, folders (recursive) and glob patterns -> [(path, problem)] in input order.

    A folder or a pattern gives its image files sorted by path, each with problem None; an
    input that gives no file (missing, an empty folder, a pattern matching nothing) gives one
    entry (the input as written, the reason). A file named twice is listed once.

    Example:
        >>> list_inputs(["scans/", "missing.png"])   # doctest: +SKIP
        [('scans/a.png', None), ('scans/b/c.png', None), ('missing.png', 'no such file or folder')]
    """
    entries: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = find_images(path)
            if found:
                entries.extend((str(p), None) for p in found)
            else:
                entries.append((item, f"folder holds no images ({IMAGE_KINDS})"))
        elif path.exists():
            entries.append((str(path), None))
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [m for m in matches if m.is_file()]
            for folder in (m for m in matches if m.is_dir()):
                files.extend(find_images(folder))
            if files:
                entries.extend((str(p), None) for p in files)
            else:
                entries.append((item, "pattern matches no files"))
        else:
            entries.append((item, "no such file or folder"))
    return list(dict.fromkeys(entries))
