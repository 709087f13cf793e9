"""An exponential moving average of a model's weights (``train.ema``).

After every optimiser step each parameter of the average moves a fraction ``1 - decay``
of the way to the trained one, ``ema = decay * ema + (1 - decay) * weights``, from a copy
of the initial weights; buffers are copied as they are. The trainer scores the validation
and test splits with the average and writes it as the run's weights (VDVAE and NVAE
evaluate so), while the optimiser goes on from the raw weights.

Example:
    >>> net = nn.Linear(2, 1)
    >>> avg = WeightAverage(net, decay=0.9)
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(1.0)
    >>> avg.update(net)
    >>> bool(torch.allclose(avg.module.weight, net.weight - 0.9))
    True
"""

from __future__ import annotations

import copy
from typing import Generic, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["WeightAverage"]

M = TypeVar("M", bound=nn.Module)


class WeightAverage(Generic[M]):
    """The moving average of ``model``'s weights, held in a copy of it (``module``)."""

    def __init__(self, model: M, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the decay of a moving average must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module: M = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.module.eval()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        mine: list[Tensor] = list(self.module.parameters())
        theirs: list[Tensor] = [p.detach() for p in model.parameters()]
        if len(mine) != len(theirs):
            raise ValueError("the moving average was made of a model with other parameters")
        # ema + (1 - d) (w - ema) = d ema + (1 - d) w, for every tensor in one kernel.
        torch._foreach_lerp_(mine, theirs, 1.0 - self.decay)
        for b_mine, b_theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            b_mine.copy_(b_theirs)
