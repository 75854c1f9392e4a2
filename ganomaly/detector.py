"""GANomalyDetector: the estimator every face (CLI, server, export) is built on.

Example:
    >>> from ganomaly import GANomalyDetector
    >>> detector = GANomalyDetector(epochs=15, image_size=32).fit("data/train")  # normal images
    >>> detector.decision_function(["a.png", "b.png"])     # raw scores, higher = more abnormal
    >>> detector.predict(images)                           # 0/1 against detector.threshold_
    >>> detector.save("model.pt"); GANomalyDetector.load("model.pt")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from torch import Tensor

from ganomaly import __version__, distributed
from ganomaly.config import ConfigError, DetectorConfig, detector_fields, from_dict
from ganomaly.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    find_images,
    load_image,
    natural_channels,
    preprocess,
    to_display,
)
from ganomaly.model import Generator, make_networks
from ganomaly.modelfile import (
    FORMAT,
    FORMAT_VERSION,
    ModelFileError,
    atomic_save,
    build_checked,
    load_model_file,
    plain,
)
from ganomaly.scoring import AnomalyScorer, fit_threshold, score_tensor
from ganomaly.training import TrainState, make_optimizers, train

ImagesLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | np.ndarray | Tensor | Any

__all__ = ["GANomalyDetector", "NotFittedError"]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_index, val_index) of n normal images: a seeded random `fraction` held out."""
    n_val = max(1, int(round(fraction * n)))
    if n - n_val < 2:
        # ConfigError (a ValueError): the CLI reports it in one line, not as a traceback
        raise ConfigError(f"{n} normal images are too few to hold out {n_val} for validation")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _image_paths(X: Any) -> list[Path] | None:
    if isinstance(X, str | os.PathLike):
        path = Path(X)
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise ImageError(f"{path}: no images found (png, jpg, bmp, tif, webp)")
            return found
        return [path]
    if isinstance(X, list | tuple) and X and all(isinstance(p, str | os.PathLike) for p in X):
        return [Path(p) for p in X]
    return None


def _guess_channels(X: Any) -> int:
    paths = _image_paths(X)
    if paths is not None:
        return natural_channels(paths[0])
    array = _as_array(X)
    return 1 if array.shape[1] == 1 else 3


def _as_array(X: Any) -> Tensor:
    if isinstance(X, torch.utils.data.Dataset) and not isinstance(X, Tensor):
        items = [X[i] for i in range(len(X))]  # type: ignore[arg-type]
        items = [item[0] if isinstance(item, tuple | list) else item for item in items]
        X = torch.stack([torch.as_tensor(np.asarray(item)) for item in items])
    tensor = torch.as_tensor(np.asarray(X)) if not isinstance(X, Tensor) else X
    if tensor.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), got {tuple(tensor.shape)}")
    return tensor


