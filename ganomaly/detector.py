"""GANomalyDetector: the estimator every face (CLI, server, export, benchmark) is built on.

Example:
    >>> from ganomaly import GANomalyDetector
    >>> detector = GANomalyDetector(epochs=15, image_size=32).fit("data/train")  # normal images
    >>> detector.decision_function(["a.png", "b.png"])     # raw scores, higher = more abnormal
    >>> detector.predict(images)                           # 0/1 against detector.threshold_
    >>> detector.predict_proba(images)                     # (N, 2): P(normal), P(anomaly)
    >>> detector.save("model.pt"); GANomalyDetector.load("model.pt")

It keeps PyOD's `BaseDetector` contract (`fit`, `decision_function`, `predict`,
`predict_proba`, `predict_confidence`, `fit_predict`, `labels_`, `decision_scores_`,
`threshold_`, `contamination`), with one difference that follows from GANomaly's validation
split: the threshold and the probability calibration come from the scores of the held-out
validation normals (`val_scores_`), not from the scores of the images that trained the weights,
which are lower than a new normal image's would be.

The faces use only its public methods: `preprocess`, `score` / `score_preprocessed` /
`score_files`, `reconstruct_preprocessed`, `refit_threshold`, `annotate`, `model_card`,
`save` / `load`, and the fitted attributes below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ganomaly import __version__, distributed
from ganomaly.config import (
    DEFAULT_MAX_PIXELS,
    INFERENCE_DEVICE,
    ConfigError,
    DetectorConfig,
    detector_fields,
    from_dict,
    spell,
    stored_settings,
)
from ganomaly.image_files import array_layout
from ganomaly.images import (
    IMAGE_KINDS,
    ImageError,
    find_images,
    load_image,
    natural_channels,
    preprocess,
    to_display,
)
from ganomaly.model import (
    Generator,
    SkipDiscriminator,
    UnetGenerator,
    build_networks,
)
from ganomaly.modelfile import (
    FORMAT,
    FORMAT_VERSION,
    ModelFileError,
    atomic_save,
    build_checked,
    load_model_file,
    plain,
)
from ganomaly.process import release_free_memory, scoped_threads
from ganomaly.results import FileResult
from ganomaly.scoring import ScorerBase, fit_threshold, make_scorer, score_tensor
from ganomaly.training import LossHook, TrainState, make_optimizers, train

if TYPE_CHECKING:
    from sklearn.exceptions import NotFittedError

ImagesLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | np.ndarray | Tensor | Any
EpochHook = Callable[[TrainState], Any]

__all__ = ["FileResult", "GANomalyDetector", "NotFittedError", "Scores"]

THRESHOLD_FROM_VALIDATION = "validation normals held out of train (quantile)"
THRESHOLD_FROM_CONTAMINATION = "validation normals held out of train (1 - contamination quantile)"
THRESHOLD_FIXED = "fixed --threshold"
PROBA_METHODS = ("linear", "unify")
REPR_WIDTH = 80  # scikit-learn's repr wraps its parameter list at this width


def __getattr__(name: str) -> Any:
    # NotFittedError is scikit-learn's, so `except sklearn.exceptions.NotFittedError` catches
    # ours; it is imported only when asked for, because importing scikit-learn takes over a
    # second and tens of MB that fitting and scoring do not need.
    if name == "NotFittedError":
        from sklearn.exceptions import NotFittedError

        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_device(name: str, style: str = "flag") -> torch.device:
    """'auto' -> cuda when available, else cpu. `style` names the setting in an error as a
    flag or as a parameter (see `ganomaly.config.spell`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{spell('device', name, style)}: CUDA is not available on this machine")
    return torch.device(name)


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_index, val_index) of n normal images: a seeded random `fraction` held out."""
    n_val = max(1, int(round(fraction * n)))
    if n - n_val < 2:
        # ConfigError (a ValueError): the CLI reports it in one line, not as a traceback
        raise ConfigError(f"{n} normal images are too few to hold out {n_val} for validation")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def image_paths(X: Any) -> list[Path] | None:
    """The image files X names (a folder: its images, recursively, in sorted path order),
    or None when X is not files but an array-like."""
    if isinstance(X, str | os.PathLike):
        path = Path(X)
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise ImageError(f"{path}: no images found ({IMAGE_KINDS})")
            return found
        return [path]
    if isinstance(X, list | tuple) and X and all(isinstance(p, str | os.PathLike) for p in X):
        return [Path(p) for p in X]
    return None


def _guess_channels(X: Any) -> int:
    paths = image_paths(X)
    if paths is not None:
        return natural_channels(paths[0])
    array = _as_array(X)
    return 1 if array.shape[1] == 1 else 3


def _as_array(X: Any, layout: str | None = None) -> Tensor:
    """An array, tensor or Dataset of images -> a tensor (N, C, H, W), its values untouched.
    The layout is read from the shape (`ganomaly.image_files.array_layout`) unless given."""
    if isinstance(X, torch.utils.data.Dataset) and not isinstance(X, Tensor):
        items = [X[i] for i in range(len(X))]  # type: ignore[arg-type]
        items = [item[0] if isinstance(item, tuple | list) else item for item in items]
        X = torch.stack([torch.as_tensor(np.asarray(item)) for item in items])
    # contiguous: torch refuses numpy's negative strides, which BGR -> RGB (`[..., ::-1]`) makes
    tensor = torch.as_tensor(np.ascontiguousarray(X)) if not isinstance(X, Tensor) else X
    found = array_layout(tensor.shape, layout)
    if found == "NHW":
        return tensor[:, None]
    if found == "NHWC":
        return tensor.permute(0, 3, 1, 2)
    return tensor


def load_images(
    X: ImagesLike,
    size: tuple[int, int],
    channels: int,
    interpolation: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    layout: str | None = None,
) -> Tensor:
    """Any accepted input -> preprocessed float tensor (N, C, H, W) in [-1, 1].

    Arrays may be (N, H, W), (N, H, W, C) or (N, C, H, W) (`layout` says which when the shape
    cannot). Image files that cannot be read are reported together in one ImageError.
    """
    paths = image_paths(X)
    if paths is None:
        return preprocess(_as_array(X, layout), size, channels, interpolation)
    tensors, errors = [], []
    for path in paths:
        try:
            array = load_image(path, channels, max_pixels)
            tensors.append(preprocess(array[None], size, channels, interpolation))
        except ImageError as error:
            errors.append(str(error))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ImageError(errors[0] + more)
    return torch.cat(tensors)


@contextlib.contextmanager
def seeded_randomness(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global RNG seeded with `seed` inside the block; the caller's RNG states are
    restored after it (the CPU generator, and the CUDA generators when CUDA is in use)."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        if cuda:
            torch.manual_seed(seed)  # CPU and every CUDA generator: all forked above
        else:
            torch.default_generator.manual_seed(seed)
        yield


@dataclass
class Scores:
    """Scores of a batch of images, one entry per image in input order."""

    score: np.ndarray  # (N,) raw anomaly score, higher = more abnormal
    normalized_score: np.ndarray  # (N,) 0 ~ a typical normal image, 1 = the threshold
    is_anomaly: np.ndarray  # (N,) bool: score > threshold_
    maps: np.ndarray | None = None  # (N, H, W) anomaly maps at the model's resolution


def _signature() -> inspect.Signature:
    """The constructor's signature, made from DetectorConfig (the one place for defaults), so
    help(), IDEs and scikit-learn's estimator checks see every parameter."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
        for f in dataclasses.fields(DetectorConfig)
    ]
    return inspect.Signature(params)


