"""Learning-rate schedules: a factor on ``train.lr`` that depends only on the epoch.

Because the factor is a pure function of the epoch, a resumed run recomputes it and
stays bit-identical; nothing about it needs to be checkpointed. ``cosine`` also depends on
``train.epochs``: extending a run with ``--resume --epochs N`` stretches its remaining
schedule (``burda`` and ``none`` do not depend on it).

Example:
    >>> [round(lr_factor("burda", e, 3280), 3) for e in (1, 2, 4, 5, 3280)]
    [1.0, 0.72, 0.72, 0.518, 0.1]
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_factor"]

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
