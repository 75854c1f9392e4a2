"""ganomaly: semi-supervised visual anomaly detection with GANomaly (Akcay et al., ACCV 2018).

Train on normal images only, score new images (higher = more abnormal), evaluate honestly,
export and serve the model.
"""

__version__ = "0.1.0"

import os  # noqa: E402

# OpenMP's default active spin-wait makes a 2-thread step ~5x slower when another process
# holds a core (docs/performance.md); PASSIVE costs nothing measurable on an idle machine.
# It only takes effect if set before torch starts its thread pool, i.e. before `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ganomaly.detector import GANomalyDetector, NotFittedError  # noqa: E402

__all__ = ["GANomalyDetector", "NotFittedError", "__version__"]
