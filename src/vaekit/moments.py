"""Posterior means and variances of many examples, one function behind every posterior
mean vaekit shows (:func:`posterior_moments`), and a split encoded as ``vaekit encode``
writes it (:func:`encode_part`). Model-level: below the run directory, which encodes its
splits with it (:meth:`vaekit.rundir.Run.encode_split`)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from vaekit.data import Split
from vaekit.distributions.posteriors import MOMENT_DRAWS, MonteCarloMoments
from vaekit.errors import UsageError
from vaekit.model import VAE

__all__ = ["Moments", "posterior_moments", "encode_part"]


def _model(obj: Any) -> VAE:
    """The model of a VAE or of a run (anything with a ``model``)."""
    return obj if isinstance(obj, VAE) else obj.model


def _has_moments(q: Distribution) -> bool:
    try:
        q.mean  # noqa: B018 - probing whether the distribution implements them
        q.variance  # noqa: B018
    except NotImplementedError:
        return False
    return True


class Moments(NamedTuple):
    """Posterior means and variances of many examples, ``(N, D)`` each, on the CPU."""

    mean: Tensor
    variance: Tensor


def _monte_carlo_moments(q: MonteCarloMoments, samples: int) -> tuple[Tensor, Tensor]:
    """Mean and variance from ``samples`` fixed draws of ``q``'s conditional moments
    (:meth:`~vaekit.distributions.posteriors.MonteCarloMoments.moment_draws`), in chunks of
    MOMENT_DRAWS with seeds 0, 1, ... (memory stays bounded); chunk 0 alone is ``q.mean``
    and ``q.variance``."""
    first, first_v = q.moment_draws(min(samples, MOMENT_DRAWS))
    if samples <= MOMENT_DRAWS:
        return first.mean(0), first_v.mean(0) + first.var(0)
    # Chunks are merged with Chan et al.'s pairwise update, in float64.
    n = first.shape[0]
    mean = first.double().mean(0)
    m2 = ((first.double() - mean) ** 2).sum(0)
    v_sum = first_v.double().sum(0)
    for seed, start in enumerate(range(MOMENT_DRAWS, samples, MOMENT_DRAWS), start=1):
        chunk, chunk_v = q.moment_draws(min(MOMENT_DRAWS, samples - start), seed=seed)
        chunk = chunk.double()
        k = chunk.shape[0]
        c_mean = chunk.mean(0)
        delta = c_mean - mean
        mean = mean + delta * (k / (n + k))
        m2 = m2 + ((chunk - c_mean) ** 2).sum(0) + delta**2 * (n * k / (n + k))
        v_sum = v_sum + chunk_v.double().sum(0)
        n += k
    return mean.to(first.dtype), (v_sum / n + m2 / (n - 1)).to(first.dtype)


def _encode_rows(m: VAE, x: Tensor, y: Tensor | None, rows: slice | Tensor) -> Distribution:
    """q(z | x) of the rows ``rows`` of ``x`` (with their labels, for a conditional model),
    on the model's device."""
    device = next(m.parameters()).device
    xb = torch.as_tensor(x[rows]).to(device)
    yb = None if not m.conditional or y is None else torch.as_tensor(y[rows]).to(device)
    return m.encode(xb.reshape(len(xb), *m.data_shape), yb)


@torch.inference_mode()
def posterior_moments(
    model: Any,
    x: Tensor,
    y: Tensor | None = None,
    *,
    batch_size: int = 1000,
    samples: int = MOMENT_DRAWS,
) -> Moments:
    """E_q[z | x] and Var_q[z | x] for every example: ``Moments(mean, variance)``, ``(N, D)``
    each, on the CPU.

    The one function behind every posterior mean vaekit shows: ``vaekit encode``,
    evaluation's active units and latent classifiers, the plots' latent codes and the
    explorer's map; so they give the same numbers. Posteriors without closed-form
    moments (a flow, an implicit posterior, a hierarchy's lower layers) are averaged over
    ``samples`` draws of noise that is fixed, antithetic and shared by every example, so
    an example's estimate does not depend on the batch it is encoded in; the default
    gives ``q.mean`` and ``q.variance``.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> flow = build_model(ModelConfig(latent_dim=2, flow=part("planar")), (1, 4, 4))
        >>> x = torch.rand(5, 1, 4, 4)
        >>> m = posterior_moments(flow, x)
        >>> m.mean.shape, torch.allclose(m.mean[3], posterior_moments(flow, x[3:4]).mean[0])
        (torch.Size([5, 2]), True)
    """
    if samples < 2:
        raise UsageError(f"samples must be >= 2 (a variance needs two draws), got {samples}")
    m = _model(model)
    device = next(m.parameters()).device
    if m.conditional and y is None:
        raise UsageError("this is a conditional model: pass the labels y to encode with")
    means, variances = [], []
    for i in range(0, len(x), batch_size):
        q = _encode_rows(m, x, y, slice(i, i + batch_size))
        if isinstance(q, MonteCarloMoments):
            mu, var = _monte_carlo_moments(q, samples)
        elif _has_moments(q):
            mu, var = q.mean, q.variance
        else:
            # A posterior of the user's without closed-form moments and without fixed draws.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                draws = q.sample((samples,))
            mu, var = draws.mean(0), draws.var(0)
        means.append(mu.float().cpu())
        variances.append(var.float().cpu())
    if not means:
        empty = torch.empty(0, m.latent_dim)
        return Moments(empty, empty.clone())
    return Moments(torch.cat(means), torch.cat(variances))


def encode_part(model: Any, part: Split, *, batch_size: int = 1000) -> dict[str, np.ndarray]:
    """Every example of ``part`` encoded (``vaekit encode``): ``mean`` and ``var``, the
    moments of q(z|x) (:func:`posterior_moments`), ``(N, D)`` each; ``codes``, the code
    index at each position of the most probable code, for a discrete model; ``labels``
    when the split has them. NumPy arrays, in the split's order. ``model``: a VAE or a run."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    m = _model(model)
    y = part.y  # used by a conditional model only (_encode_rows)
    moments = posterior_moments(m, part.x, y, batch_size=batch_size)
    out = {"mean": moments.mean.numpy(), "var": moments.variance.numpy()}
    if m.composition.posterior.discrete:
        head: Any = m.encoder.head  # a discrete posterior's head: a CodeHead
        codes = []
        for i in range(0, len(part), batch_size):
            q = _encode_rows(m, part.x, y, slice(i, i + batch_size))
            # The code index at each position of the most probable code.
            codes.append(head.codes(q.mode).cpu())
        out["codes"] = torch.cat(codes).numpy()
    if part.y is not None:
        out["labels"] = part.y.numpy()
    return out
