"""Data-parallel training with PyTorch DistributedDataParallel, launched by `torchrun`.

    torchrun --nproc_per_node 2 -m ganomaly train --data mnist --normal-class 1 --out runs/ddp
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \\
        --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m ganomaly train ...   # on each node

`torchrun` sets RANK / LOCAL_RANK / WORLD_SIZE; with WORLD_SIZE > 1 `train` joins the process
group (gloo on CPU, NCCL on CUDA) and:

- every rank holds the whole (small, in-memory) training tensor and trains on its shard of the
  seeded epoch order: `order[rank : n - n % world : world]`, as DistributedSampler with
  drop_last=True does; `--batch-size` is per process, so the global batch is world x batch;
- G and D's two L_D passes run through DDP, which all-reduces (averages) their gradients
  (Skip-GANomaly: `SkipDiscriminatorPasses`, D's loss with its latent term);
  the L_adv pass calls D outside DDP with D's parameters frozen, so no D gradient from the
  G loss exists to be all-reduced;
- the losses are all-reduced every step, so the D re-init decision (on the averaged L_D) and
  the non-finite check are the same on every rank; a re-init happens on rank 0 and D's
  state is broadcast, so all ranks keep bit-identical weights;
- BatchNorm: SyncBatchNorm on CUDA (statistics over the global batch), converted back to
  BatchNorm2d after training. On CPU each rank keeps its own batch statistics, because
  SyncBatchNorm refuses CPU tensors: every BN layer then normalises over `--batch-size`
  images, as a single process does, while gradients are still averaged over all ranks.
  Running statistics take no part in training and may differ between ranks: GANomaly's D's
  are never used; G's (and Skip-GANomaly's D's, which its score uses) are recomputed by
  precise BN on the same images on every rank (so they agree), and without precise BN the
  ones rank 0 saves come from its own shard;
- rank 0 alone writes the run directory and logs.

Tested with 2 CPU processes in tests/test_distributed.py (bit-identical weights on both ranks,
re-init decisions, only rank 0 writing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ganomaly.model import Discriminator, SkipDiscriminator, dcgan_init


def launched() -> bool:
    """True when started by torchrun (or any launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and logs."""
    return rank() == 0


def setup(device: str = "auto") -> None:
    """Join the process group torchrun describes: NCCL when this rank uses CUDA, else gloo."""
    if not launched() or active():
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def teardown() -> None:
    """Leave the process group together: without the barrier a rank that tears down first
    closes its gloo connections under a peer still in its last collective, which then aborts
    ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each rank uses its own GPU: cuda -> cuda:LOCAL_RANK."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(order: Tensor) -> Tensor:
    """This rank's part of an epoch order (DistributedSampler, drop_last=True)."""
    world = world_size()
    if world == 1:
        return order
    usable = len(order) - len(order) % world
    return order[rank() : usable : world]


class DiscriminatorPasses(nn.Module):
    """D's two L_D passes as one forward, so DDP can wrap the D step.

    The real pass reuses the features computed before the G step (exact: the G step does not
    change D); the fake pass runs on x_hat.detach(). Returns (logits_real, logits_fake).
    """

    def __init__(self, discriminator: Discriminator) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, features_real: Tensor, x_fake: Tensor) -> tuple[Tensor, Tensor]:
        return self.discriminator.classify(features_real), self.discriminator(x_fake)


class SkipDiscriminatorPasses(nn.Module):
    """Skip-GANomaly's L_D passes as one forward: D on x and on x_hat.detach(), returning
    (logits_real, logits_fake, features_real, features_fake); its latent term needs the
    features of both with D's gradients, so the real pass is run again here."""

    def __init__(self, discriminator: SkipDiscriminator) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x_real: Tensor, x_fake: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        features_real = self.discriminator.features(x_real)
        features_fake = self.discriminator.features(x_fake)
        return (
            self.discriminator.classify(features_real),
            self.discriminator.classify(features_fake),
            features_real,
            features_fake,
        )


@dataclass
class DDPModules:
    """The DDP wrappers the training step calls when distributed (the plain modules stay in
    TrainState for checkpoints, precise BN and scoring)."""

    generator: nn.Module
    discriminator_passes: nn.Module


def wrap(
    generator: nn.Module, discriminator: Discriminator | SkipDiscriminator
) -> DDPModules | None:
    """DDP wrappers for G and for D's L_D passes; None when not distributed.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts
    from the same weights whatever its seed did.
    """
    if not active():
        return None
    device = next(generator.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    use_sync_batchnorm(generator)
    use_sync_batchnorm(discriminator)
    passes: nn.Module
    if isinstance(discriminator, SkipDiscriminator):
        passes = SkipDiscriminatorPasses(discriminator)
    else:
        passes = DiscriminatorPasses(discriminator)
    return DDPModules(
        generator=nn.parallel.DistributedDataParallel(generator, device_ids=ids),
        discriminator_passes=nn.parallel.DistributedDataParallel(passes, device_ids=ids),
    )


def use_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm when training on several GPUs; on CPU (gloo) BatchNorm stays per rank."""
    device = next(module.parameters()).device
    if active() and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Turn SyncBatchNorm layers back into BatchNorm2d, so the trained model scores alone on
    any device. The BatchNorm2d takes over the very parameter and buffer tensors (as
    convert_sync_batchnorm does the other way), so the optimizers still hold the model's
    parameters and a later checkpoint saves the right moments."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats, device="meta",
            )  # fmt: skip
            for tensor_name, _ in [*plain.named_parameters(), *plain.named_buffers()]:
                setattr(plain, tensor_name, getattr(child, tensor_name))
            plain.train(child.training)
            setattr(module, name, plain)
        else:
            revert_sync_batchnorm(child)
    return module


def average(values: Tensor) -> Tensor:
    """All-reduced mean over ranks (the tensor itself when not distributed)."""
    if not active():
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def reinit_discriminator(discriminator: nn.Module) -> None:
    """DCGAN re-init of D on rank 0, then broadcast D's state so all ranks hold the same."""
    if is_main():
        discriminator.apply(dcgan_init)
        for module in discriminator.modules():  # SyncBatchNorm is not a BatchNorm2d
            if isinstance(module, nn.SyncBatchNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)
    if active():
        with torch.no_grad():
            for tensor in discriminator.state_dict().values():
                dist.broadcast(tensor, src=0)