def load_images(
    X: ImagesLike,
    size: tuple[int, int],
    channels: int,
    interpolation: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Tensor:
    """Any accepted input -> preprocessed float tensor (N, C, H, W) in [-1, 1].

    Image files that cannot be read are collected and reported together in one ImageError.
    """
    paths = _image_paths(X)
    if paths is None:
        return preprocess(_as_array(X), size, channels, interpolation)
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


class GANomalyDetector:
    """GANomaly as a scikit-learn / PyOD style estimator.

    Parameters are the fields of `DetectorConfig` (image_size, nz, ngf, epochs, batch_size,
    lr, w_adv, w_con, w_enc, seed, val_fraction, threshold_quantile, ...), defaults included.

    Fitted attributes: `generator_`, `discriminator_`, `threshold_`, `val_median_`,
    `val_scores_`, `n_val_`, `decision_scores_` (training images), `history_`, `channels_`.
    """

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(detector_fields()))
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(unknown)}")
        self.params = params

    # -- parameters ---------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """All parameters, defaults filled in (scikit-learn convention)."""
        return dataclasses.asdict(self.config)

    def set_params(self, **params: Any) -> GANomalyDetector:
        """Change parameters; takes effect at the next fit."""
        unknown = sorted(set(params) - set(detector_fields()))
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(unknown)}")
        self.params = {**self.params, **params}
        return self

    @property
    def config(self) -> DetectorConfig:
        """The parameters as a validated-on-fit DetectorConfig."""
        config = from_dict(DetectorConfig, self.params)
        config.image_size = str(config.image_size)
        return config

    # -- fitting --------------------------------------------------------------------------
    def fit(
        self,
        X: ImagesLike,
        y: Any = None,
        *,
        on_epoch: Callable[[TrainState], Any] | None = None,
        resume: dict[str, Any] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> GANomalyDetector:
        """Train on normal images X (labels are not used: `y` exists for API symmetry).

        A seeded `val_fraction` of X is held out: it fits the threshold and the normalisation,
        never the weights. `on_epoch(state)` is called after every epoch and at checkpoint
        steps; `resume` is a checkpoint dict to continue from (see `ganomaly.checkpoint`);
        `stop_requested()` true stops at the next step boundary (after `on_epoch` saved).
        """
        config = self.config
        config.validate()
        if config.threads:
            torch.set_num_threads(config.threads)
        device = distributed.local_device(resolve_device(config.device))  # torchrun: own GPU
        channels = config.channels or _guess_channels(X)
        size = config.image_hw()
        images = load_images(X, size, channels, config.interpolation, config.max_pixels)
        train_index, val_index = validation_split(
            len(images), config.val_fraction, config.split_seed
        )
        generator, discriminator = make_networks(
            size, channels, config.nz, config.ngf, config.extra_layers, config.seed
        )
        generator.to(device)
        discriminator.to(device)
        optimizer_g, optimizer_d = make_optimizers(generator, discriminator, config)
        state = TrainState(generator, discriminator, optimizer_g, optimizer_d, config)
        if resume is not None:
            from ganomaly.checkpoint import restore_state

            restore_state(state, resume)
        val_images = images[val_index]
        probe = AnomalyScorer(generator, config.score_metric, 1.0, 0.0, 0.0)

        def score_val() -> np.ndarray:
            return score_tensor(probe, val_images, bn_mode=config.bn_mode, device=device)[0]

        train(state, images[train_index].to(device), score_val, on_epoch, stop_requested)

        fit = fit_threshold(score_val(), config.threshold_quantile, config.threshold)
        self.channels_ = channels
        self.generator_ = generator
        self.discriminator_ = discriminator
        self.train_state_ = state
        self.history_ = state.history
        self.threshold_ = fit.threshold
        self.val_median_ = fit.median
        self.n_val_ = fit.n_val
        self.threshold_quantile_ = fit.quantile
        self.warnings_ = fit.warnings
        self.val_scores_ = score_val()
        self.train_index_, self.val_index_ = train_index, val_index
        self.scorer_ = self._make_scorer()
        self.decision_scores_ = self._score(images[train_index])[0]
        self.card_: dict[str, Any] = {}
        return self

    def _make_scorer(self) -> AnomalyScorer:
        config = self.config
        return AnomalyScorer(
            self.generator_,
            config.score_metric,
            self.threshold_,
            self.val_median_,
            config.map_sigma,
        )

    # -- scoring --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "scorer_"):
            raise NotFittedError("this GANomalyDetector is not fitted yet: call fit() or load()")

    def preprocess(self, X: ImagesLike) -> Tensor:
        """X -> the model's input tensor by the one documented preprocessing."""
        self._check_fitted()
        config = self.config
        return load_images(
            X, config.image_hw(), self.channels_, config.interpolation, config.max_pixels
        )

    def _score(
        self, images: Tensor, batch_size: int = 256, with_maps: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return score_tensor(
            self.scorer_, images, batch_size, self.config.bn_mode, with_maps,
            device=next(self.generator_.parameters()).device,
        )  # fmt: skip

    def score(
        self, X: ImagesLike, batch_size: int = 256, with_maps: bool = False
    ) -> dict[str, Any]:
        """Everything about X at once: `score`, `normalized_score`, `is_anomaly`, maybe `maps`."""
        self._check_fitted()
        scores, normalized, maps = self._score(self.preprocess(X), batch_size, with_maps)
        result: dict[str, Any] = {
            "score": scores,
            "normalized_score": normalized,
            "is_anomaly": scores > self.threshold_,
        }
        if with_maps:
            result["maps"] = maps
        return result

    def decision_function(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """Raw anomaly scores (N,): higher = more abnormal."""
        return self.score(X, batch_size)["score"]

    def normalized_score(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """(score - median) / (threshold - median): 0 ~ typical normal, 1 = the threshold."""
        return self.score(X, batch_size)["normalized_score"]

    def predict(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """1 = anomaly (score > threshold_), 0 = normal."""
        return self.score(X, batch_size)["is_anomaly"].astype(np.int64)

    def anomaly_map(self, X: ImagesLike, batch_size: int = 256) -> np.ndarray:
        """Smoothed |x - x_hat| per pixel at the model's resolution, (N, H, W)."""
        maps = self.score(X, batch_size, with_maps=True)["maps"]
        assert maps is not None
        return maps

    @torch.inference_mode()
    def reconstruct(self, X: ImagesLike) -> tuple[np.ndarray, np.ndarray]:
        """(x, x_hat) as [0, 1] arrays (N, C, H, W), for figures and the web page."""
        self._check_fitted()
        self.generator_.eval()
        x = self.preprocess(X).to(next(self.generator_.parameters()).device)
        x_hat = self.generator_(x)[0]
        return to_display(x), to_display(x_hat)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The model.pt content (see `ganomaly.modelfile`)."""
        self._check_fitted()
        config = self.config
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": dataclasses.asdict(config),
            "generator": {k: v.detach().cpu() for k, v in self.generator_.state_dict().items()},
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
            "card": plain(self.card_),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write model.pt (atomically); a directory gets `model.pt` inside it."""
        target = Path(path)
        if target.is_dir():
            target = target / "model.pt"
        atomic_save(self.to_dict(), target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "cpu") -> GANomalyDetector:
        """Load a model.pt or a run directory holding one (weights_only: runs no code)."""
        target = Path(path)
        if target.is_dir():
            target = target / "model.pt"
        obj = load_model_file(target)
        try:
            config = from_dict(DetectorConfig, dict(obj["config"]))
            config.image_size = str(config.image_size)
            config.validate()
        except (ConfigError, TypeError) as error:
            raise ModelFileError(f"{target}: damaged model file ({error})") from None
        detector = cls(**{**dataclasses.asdict(config), "device": device})
        h, w = config.image_hw()
        if list(obj["image_size"]) != [h, w] or obj["channels"] not in (1, 3):
            raise ModelFileError(f"{target}: damaged model file (image size or channels)")
        generator = build_checked(
            target,
            obj["generator"],
            lambda: Generator((h, w), config.nz, obj["channels"], config.ngf, config.extra_layers),
        )
        generator.to(resolve_device(device)).eval()
        detector.channels_ = obj["channels"]
        detector.generator_ = generator
        detector.threshold_ = float(obj["threshold"])
        detector.val_median_ = float(obj["val_median"])
        detector.n_val_ = int(obj["n_val"])
        detector.threshold_quantile_ = obj.get("threshold_quantile")
        detector.card_ = dict(obj.get("card") or {})
        detector.history_ = list(detector.card_.get("history", []))
        detector.scorer_ = detector._make_scorer()
        return detector
