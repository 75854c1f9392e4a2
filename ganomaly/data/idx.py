"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).

An IDX file is: 2 zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
that many big-endian uint32 sizes, then the data.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from ganomaly.data.errors import DataError

_UNSIGNED_BYTE = 0x08
_CHUNK = 1 << 24


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _read_at_most(handle: _Readable, limit: int) -> bytes:
    # In chunks, never `read(limit)`: a damaged header can declare terabytes, and one read of
    # that size allocates it up front; a gzip body can also inflate far past what it declared.
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = handle.read(min(_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (`.gz` or raw) into a uint8 array of its shape.

    Any fault (bad magic number, other element type, truncated or overlong body, damaged
    gzip data) raises DataError naming the file; memory is bounded by the declared size.
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
            head = _read_at_most(handle, 4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (bad magic number)")
            if head[2] != _UNSIGNED_BYTE:
                raise DataError(f"{path}: IDX type 0x{head[2]:02x} is not unsigned byte (0x08)")
            ndim = head[3]
            sizes = _read_at_most(handle, 4 * ndim)
            if ndim == 0 or len(sizes) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
            expected = math.prod(shape)  # Python ints: numpy's prod would overflow silently
            body = _read_at_most(handle, expected + 1)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read IDX file ({error})") from None
    if len(body) < expected:
        raise DataError(
            f"{path}: truncated IDX file: body has {len(body)} bytes, header says {expected} "
            f"{shape}"
        )
    if len(body) > expected:
        raise DataError(f"{path}: IDX body has more than the {expected} bytes of {shape}")
    # a bytearray, not bytes: a read-only array makes torch.from_numpy warn (and callers may edit)
    return np.frombuffer(bytearray(body), dtype=np.uint8).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _UNSIGNED_BYTE, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
