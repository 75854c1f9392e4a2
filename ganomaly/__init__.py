"""ganomaly: semi-supervised visual anomaly detection with GANomaly (Akcay et al., ACCV 2018).

Train on normal images only, score new images (higher = more abnormal), evaluate honestly,
export and serve the model.
"""

__version__ = "0.1.0"

from ganomaly.detector import GANomalyDetector, NotFittedError  # noqa: E402

__all__ = ["GANomalyDetector", "NotFittedError", "__version__"]
