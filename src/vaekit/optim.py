"""Optimisers (``train.optimizer``) and learning-rate schedules (``train.lr_schedule``) by
name: the registries that serve the config's choices.

Adam, AdamW, SGD and Adagrad use torch's fused kernels (one pass over every parameter,
on CPU and CUDA): for the tutorial-002 model an Adam step takes 0.4 ms fused, 1.4 ms
with foreach and 3.7 ms with the default per-tensor loop (benchmarks/README.md).
RMSprop has no fused kernel; it uses foreach.

A schedule is a factor on ``train.lr`` that depends only on the epoch. Because the
factor is a pure function of the epoch, a resumed run recomputes it and stays
bit-identical; nothing about it needs to be checkpointed. ``cosine`` also depends on
``train.epochs``: extending a run with ``--resume --epochs N`` stretches its remaining
schedule (``burda`` and ``none`` do not depend on it).

Example:
    >>> sorted(OPTIMIZERS)
    ['adagrad', 'adam', 'adamw', 'rmsprop', 'sgd']
    >>> [round(lr_factor("burda", e, 3280), 3) for e in (1, 2, 4, 5, 3280)]
    [1.0, 0.72, 0.72, 0.518, 0.1]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaekit.errors import ConfigError

__all__ = ["OPTIMIZERS", "make_optimizer", "SCHEDULES", "lr_factor"]

Builder = Callable[[list[nn.Parameter], float, float, dict[str, Any]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, Builder] = {
    "adam": lambda ps, lr, wd, fast: torch.optim.Adam(ps, lr=lr, weight_decay=wd, **fast),
    "adamw": lambda ps, lr, wd, fast: torch.optim.AdamW(ps, lr=lr, weight_decay=wd, **fast),
    # Keras' RMSprop defaults (rho=0.9, eps=1e-7), as in tutorial 001; no fused kernel.
    "rmsprop": lambda ps, lr, wd, fast: torch.optim.RMSprop(
        ps, lr=lr, alpha=0.9, eps=1e-7, weight_decay=wd, foreach=True
    ),
    "sgd": lambda ps, lr, wd, fast: torch.optim.SGD(
        ps, lr=lr, momentum=0.9, weight_decay=wd, **fast
    ),
    "adagrad": lambda ps, lr, wd, fast: torch.optim.Adagrad(ps, lr=lr, weight_decay=wd, **fast),
}


def make_optimizer(
    name: str, params: list[nn.Parameter], lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """The optimiser named in ``train.optimizer``, with fused kernels where torch has them."""
    build = OPTIMIZERS.get(name)
    if build is None:
        raise ConfigError(f"unknown optimizer {name!r}; one of {', '.join(sorted(OPTIMIZERS))}")
    fused = device.type in ("cpu", "cuda")
    fast: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return build(params, lr, weight_decay, fast)


SCHEDULES = ("none", "cosine", "burda")


def _burda_stage(epoch: int) -> int:
    """Burda et al. (2016): stage i lasts 3**i epochs (i = 0..7, 3280 epochs in all)."""
    end, stage = 0, 0
    while True:
        end += 3**stage
        if epoch <= end:
            return stage
        stage += 1


def lr_factor(name: str, epoch: int, epochs: int) -> float:
    """The factor for 1-based ``epoch`` of ``epochs``.

    ``none``: 1. ``cosine``: from 1 down to 0.01 over the run (half a cosine).
    ``burda``: 10**(-i/7) in stage i of Burda et al.'s 3**i-epoch stages (the IWAE paper's
    schedule; stages past the 8th keep dividing).
    """
    if name == "none":
        return 1.0
    if name == "cosine":
        progress = (epoch - 1) / max(epochs - 1, 1)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if name == "burda":
        return float(10.0 ** (-_burda_stage(epoch) / 7.0))
    raise ValueError(
        f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}"
    )
