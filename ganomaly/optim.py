"""Adam on PyTorch's fused kernel, without `torch.optim`.

Constructing any `torch.optim.Optimizer` imports TorchDynamo and SymPy: its methods are wrapped
in `torch._disable_dynamo`, which imports `torch._dynamo` on the first call. That costs 1.7 s
and 73 MB of resident memory on a 2-core CPU (measured: five times the MNIST model with its
Adam moments), and training never compiles anything. `FusedAdam` runs the same
`torch._fused_adam_` kernel `torch.optim.Adam(fused=True)` runs, after the same step-counter
increment, with the same state (created lazily, in the parameter's memory format) and the same
`state_dict` layout, so its updates are bit-identical and checkpoints written by either load
into the other (tests/test_optim.py holds both to that).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn


class Optimizer(Protocol):
    """What training and checkpoints use of an optimizer."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


ADAM_EPS = 1e-8  # torch.optim.Adam's default, which GANomaly's reference keeps

# The group entries torch.optim.Adam writes into a state_dict, so that either class reads it.
_GROUP_DEFAULTS = {
    "eps": ADAM_EPS,
    "weight_decay": 0.0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}


class FusedAdam:
    """Adam (Kingma & Ba) over one parameter group, with PyTorch's fused CPU/CUDA kernel.

    Example:
        >>> net = nn.Linear(4, 1)
        >>> opt = FusedAdam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
        >>> net(torch.ones(2, 4)).sum().backward(); opt.step(); opt.zero_grad()
    """

    def __init__(self, params: Any, lr: float, betas: tuple[float, float]) -> None:
        self.params: list[nn.Parameter] = list(params)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.state: dict[int, dict[str, Tensor]] = {}  # by index into self.params

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for index, param in enumerate(self.params):
            if param.grad is not None:
                groups.setdefault((param.device, param.dtype), []).append(index)
        for indices in groups.values():
            states = [self._state(i) for i in indices]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                [self.params[i] for i in indices],
                [self.params[i].grad for i in indices],  # type: ignore[misc]
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=self.lr,
                beta1=self.betas[0],
                beta2=self.betas[1],
                weight_decay=0.0,
                eps=ADAM_EPS,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def _state(self, index: int) -> dict[str, Tensor]:
        if index not in self.state:
            param = self.params[index]
            self.state[index] = {
                # float32 on the parameter's device, as the fused kernel requires
                "step": torch.zeros((), dtype=torch.float32, device=param.device),
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
        return self.state[index]

    def state_dict(self) -> dict[str, Any]:
        """The state in `torch.optim.Adam.state_dict()`'s layout (tensors not copied)."""
        group = {
            "lr": self.lr,
            "betas": self.betas,
            **_GROUP_DEFAULTS,
            "params": list(range(len(self.params))),
        }
        return {"state": dict(self.state), "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state written by this class or by `torch.optim.Adam` over the same
        parameters (one group, in the same order)."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(
                f"the saved optimizer state is for {sum(len(g['params']) for g in groups)} "
                f"parameters in {len(groups)} group(s), not {len(self.params)} in one"
            )
        self.lr = float(groups[0]["lr"])
        self.betas = (float(groups[0]["betas"][0]), float(groups[0]["betas"][1]))
        position = {saved: i for i, saved in enumerate(groups[0]["params"])}
        self.state = {}
        for saved, entry in state_dict["state"].items():
            param = self.params[position[saved]]
            self.state[position[saved]] = {
                "step": entry["step"].to(dtype=torch.float32, device=param.device),
                "exp_avg": entry["exp_avg"].to(dtype=param.dtype, device=param.device),
                "exp_avg_sq": entry["exp_avg_sq"].to(dtype=param.dtype, device=param.device),
            }
