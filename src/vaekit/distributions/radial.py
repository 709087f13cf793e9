"""The radial flow of Rezende & Mohamed (2015), ``model.flow: radial``.

Each step moves z towards or away from a reference point z0 along the ray through it:
``f(z) = z + beta h(alpha, r) (z - z0)`` with ``r = |z - z0|`` and ``h = 1 / (alpha + r)``.
With ``alpha > 0`` and ``beta >= -alpha`` the step is invertible, and its Jacobian has
the closed-form determinant ``[1 + beta h]^(D-1) [1 + beta h + beta h' r]``.

As in the paper, the parameters ``(z0, alpha, beta)`` of every step come from the encoder
(amortised): ``length * (D + 2)`` features per example. ``alpha = softplus(a)`` and
``beta = -alpha + softplus(b)`` keep each step invertible.

This file is the whole part: the class declares its options and label, and one line in
:mod:`vaekit.registry` names it.

Example:
    >>> flow = RadialFlow(latent_dim=3, length=2)
    >>> context = torch.randn(5, flow.context_features)
    >>> z0 = torch.randn(4, 5, 3)
    >>> z, logdet = flow(z0, context)
    >>> back, logdet_back = flow.inverse(z, context)
    >>> bool(torch.allclose(back, z0, atol=1e-4)), bool(torch.allclose(logdet, logdet_back, atol=1e-4))
    (True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.distributions.flows import Flow, FlowOptions

__all__ = ["RadialFlow"]

# Bisection steps for inverting a step: the bracket [0, r_out] is at most a few units
# wide, and 80 halvings reach float64 resolution.
_BISECT_STEPS = 80


class RadialFlow(Flow):
    """Radial flow (Rezende & Mohamed 2015): K steps ``z + beta (z - z0) / (alpha + |z - z0|)``."""

    Options = FlowOptions

    @staticmethod
    def label(o: FlowOptions) -> str:
        return f"radial{o.length}"

    def __init__(self, latent_dim: int, length: int = 4) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.length = length
        self.context_features = length * (latent_dim + 2)

    def _params(self, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        d = self.latent_dim
        c = context.unflatten(-1, (self.length, d + 2))
        z0, a, b = c[..., :d], c[..., d], c[..., d + 1]
        alpha = F.softplus(a)
        beta = -alpha + F.softplus(b)  # beta >= -alpha: invertible
        return z0, alpha, beta

    def _log_det(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1.0 / (alpha + r)
        bh = beta * h
        # h' r = -r / (alpha + r)^2, so 1 + bh + beta h' r = 1 + beta alpha / (alpha + r)^2.
        return (self.latent_dim - 1) * torch.log1p(bh) + torch.log1p(beta * alpha * h * h)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._params(context)
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for k in range(self.length):
            diff = z - z0[..., k, :]
            r = diff.norm(dim=-1)
            a, b = alpha[..., k], beta[..., k]
            z = z + (b / (a + r)).unsqueeze(-1) * diff
            logdet = logdet + self._log_det(r, a, b)
        return z, logdet

    @torch.no_grad()
    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = (p.double() for p in self._params(context))
        y = z.double()
        logdet = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
        for k in reversed(range(self.length)):
            a, b = alpha[..., k], beta[..., k]
            diff = y - z0[..., k, :]
            r_out = diff.norm(dim=-1)
            # The step maps radius r to r (1 + b / (a + r)), increasing in r; find r on
            # [0, r_out + |b|] by bisection (the direction of z - z0 is unchanged).
            lo = torch.zeros_like(r_out)
            hi = r_out + b.abs()
            for _ in range(_BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                above = mid * (1 + b / (a + mid)) > r_out
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            r = 0.5 * (lo + hi)
            scale = (r / r_out.clamp_min(1e-300)).unsqueeze(-1)
            y = z0[..., k, :] + scale * diff
            logdet = logdet + self._log_det(r, a, b)
        return y.to(z.dtype), logdet.to(z.dtype)
