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

from ganomaly.detector import GANomalyDetector, NotFittedError  # noqa: E402

__all__ = ["GANomalyDetector", "NotFittedError", "__version__"]
