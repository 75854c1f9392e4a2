"""FusedAdam against torch.optim.Adam(fused=True): the same kernel, so the same bits."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ganomaly.optim import FusedAdam

BETAS = (0.5, 0.999)


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3), nn.Linear(5, 2))
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _train(net: nn.Module, optimizer: object, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(4, 3, 9, 9, generator=generator)
        optimizer.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        # the Linear layer gets no gradient in odd steps: skipped, as torch skips it
        out = net[:3](x) if step % 2 else net(x)
        (out**2).mean().backward()
        optimizer.step()  # type: ignore[attr-defined]


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_updates_are_bit_identical_to_torch_fused_adam() -> None:
    ours, theirs = _net(), _net()
    _train(ours, FusedAdam(ours.parameters(), 2e-4, BETAS), 6, seed=1)
    _train(theirs, torch.optim.Adam(theirs.parameters(), lr=2e-4, betas=BETAS, fused=True), 6, 1)
    assert _same(ours, theirs)
    assert not _same(ours, _net())  # the steps did move the weights


@pytest.mark.parametrize("first", ["ours", "torch"])
def test_state_dicts_load_across_the_two_classes(first: str) -> None:
    """A checkpoint written by either class resumes in the other to the same weights."""

    def make(kind: str, net: nn.Module) -> object:
        if kind == "ours":
            return FusedAdam(net.parameters(), 2e-4, BETAS)
        return torch.optim.Adam(net.parameters(), lr=2e-4, betas=BETAS, fused=True)

    second = "torch" if first == "ours" else "ours"
    reference = _net()
    optimizer = make(first, reference)
    _train(reference, optimizer, 3, seed=2)
    saved_net, saved = copy.deepcopy(reference), copy.deepcopy(optimizer.state_dict())  # type: ignore[attr-defined]
    _train(reference, optimizer, 3, seed=3)

    resumed = saved_net
    other = make(second, resumed)
    other.load_state_dict(saved)  # type: ignore[attr-defined]
    _train(resumed, other, 3, seed=3)
    assert _same(resumed, reference)


def test_a_state_for_other_parameters_is_refused() -> None:
    optimizer = FusedAdam(_net().parameters(), 2e-4, BETAS)
    smaller = FusedAdam(nn.Linear(2, 2).parameters(), 2e-4, BETAS)
    with pytest.raises(ValueError, match="for 2 parameters in 1 group"):
        optimizer.load_state_dict(smaller.state_dict())
