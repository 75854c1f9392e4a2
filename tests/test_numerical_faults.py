"""A loss that turns non-finite stops training at once, by name, and never reaches a checkpoint."""

from __future__ import annotations

import torch

from ganomaly.cli import main

ARGS = [
    "train", "--data", "digits", "--normal-class", "0", "--ngf", "8", "--nz", "16",
    "--image-size", "16", "--epochs", "3", "--batch-size", "8", "--checkpoint-every", "1",
    "--no-progress",
]  # fmt: skip


def test_diverging_run_stops_naming_the_loss_and_keeps_finite_checkpoints(tmp_path, capsys):
    out = tmp_path / "diverged"
    # An absurd learning rate overflows within a few steps.
    assert main([*ARGS, "--lr", "1e8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # Either a loss is already non-finite, or an update overflowed the weights first.
    assert err[-1].startswith("ganomaly: error: non-finite ")
    assert "at epoch 1, step " in err[-1] and "try a lower --lr" in err[-1]
    assert not (out / "model.pt").exists()  # no inference file from a diverged run
    checkpoints = sorted((out / "checkpoints").glob("*.pt"))
    assert checkpoints  # the steps before the fault were saved ...
    for path in checkpoints:  # ... and every saved weight is finite
        state = torch.load(path, weights_only=True)
        for network in ("generator", "discriminator"):
            for name, tensor in state[network].items():
                if tensor.is_floating_point():
                    assert torch.isfinite(tensor).all(), (path.name, network, name)