class GANomalyDetector:
    """GANomaly as a scikit-learn / PyOD style estimator.

    Parameters are the fields of `DetectorConfig` (image_size, nz, ngf, epochs, batch_size,
    lr, w_adv, w_con, w_enc, seed, val_fraction, threshold_quantile, contamination,
    threshold, ...), defaults included; `inspect.signature(GANomalyDetector)` lists them.

    Threshold rules, at most one given: `threshold_quantile=q` (the q quantile of the
    validation normals' scores; none given: 0.99), `contamination=c` (PyOD's parameter: the
    1 - c quantile of the same scores), or a fixed raw `threshold`.

    Images X: a folder, image paths, a torch Dataset, or an array / tensor shaped (N, H, W)
    grey, (N, H, W, C) channels-last (as PIL and imageio give them) or (N, C, H, W), with C 1,
    3 or 4 in RGB(A) order (OpenCV's BGR: `images[..., ::-1]`); uint8 or other integers in
    0..255, floats in [0, 1].

    `model="skip-ganomaly"` trains Skip-GANomaly (U-Net generator, see docs/skip-ganomaly.md)
    with everything else the same.

    Fitted attributes (the same after `fit` and after `load`):
        generator_          the trained generator (GANomaly: E1 -> decoder -> E2; U-Net)
        discriminator_      the discriminator when the model scores with it (skip-ganomaly),
                            else None (GANomaly's only trains)
        scorer_             the scoring module (what `export` writes)
        channels_           image channels the model takes (1 or 3)
        threshold_          raw score threshold; `predict` is score > threshold_
        val_median_         median validation normal score (normalisation's zero)
        n_val_, val_scores_ the validation normal images' count and scores
        threshold_quantile_ the quantile used (None when the threshold was fixed or labelled)
        threshold_from_     how the threshold was fitted, in words
        decision_scores_    scores of every image given to `fit`, in input order (the part
                            that trained the weights and the validation part)
        labels_             decision_scores_ > threshold_ as 0/1 (what `fit_predict` returns)
        n_train_            the count of images that trained the weights
        history_            one dict per epoch (history.csv's columns)
        fit_seconds_        wall time of `fit`
        warnings_           warnings raised while fitting the threshold
        annotations_        facts attached with `annotate` (data, protocol, test metrics, ...)
    """

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(detector_fields()))
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(unknown)}")
        # scikit-learn's convention: every parameter is an attribute of its own name, stored
        # as given (clone checks identity); it is validated when fit builds the config.
        for field in dataclasses.fields(DetectorConfig):
            setattr(self, field.name, params.get(field.name, field.default))

    __init__.__signature__ = _signature()  # type: ignore[attr-defined]

    @property
    def config(self) -> DetectorConfig:
        """The parameters as a DetectorConfig (validated by `fit`)."""
        return from_dict(DetectorConfig, {name: getattr(self, name) for name in detector_fields()})

    # -- scikit-learn's parameter protocol (what clone, pipelines and grid searches call) ---
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every parameter by name, as stored. `deep` is scikit-learn's: no parameter holds an
        estimator, so there are no nested `name__sub` entries and both values give the same."""
        return {name: getattr(self, name) for name in detector_fields()}

    def set_params(self, **params: Any) -> GANomalyDetector:
        """Set parameters by name and return the detector; values are checked when `fit` builds
        the config (as scikit-learn's estimators do), names now: an unknown one is a ValueError
        listing the valid ones, and nothing is set."""
        valid = detector_fields()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(
                f"invalid parameter(s) {', '.join(map(repr, unknown))} for {type(self).__name__}; "
                f"valid parameters are: {', '.join(sorted(valid))}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        """scikit-learn's style: the parameters whose value differs from the default (compared
        by repr, so image_size=32 is not the default "32"), sorted by name, on one line when
        it fits in REPR_WIDTH columns, else wrapped under the opening parenthesis."""
        defaults = {f.name: f.default for f in dataclasses.fields(DetectorConfig)}
        items = [
            f"{name}={value!r}"
            for name, value in sorted(self.get_params(deep=False).items())
            if repr(value) != repr(defaults[name])
        ]
        head = f"{type(self).__name__}("
        if len(head) + len(", ".join(items)) + 1 <= REPR_WIDTH:
            return head + ", ".join(items) + ")"
        lines = [head]
        for i, item in enumerate(items):
            last = i == len(items) - 1
            item += ")" if last else ","
            # the line that closes keeps one column free, as scikit-learn's printer does
            if lines[-1] == head:
                lines[-1] += item
            elif len(lines[-1]) + 1 + len(item) <= REPR_WIDTH - (1 if last else 0):
                lines[-1] += " " + item
            else:
                lines.append(" " * len(head) + item)
        return "\n".join(lines)

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's estimator tags (read by its meta-estimators from version 1.6 on): the
        defaults of its BaseEstimator. scikit-learn is imported here, only when it asks."""
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
        )

    # -- fitting --------------------------------------------------------------------------
    def fit(
        self,
        X: ImagesLike,
        y: Any = None,
        *,
        on_epoch: EpochHook | None = None,
        resume: dict[str, Any] | None = None,
        stop_requested: Callable[[], bool] | None = None,
        on_losses: LossHook | None = None,
    ) -> GANomalyDetector:
        """Train on normal images X (labels are not used: `y` exists for API symmetry).

        A seeded `val_fraction` of X is held out: it fits the threshold and the normalisation,
        never the weights. `on_epoch(state)` is called after every epoch and at checkpoint
        steps; `resume` is a checkpoint dict to continue from (see `ganomaly.checkpoint`);
        `stop_requested()` true stops at the next step boundary (after `on_epoch` saved);
        `on_losses(global_step, losses)` is called after every step. Each epoch is logged as
        one INFO line on the `ganomaly.training` logger (silent unless logging is set up).
        Torch's global RNG states and thread count are the same after the call as before.
        """
        started = time.perf_counter()
        config = self.config
        config.validate(style="param")
        # torchrun: each rank its own GPU
        device = distributed.local_device(resolve_device(config.device, style="param"))
        channels = config.channels or _guess_channels(X)
        size = config.image_hw()
        images = load_images(X, size, channels, config.interpolation, config.max_pixels)
        train_index, val_index = validation_split(
            len(images), config.val_fraction, config.split_seed
        )
        val_images = images[val_index]
        # One seeded stream draws the initial weights and, after them, D's re-inits.
        with scoped_threads(config.threads), seeded_randomness(config.seed, device):
            generator, discriminator = build_networks(
                config.model, size, channels, config.nz, config.ngf, config.extra_layers
            )
            generator.to(device)
            discriminator.to(device)
            optimizer_g, optimizer_d = make_optimizers(generator, discriminator, config)
            state = TrainState(generator, discriminator, optimizer_g, optimizer_d, config)
            if resume is not None:
                from ganomaly.checkpoint import restore_state

                restore_state(state, resume)
            probe = make_scorer(config, generator, discriminator, 1.0, 0.0)

            def score_val() -> np.ndarray:
                return score_tensor(probe, val_images, bn_mode=config.bn_mode, device=device)[0]

            train(
                state,
                images[train_index].to(device),
                score_val,
                on_epoch,
                stop_requested,
                on_losses,
            )
            val_scores = score_val()
            fit = fit_threshold(val_scores, config.threshold_rule_quantile(), config.threshold)
            self.channels_ = channels
            self.generator_ = generator
            self.discriminator_ = discriminator if config.model == "skip-ganomaly" else None
            self._set_threshold(fit.threshold, fit.median, val_scores, fit.quantile)
            self.threshold_from_ = (
                THRESHOLD_FIXED
                if config.threshold is not None
                else THRESHOLD_FROM_CONTAMINATION
                if config.contamination is not None
                else THRESHOLD_FROM_VALIDATION
            )
            self.warnings_ = fit.warnings
            self.history_ = state.history
            self.n_train_ = len(train_index)
            self.annotations_: dict[str, Any] = {}
            self.decision_scores_ = self.score_preprocessed(images).score.astype(np.float64)
            self._label_fit_images()
        release_free_memory()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def fit_predict(self, X: ImagesLike, y: Any = None, **fit_params: Any) -> np.ndarray:
        """`fit(X)`, then the 0/1 labels of every image of X (`labels_`), in input order."""
        return self.fit(X, y, **fit_params).labels_

    def _label_fit_images(self) -> None:
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)

    def _set_threshold(
        self, threshold: float, median: float, val_scores: np.ndarray, quantile: float | None
    ) -> None:
        self.threshold_ = float(threshold)
        self.val_median_ = float(median)
        self.val_scores_ = np.asarray(val_scores, dtype=np.float64)
        self.n_val_ = len(self.val_scores_)
        self.threshold_quantile_ = quantile
        self.scorer_: ScorerBase = make_scorer(
            self.config, self.generator_, self.discriminator_, self.threshold_, self.val_median_
        )

    def refit_threshold(self, X: ImagesLike, y: Any = None) -> GANomalyDetector:
        """Refit normalisation and threshold on a labelled set X (y: 1 = abnormal, 0 = normal;
        None: all normal), keeping the weights.

        The median comes from its normal images. With defects in it, the threshold is the one
        that maximises F1 on it (flagged = score > threshold): a few known defects say more
        about where to cut than a quantile of normals. Without defects, or with a fixed
        `threshold` parameter, the usual rule applies to its normal images.
        """
        from ganomaly.metrics import image_metrics

        self._check_fitted()
        config = self.config
        scores = self.score(X).score
        labels = np.zeros(len(scores), np.int64) if y is None else np.asarray(y).astype(np.int64)
        if labels.shape != scores.shape:
            raise ValueError(f"y has {labels.size} labels for {scores.size} images")
        normal = scores[labels == 0]
        fit = fit_threshold(normal, config.threshold_rule_quantile(), config.threshold)
        threshold, quantile = fit.threshold, fit.quantile
        n_defects = int(labels.sum())
        note = f"labelled set: {fit.n_val} normal images (quantile {quantile})"
        if n_defects and config.threshold is None:
            best = image_metrics(labels, scores, fit.threshold)["best_f1_oracle_threshold"]
            assert best is not None  # both kinds of image are present
            threshold, quantile = float(best), None
            note = f"labelled set: best F1 over {fit.n_val} normal and {n_defects} defect images"
        elif config.threshold is not None:
            note = f"{THRESHOLD_FIXED}; median from a labelled set's normal images"
        self._set_threshold(threshold, fit.median, normal, quantile)
        self._label_fit_images()
        self.threshold_from_ = note
        self.warnings_ = fit.warnings
        return self

    def annotate(self, **facts: Any) -> GANomalyDetector:
        """Attach facts about the data and its evaluation (data, protocol, target_class,
        data_source, normal_classes, metrics, ...) to the model card; `save` keeps them."""
        self._check_fitted()
        self.annotations_ = {**self.annotations_, **plain(facts)}
        return self

    # -- scoring --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "scorer_"):
            from sklearn.exceptions import NotFittedError  # the error path only: see __getattr__

            raise NotFittedError("this GANomalyDetector is not fitted yet: call fit() or load()")

    @property
    def device_(self) -> torch.device:
        """Where the model's weights are."""
        self._check_fitted()
        return next(self.generator_.parameters()).device

    def preprocess(self, X: ImagesLike, layout: str | None = None) -> Tensor:
        """X -> the model's input tensor (N, C, H, W) in [-1, 1], by the one preprocessing.

        `layout` ("NCHW", "NHWC" or "NHW") says how an array's axes are laid out; by default
        it is read from the shape, which is ambiguous only for image sides of 1, 3 or 4 pixels.
        """
        self._check_fitted()
        config = self.config
        return load_images(
            X, config.image_hw(), self.channels_, config.interpolation, config.max_pixels, layout
        )

    def score_preprocessed(
        self, images: Tensor, batch_size: int = 256, with_maps: bool = False
    ) -> Scores:
        """Score images already through `preprocess` (the faces' path: they preprocess file
        by file, then score in batches). A score does not depend on the batch."""
        self._check_fitted()
        scores, normalized, maps = score_tensor(
            self.scorer_, images, batch_size, self.config.bn_mode, with_maps, self.device_
        )
        return Scores(scores, normalized, scores > self.threshold_, maps)

    def score(self, X: ImagesLike, batch_size: int = 256, with_maps: bool = False) -> Scores:
        """Everything about X at once: score, normalized_score, is_anomaly (and maps).
        A folder is scored in sorted path order (`image_paths(folder)` lists them)."""
        return self.score_preprocessed(self.preprocess(X), batch_size, with_maps)

    def score_files(
        self, paths: Sequence[str | os.PathLike[str]], batch_size: int = 64, with_maps: bool = False
    ) -> list[FileResult]:
        """Score image files one record each, in input order; a file that cannot be read gets
        its `error` and the others are still scored."""
        self._check_fitted()
        records = [FileResult(str(path)) for path in paths]
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            good, tensors = [], []
            for record in batch:
                try:
                    tensors.append(self.preprocess([record.path]))
                    good.append(record)
                except ImageError as error:
                    record.error = str(error).removeprefix(f"{record.path}: ")
            if not good:
                continue
            result = self.score_preprocessed(torch.cat(tensors), batch_size, with_maps)
            for i, record in enumerate(good):
                record.score = float(result.score[i])
                record.normalized_score = float(result.normalized_score[i])
                record.is_anomaly = bool(result.is_anomaly[i])
                record.anomaly_map = None if result.maps is None else result.maps[i]
        return records

    def decision_function(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """Raw anomaly scores (N,): higher = more abnormal."""
        return self.score(X, batch_size).score

    def normalized_score(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """(score - median) / (threshold - median): 0 ~ typical normal, 1 = the threshold."""
        return self.score(X, batch_size).normalized_score

    def predict(
        self, X: ImagesLike, batch_size: int = 256, return_confidence: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """1 = anomaly (score > threshold_), 0 = normal, int64 (N,); with `return_confidence`,
        also `predict_confidence(X)`."""
        scores = self.decision_function(X, batch_size)
        labels = (scores > self.threshold_).astype(np.int64)
        return (labels, self._confidence(scores)) if return_confidence else labels

    def predict_proba(
        self,
        X: ImagesLike,
        method: str = "linear",
        return_confidence: bool = False,
        batch_size: int = 256,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """PyOD's outlier probability: float64 (N, 2), columns P(normal) and P(anomaly), each
        row summing to 1; with `return_confidence`, also `predict_confidence(X)`.

        Both methods are PyOD's, calibrated on the validation normals' scores (PyOD uses the
        training scores; ours trained the weights, so they are lower than a new normal's):
            "linear": P(anomaly) = min-max scaling of the score by the validation scores,
                      clipped to [0, 1];
            "unify":  P(anomaly) = erf((score - mean) / (std * sqrt(2))) clipped to [0, 1],
                      mean and (population) std of the validation scores (Kriegel et al.,
                      "Interpreting and unifying outlier scores", SDM 2011).
        """
        if method not in PROBA_METHODS:
            raise ValueError(f"method={method!r}: choose one of {', '.join(PROBA_METHODS)}")
        scores = self.decision_function(X, batch_size).astype(np.float64)
        reference = self._calibration_scores()
        if method == "linear":
            low, high = float(reference.min()), float(reference.max())
            # a constant reference is scaled by 1, as scikit-learn's MinMaxScaler does (PyOD's)
            anomaly = (scores - low) / ((high - low) or 1.0)
        else:
            from scipy.special import erf

            mean, std = float(reference.mean()), float(reference.std())
            # a constant reference would divide by 0 (PyOD's gives NaN): scale by 1 as above
            anomaly = erf((scores - mean) / ((std or 1.0) * np.sqrt(2.0)))
        proba = np.empty((len(scores), 2), dtype=np.float64)
        proba[:, 1] = np.clip(anomaly, 0.0, 1.0)
        proba[:, 0] = 1.0 - proba[:, 1]
        return (proba, self._confidence(scores)) if return_confidence else proba

    def predict_confidence(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """PyOD's confidence in each `predict` label, float64 (N,) in [0, 1]: how surely the
        same label would come out of a slightly different calibration set (Perini et al.,
        "Quantifying the confidence of anomaly detectors in their example-wise predictions",
        ECML PKDD 2020), with the validation normals as that set."""
        return self._confidence(self.decision_function(X, batch_size).astype(np.float64))

    def _calibration_scores(self) -> np.ndarray:
        if not len(self.val_scores_):
            raise ValueError(
                "this model holds no validation scores (a model file of format version 1): "
                "refit_threshold(X) with normal images X gives it some"
            )
        return self.val_scores_

    def _confidence(self, scores: np.ndarray) -> np.ndarray:
        """PyOD's `predict_confidence` from scores, with the validation scores as reference
        and, as the share of them that is flagged, 1 - threshold_quantile_ (PyOD's
        contamination), or for a fixed or labelled threshold the share above threshold_ (what
        PyOD uses when its threshold is not a contamination)."""
        from scipy.stats import binom

        reference = self._calibration_scores()
        n = len(reference)
        if self.threshold_quantile_ is not None:
            flagged_share = 1.0 - self.threshold_quantile_
        else:
            flagged_share = float(np.mean(reference > self.threshold_))
        # floor with a tolerance: 1 - (1 - c) is not c in floating point (20 * (1 - 0.9) is
        # 1.9999999999999996), and PyOD's int(n * contamination) means the exact product
        n_flagged = math.floor(n * flagged_share + 1e-9)
        below = np.searchsorted(np.sort(reference), scores, side="right")  # count <= score
        p_outlier = (1.0 + below) / (2.0 + n)  # PyOD's Bayesian estimate with a uniform prior
        confidence = 1.0 - binom.cdf(n - n_flagged, n, p_outlier)
        predicted_normal = scores <= self.threshold_
        confidence[predicted_normal] = 1.0 - confidence[predicted_normal]
        return np.asarray(confidence, dtype=np.float64)

    def anomaly_map(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """Smoothed |x - x_hat| per pixel at the model's resolution, (N, H, W)."""
        maps = self.score(X, batch_size, with_maps=True).maps
        assert maps is not None
        return maps

    @torch.inference_mode()
    def reconstruct_preprocessed(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """x_hat for preprocessed images, in model space [-1, 1], on the CPU."""
        self._check_fitted()
        self.scorer_.eval()
        parts = [
            self.scorer_.reconstruct(images[start : start + batch_size].to(self.device_))
            .float()
            .cpu()
            for start in range(0, len(images), batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros_like(images)

    def reconstruct(self, X: ImagesLike) -> tuple[np.ndarray, np.ndarray]:
        """(x, x_hat) as [0, 1] arrays (N, C, H, W), for figures and the web page."""
        x = self.preprocess(X)
        return to_display(x), to_display(self.reconstruct_preprocessed(x))

    # -- description and persistence ------------------------------------------------------
    def model_card(self) -> dict[str, Any]:
        """What the model is, how it scores and how it was made: model.pt's `card`, the
        server's /v1/model, the export metadata and the report all show this."""
        self._check_fitted()
        config = self.config
        seconds = sum(row["seconds"] for row in self.history_)
        images = sum(row["images_per_second"] * row["seconds"] for row in self.history_)
        model = (
            {"model": config.model, "score_lambda": config.score_lambda}
            if config.model == "skip-ganomaly"
            else {"model": config.model, "score_metric": config.score_metric}
        )
        return plain(
            {
                **model,
                "image_size": list(config.image_hw()),
                "channels": int(self.channels_),
                "interpolation": config.interpolation,
                "value_range": [-1.0, 1.0],
                "bn_mode": config.bn_mode,
                "map_sigma": float(config.map_sigma),
                "threshold": self.threshold_,
                "threshold_quantile": self.threshold_quantile_,
                "threshold_from": self.threshold_from_,
                "val_median": self.val_median_,
                "n_val": self.n_val_,
                "is_anomaly": "score > threshold",
                "normalized_score": "(score - val_median) / (threshold - val_median)",
                "epochs": config.epochs,
                "seed": config.seed,
                "training": {
                    "n_train": self.n_train_,
                    "train_seconds": round(self.fit_seconds_, 3),
                    "train_images_per_second": round(images / seconds, 2) if seconds else 0.0,
                    "d_reinits": int(sum(row["d_reinits"] for row in self.history_)),
                },
                **self.annotations_,
                "versions": {"ganomaly": __version__, "torch": str(torch.__version__)},
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The model.pt content (see `ganomaly.modelfile`)."""
        self._check_fitted()
        config = self.config
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": dataclasses.asdict(config),
            "generator": _cpu_state(self.generator_),
            **(
                {"discriminator": _cpu_state(self.discriminator_)}
                if self.discriminator_ is not None
                else {}
            ),
            "image_size": list(config.image_hw()),
            "channels": int(self.channels_),
            "interpolation": config.interpolation,
            "bn_mode": config.bn_mode,
            "score_metric": config.score_metric,
            "threshold": float(self.threshold_),
            "val_median": float(self.val_median_),
            "n_val": int(self.n_val_),
            "threshold_quantile": self.threshold_quantile_,
            "map_sigma": float(config.map_sigma),
            "versions": {"ganomaly": __version__, "torch": str(torch.__version__)},
            "val_scores": torch.as_tensor(self.val_scores_, dtype=torch.float64),
            "decision_scores": torch.as_tensor(self.decision_scores_, dtype=torch.float64),
            "fitted": plain(
                {
                    "threshold_from": self.threshold_from_,
                    "history": self.history_,
                    "n_train": self.n_train_,
                    "fit_seconds": self.fit_seconds_,
                    "warnings": self.warnings_,
                    "annotations": self.annotations_,
                }
            ),
            "card": self.model_card(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write model.pt (atomically); a directory gets `model.pt` inside it."""
        target = Path(path)
        if target.is_dir():
            target = target / "model.pt"
        atomic_save(self.to_dict(), target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = INFERENCE_DEVICE) -> GANomalyDetector:
        """Load a model.pt or a run directory holding one (weights_only: runs no code).

        Reads this version's files and version 1's (which lack the validation and training
        scores: those attributes are then empty arrays)."""
        target = Path(path)
        if target.is_dir():
            target = target / "model.pt"
        obj = load_model_file(target)
        try:
            config = from_dict(DetectorConfig, stored_settings(obj["config"]))
            config.validate(style="param")
        except (ConfigError, TypeError) as error:
            raise ModelFileError(f"{target}: damaged model file ({error})") from None
        detector = cls(**{**dataclasses.asdict(config), "device": device})
        h, w = config.image_hw()
        if list(obj["image_size"]) != [h, w] or obj["channels"] not in (1, 3):
            raise ModelFileError(f"{target}: damaged model file (image size or channels)")
        channels, where = int(obj["channels"]), resolve_device(device)
        discriminator: SkipDiscriminator | None = None
        generator: nn.Module
        if config.model == "skip-ganomaly":
            if not isinstance(obj.get("discriminator"), dict):
                raise ModelFileError(f"{target}: damaged model file (no discriminator weights)")
            generator = build_checked(
                target, obj["generator"], lambda: UnetGenerator((h, w), channels, config.ngf)
            )
            discriminator = build_checked(
                target,
                obj["discriminator"],
                lambda: SkipDiscriminator((h, w), config.nz, channels, config.ngf),
            )
            discriminator.to(where).eval()
        else:
            generator = build_checked(
                target,
                obj["generator"],
                lambda: Generator((h, w), config.nz, channels, config.ngf, config.extra_layers),
            )
        generator.to(where).eval()
        fitted = _fitted_facts(obj)
        detector.channels_ = channels
        detector.generator_ = generator
        detector.discriminator_ = discriminator
        val_scores = np.asarray(obj.get("val_scores", torch.zeros(0)), dtype=np.float64)
        detector._set_threshold(
            obj["threshold"], obj["val_median"], val_scores, obj.get("threshold_quantile")
        )
        detector.n_val_ = int(obj["n_val"])  # version 1 files keep the count, not the scores
        detector.threshold_from_ = str(fitted["threshold_from"])
        detector.warnings_ = list(fitted["warnings"])
        detector.history_ = list(fitted["history"])
        detector.n_train_ = int(fitted["n_train"])
        detector.annotations_ = dict(fitted["annotations"])
        detector.decision_scores_ = np.asarray(
            obj.get("decision_scores", torch.zeros(0)), dtype=np.float64
        )
        detector._label_fit_images()
        detector.fit_seconds_ = float(fitted["fit_seconds"])
        return detector


def _cpu_state(network: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in network.state_dict().items()}


ANNOTATION_KEYS_V1 = ("data", "protocol", "target_class", "data_source", "normal_classes")


def _fitted_facts(obj: dict[str, Any]) -> dict[str, Any]:
    """The training facts of a model file: its `fitted` record, or (format version 1) what
    the old free-form card held."""
    if "fitted" in obj:
        return dict(obj["fitted"])
    card = dict(obj.get("card") or {})
    annotations = {k: card[k] for k in ANNOTATION_KEYS_V1 if k in card}
    if "metrics" in card:
        annotations["metrics"] = card["metrics"]
    return {
        "threshold_from": card.get("threshold_from", THRESHOLD_FROM_VALIDATION),
        "history": card.get("history", []),
        "n_train": card.get("n_train", 0),
        "fit_seconds": card.get("train_seconds", 0.0),
        "warnings": [],
        "annotations": annotations,
    }
