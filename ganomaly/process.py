"""Process-wide settings, made only by whoever owns the process: the `ganomaly` command, the
bench, or a user who calls `configure_threads` on purpose. Importing the library or calling
its estimator changes none of them; library calls scope what they must change (see
`scoped_threads`). Torch is not imported here: the OpenMP part must run before it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

# How OpenMP threads wait between parallel regions (docs/performance.md). libgomp's default
# spin (300,000 turns) halves a 2-thread training step when another process holds a core,
# while never spinning (PASSIVE) costs 15% on an idle machine; a short spin of 3,000 turns
# measured as fast as spinning when idle and as safe as PASSIVE when the core is busy.
# LLVM/Intel OpenMP (KMP_BLOCKTIME) was not measured: it keeps the safe choice, no spin.
OPENMP_WAIT_DEFAULTS = {"GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0"}
OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", *OPENMP_WAIT_DEFAULTS)


def set_openmp_defaults() -> bool:
    """Put OPENMP_WAIT_DEFAULTS into os.environ unless the user set any OpenMP wait variable.

    OpenMP reads them once, when torch starts its thread pool, so this only works before the
    first `import torch`; returns False (and changes nothing) when torch is already imported
    or the user's own setting wins.
    """
    if "torch" in sys.modules or any(name in os.environ for name in OPENMP_WAIT_VARIABLES):
        return False
    os.environ.update(OPENMP_WAIT_DEFAULTS)
    return True


def configure_threads(threads: int | None = None, openmp_wait: bool = True) -> None:
    """Set this process's CPU threading the way the `ganomaly` command does.

    `openmp_wait` applies the measured OpenMP wait defaults (only before torch is imported,
    see `set_openmp_defaults`); `threads` sets torch's intra-op thread count.

    Example:
        >>> import ganomaly
        >>> ganomaly.configure_threads(threads=2)   # first thing in a script, before torch
    """
    if openmp_wait:
        set_openmp_defaults()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@contextlib.contextmanager
def scoped_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block, restored after
    (None: unchanged)."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _one_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"ganomaly: warning: {message}\n"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings printed as `ganomaly: warning: ...` inside the block (the command's style),
    Python's own format restored after."""
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


def release_free_memory() -> None:
    """Give back to the OS the memory the C allocator still holds after frees (glibc's
    `malloc_trim`; elsewhere nothing happens). Training frees its activations into the
    allocator's arenas, which keep them: measured on the MNIST demo, about 190 MB that would
    otherwise stay resident under everything that follows (evaluation, figures, a server)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)
