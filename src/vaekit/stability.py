"""What deep hierarchies use to train stably, beside ``train.nan_policy``.

- :func:`spectral_penalty`: the sum of the largest singular value of every linear and
  convolutional weight of a model (NVAE's spectral regularisation, Vahdat & Kautz 2020):
  ``objective.spectral: lambda`` adds ``lambda`` times it to the ELBO's loss, which bounds
  how sharply the networks (and so the KL terms) can change;
- :func:`kl_balance_weights`: NVAE's KL balancing, which during the KL warm-up weighs
  each layer's KL by its share of the total, so that no layer is switched off early
  (``objective.kl_balance: true``);
- gradient-norm skipping (Child 2021, VDVAE) is a setting of the trainer,
  ``train.skip_threshold``: a step whose gradient norm exceeds it is dropped.

Example:
    >>> net = torch.nn.Linear(3, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    >>> round(float(spectral_penalty(net).detach()), 4)
    3.0
    >>> [round(w, 3) for w in kl_balance_weights(torch.tensor([[1.0, 1.0], [9.0, 9.0]]), [2, 2]).tolist()]
    [0.202, 1.798]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["POWER_ITERATIONS", "spectral_penalty", "kl_balance_weights"]

# Power iterations per weight and step. They start from the same vector every step, so the
# penalty is a function of the weights alone and a resumed run stays bit-identical.
POWER_ITERATIONS = 8


def _largest_singular_value(w: Tensor, iterations: int) -> Tensor:
    """sigma_max of a matrix by power iteration; its gradient is u v^T (u, v held fixed)."""
    with torch.no_grad():
        v = torch.ones(w.shape[1], device=w.device, dtype=w.dtype) / w.shape[1] ** 0.5
        u = w @ v
        for _ in range(iterations):
            u = w @ v
            u = u / u.norm().clamp_min(1e-12)
            v = w.T @ u
            v = v / v.norm().clamp_min(1e-12)
    return u @ w @ v


def spectral_penalty(model: nn.Module, iterations: int = POWER_ITERATIONS) -> Tensor:
    """Sum over the model's linear and convolutional layers of their weight's largest
    singular value (a convolution's kernel as an ``out x (in * k * k)`` matrix, as NVAE)."""
    total: Tensor | None = None
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            w = layer.weight
            if isinstance(layer, nn.ConvTranspose2d):
                w = w.transpose(0, 1)
            s = _largest_singular_value(w.reshape(w.shape[0], -1), iterations)
            total = s if total is None else total + s
    if total is None:
        return torch.zeros(())
    return total


def kl_balance_weights(kl_layers: Tensor, sizes: Sequence[int]) -> Tensor:
    """NVAE's KL balancing coefficients, one per layer, averaging 1 (no gradient).

    ``kl_layers`` ``(L, B)``: each layer's KL per example; ``sizes``: its units. A layer's
    weight is its batch-mean KL (plus 0.01, so a silent layer is not dropped) per unit,
    normalised to mean 1: layers that carry more information per unit are penalised
    more during warm-up, which keeps the KL spread across layers instead of collapsing
    some of them to the prior.
    """
    units = torch.as_tensor(list(sizes), dtype=kl_layers.dtype, device=kl_layers.device)
    w = (kl_layers.detach().abs().mean(1) + 0.01) / (units / units.mean())
    return w / w.mean()
