"""ganomaly: semi-supervised visual anomaly detection with GANomaly (Akcay et al., ACCV 2018).

Train on normal images only, score new images (higher = more abnormal), evaluate honestly,
export and serve the model.
"""

__version__ = "0.1.0"

import os  # noqa: E402

# How OpenMP threads wait between parallel regions (docs/performance.md). libgomp's default
# spin (300,000 turns) halves a 2-thread training step when another process holds a core,
# while never spinning (PASSIVE) costs 15% on an idle machine; a short spin of 3,000 turns
# measured as fast as spinning when idle and as safe as PASSIVE when the core is busy.
# LLVM/Intel OpenMP (KMP_BLOCKTIME) was not measured: it keeps the safe choice, no spin.
# Only read before torch starts its thread pool, i.e. before `import torch`; a user's own
# setting of any of these wins.
OPENMP_WAIT_DEFAULTS = {"GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "0"}
if not any(name in os.environ for name in ("OMP_WAIT_POLICY", *OPENMP_WAIT_DEFAULTS)):
    os.environ.update(OPENMP_WAIT_DEFAULTS)

from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from ganomaly.detector import GANomalyDetector, NotFittedError

__all__ = ["GANomalyDetector", "NotFittedError", "__version__"]
# Imported on first use (PEP 562), so `import ganomaly.onnx_runtime` works without torch.
_LAZY = {"GANomalyDetector": "ganomaly.detector", "NotFittedError": "ganomaly.detector"}


def __getattr__(name: str) -> Any:
    """`ganomaly.GANomalyDetector` and `ganomaly.NotFittedError`, imported when first used."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ganomaly' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
