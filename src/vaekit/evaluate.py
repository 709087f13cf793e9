"""Evaluation of a trained run: test ELBO and its terms (nats per example)."""

from __future__ import annotations

from typing import Any

import torch

from vaekit.data import Split
from vaekit.rundir import Run

__all__ = ["elbo_terms"]


@torch.inference_mode()
def elbo_terms(run: Run, split: Split, samples: int = 1, batch_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean of every ELBO term over a split: ``elbo``, ``recon`` (-E log p(x|z)), ``kl``."""
    torch.manual_seed(seed)
    sums: dict[str, float] = {}
    for i in range(0, len(split), batch_size):
        x = split.x[i : i + batch_size].to(run.device)
        y = None if split.y is None else split.y[i : i + batch_size].to(run.device)
        for k, v in run.elbo(x, y if run.num_classes else None, samples=samples).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
    return {k: v / len(split) for k, v in sums.items()} | {"n": len(split), "samples": samples}
