"""The estimator is the contract: scikit-learn's conventions, the same fitted attributes after
`fit` and after `load`, version-1 model files still load, faces use public methods only, and
neither importing the library nor fitting changes anything outside it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sklearn.base
import torch

from ganomaly import GANomalyDetector
from ganomaly.config import DetectorConfig
from tests._trained import FASTEST, estimator_params, trained_run

PACKAGE = Path(__file__).resolve().parents[1] / "ganomaly"
FACES = ("cli", "run", "predict", "server", "export", "benchmark", "report")
PARAMS = {"image_size": 16, "ngf": 8, "nz": 16, "epochs": 1, "batch_size": 32, "progress": False}


def digits_uint8() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]


def test_signature_lists_every_config_field_with_its_default() -> None:
    parameters = inspect.signature(GANomalyDetector).parameters
    fields = dataclasses.fields(DetectorConfig)
    assert list(parameters) == [f.name for f in fields]
    assert all(parameters[f.name].default == f.default for f in fields)
    assert "epochs=15" in str(inspect.signature(GANomalyDetector))


def test_clone_get_params_and_set_params_round_trip() -> None:
    detector = GANomalyDetector(**PARAMS)
    params = detector.get_params()
    assert params == {**{f.name: f.default for f in dataclasses.fields(DetectorConfig)}, **PARAMS}
    copy = sklearn.base.clone(detector)
    assert copy is not detector and copy.get_params() == params
    assert copy.set_params(epochs=3) is copy and copy.get_params()["epochs"] == 3
    assert detector.get_params()["epochs"] == 1  # the clone is independent
    with pytest.raises(ValueError, match="no_such"):
        copy.set_params(no_such=1)
    assert repr(detector).startswith("GANomalyDetector(") and "ngf=8" in repr(detector)
    assert "lr=" not in repr(detector)  # defaults are not shown


@pytest.fixture(scope="module")
def fitted() -> GANomalyDetector:
    images = digits_uint8()[:120]
    return GANomalyDetector(**PARAMS).fit(images)


def test_a_loaded_detector_has_exactly_the_fitted_attributes(
    fitted: GANomalyDetector, tmp_path: Path
) -> None:
    loaded = GANomalyDetector.load(fitted.save(tmp_path / "model.pt"))
    assert sorted(vars(loaded)) == sorted(vars(fitted))
    for name in ("threshold_", "val_median_", "n_val_", "n_train_", "threshold_from_"):
        assert getattr(loaded, name) == getattr(fitted, name), name
    np.testing.assert_array_equal(loaded.val_scores_, fitted.val_scores_)
    np.testing.assert_array_equal(loaded.decision_scores_, fitted.decision_scores_)
    assert loaded.history_ == fitted.history_ and loaded.warnings_ == fitted.warnings_
    assert loaded.model_card() == fitted.model_card()
    np.testing.assert_allclose(
        loaded.decision_function(digits_uint8()[:30]),
        fitted.decision_function(digits_uint8()[:30]),
        rtol=1e-6,
    )


def test_model_file_of_format_version_1_still_loads_and_scores_the_same() -> None:
    """tests/data/model-v1.pt and its scores were written by the code of format version 1."""
    data = Path(__file__).parent / "data"
    expected = json.loads((data / "model-v1-scores.json").read_text())
    detector = GANomalyDetector.load(data / "model-v1.pt")
    assert detector.threshold_ == expected["threshold"]
    result = detector.score(digits_uint8()[:20])
    np.testing.assert_allclose(result.score, expected["score"], rtol=1e-5)
    np.testing.assert_allclose(result.normalized_score, expected["normalized_score"], atol=1e-5)
    card = detector.model_card()
    assert card["data"] == "digits" and card["metrics"]["auroc"] == pytest.approx(0.90626, 1e-4)
    assert card["training"]["n_train"] == 128 and detector.n_val_ == 14


def test_the_cli_run_card_is_what_server_export_and_model_file_show(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run = trained_run(tmp_path_factory)
    detector = GANomalyDetector.load(run)
    stored = torch.load(run / "model.pt", weights_only=True)["card"]
    assert stored == detector.model_card()
    metrics = json.loads((run / "metrics.json").read_text())
    assert stored["metrics"]["auroc"] == pytest.approx(metrics["auroc"])
    assert stored["training"]["n_train"] == metrics["n_train"]
    from ganomaly.export import export_metadata

    assert export_metadata(detector).items() >= stored.items()


def _private_detector_uses(path: Path) -> list[str]:
    """`x._name` where x is a detector-like expression (`detector`, `self.detector`, ...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = ast.unparse(node.value)
            if not node.attr.startswith("__") and owner.split(".")[-1] == "detector":
                found.append(f"{path.name}:{node.lineno}: {owner}.{node.attr}")
    return found


def test_no_face_reaches_into_the_detector() -> None:
    uses = [use for face in FACES for use in _private_detector_uses(PACKAGE / f"{face}.py")]
    assert uses == []
    for face in FACES:
        assert "detector: Any" not in (PACKAGE / f"{face}.py").read_text(), face


def test_the_private_use_check_finds_private_uses(tmp_path: Path) -> None:
    sample = tmp_path / "face.py"
    sample.write_text("def f(service):\n    return service.detector._score(1)\n")
    assert _private_detector_uses(sample) == ["face.py:2: service.detector._score"]


# A fresh interpreter: torch, numpy and scikit-learn are imported first (their own import
# effects are not ours), then the process state is compared before and after.
STATE_PROBE = """
import json, os, random, sys, warnings
import numpy as np, sklearn, torch

def state():
    return {
        "environ": dict(os.environ),
        "torch_rng": torch.get_rng_state().tolist(),
        "python_rng": repr(random.getstate()),
        "numpy_rng": repr(np.random.get_state()),
        "threads": torch.get_num_threads(),
        "formatwarning": repr(warnings.formatwarning),
        "showwarning": repr(warnings.showwarning),
        "cudnn": [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
    }

before = state()
import importlib, pathlib
import ganomaly, ganomaly.cli, ganomaly.detector
for path in sorted(pathlib.Path(ganomaly.__file__).parent.glob("*.py")):
    if path.stem != "__main__":  # that one runs the command
        importlib.import_module(f"ganomaly.{path.stem}")
after_import = state()
from sklearn.datasets import load_digits
images = (load_digits().images[:80] * (255 / 16)).round().astype(np.uint8)[:, None]
other = 2 if before["threads"] == 1 else 1  # fit must restore a count it really changed
ganomaly.GANomalyDetector(image_size=16, ngf=8, nz=16, epochs=1, batch_size=32, threads=other,
                          progress=False, seed=4).fit(images)
after_fit = state()
print(json.dumps({"import": [k for k in before if before[k] != after_import[k]],
                  "fit": [k for k in before if before[k] != after_fit[k]]}))
"""


def test_importing_and_fitting_change_nothing_outside_the_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", STATE_PROBE], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    changed = json.loads(result.stdout.strip().splitlines()[-1])
    assert changed["import"] == [] and changed["fit"] == []


def test_main_restores_the_warning_format(tmp_path: Path) -> None:
    import warnings

    from ganomaly.cli import main

    before = warnings.formatwarning
    assert main(["predict", str(tmp_path / "no-model"), "x.png"]) == 2
    assert warnings.formatwarning is before


def test_the_parser_imports_no_torch() -> None:
    probe = "import sys; from ganomaly.cli import build_parser; build_parser(); "
    probe += "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# A fresh interpreter: the library's own path from import to a loaded model, on random images.
# scikit-learn costs about a second and 70 MB to import; only the digits data and the
# not-fitted error use it. TorchDynamo (which torch.optim's first call imports) costs 1.7 s
# and 73 MB, and nothing here compiles; SciPy (0.4 s) is for pixel AUPRO alone. The metrics and
# the curves' figures come last.
NO_SKLEARN_PROBE = """
import json, sys, tempfile
import numpy as np
import ganomaly.detector
params = json.loads(sys.argv[1])
images = np.random.default_rng(0).integers(0, 256, (40, 16, 16), dtype=np.uint8)
detector = ganomaly.detector.GANomalyDetector(**params).fit(images)
detector.score(images[:4], with_maps=True)
with tempfile.TemporaryDirectory() as folder:
    loaded = ganomaly.detector.GANomalyDetector.load(detector.save(folder))
loaded.predict_proba(images[:4]), repr(loaded), loaded.get_params()
import ganomaly.metrics, ganomaly.figures
labels, scores = np.arange(40) % 2, detector.decision_scores_
ganomaly.metrics.image_metrics(labels, scores, detector.threshold_)
with tempfile.TemporaryDirectory() as folder:
    ganomaly.figures.roc_curve_plot(labels, scores, folder + "/roc.png")
    ganomaly.figures.pr_curve_plot(labels, scores, folder + "/pr.png")
print(sorted(name for name in sys.modules if name.split(".")[0] in ("sklearn", "sympy", "scipy")
             or name.startswith("torch._dynamo")))
"""


def test_fit_score_save_load_and_metrics_import_no_scikit_learn_nor_dynamo() -> None:
    params = json.dumps(estimator_params(FASTEST))
    result = subprocess.run(
        [sys.executable, "-c", NO_SKLEARN_PROBE, params],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
