"""ganomaly: semi-supervised visual anomaly detection with GANomaly (Akcay et al., ACCV 2018).

Train on normal images only, score new images (higher = more abnormal), evaluate honestly,
export and serve the model.

Importing this package changes nothing outside it (environment, RNGs, threads, warnings) and
does not import torch: `GANomalyDetector` is loaded on first use. Process-wide settings are
the process owner's: see `configure_threads`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ganomaly.process import configure_threads

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ganomaly.detector import GANomalyDetector, NotFittedError

__all__ = ["GANomalyDetector", "NotFittedError", "__version__", "configure_threads"]


def __getattr__(name: str) -> Any:
    # Lazy: `import ganomaly` (the CLI's parser, the ONNX runtime) must not pay for torch.
    if name in ("GANomalyDetector", "NotFittedError"):
        from ganomaly import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'ganomaly' has no attribute {name!r}")
