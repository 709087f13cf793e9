"""Evaluation of a trained model, matching the literature's figures.

- importance-sampled negative log-likelihood (Burda et al. 2016) in nats, with its
  standard error over the test set, and bits per dimension for images;
- the test ELBO with its reconstruction and KL terms;
- KL per latent dimension and active units (Cov_x(E_q[z_d]) > 0.01);
- accuracy of simple classifiers trained on the latent means (where labels exist).

log p(x) is estimated as ``logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k``
with ``z_k ~ q(z|x)``. Samples are drawn in chunks and folded into a running
log-sum-exp held in float64, so memory stays bounded for any ``k``. Every density comes
from the model's own parts (the posterior's ``log_prob``, the prior's Distribution, the
likelihood head), so flows and richer priors work unchanged.

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/demo")                     # doctest: +SKIP
    >>> result = evaluate_run(run, k=1000)                 # doctest: +SKIP
    >>> print(f"{result['nll']:.2f} +- {result['nll_se']:.2f} nats")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits  # scikit-learn's dependency
from torch import Tensor
from torch.distributions import Distribution, Independent, MixtureSameFamily, kl_divergence
from tqdm import tqdm

from vaekit.data import Dataset, Split, limit_split, model_view
from vaekit.distributions.codes import CodeHead, code_usage
from vaekit.distributions.posteriors import MOMENT_DRAWS, MonteCarloMoments, sample_with_log_prob
from vaekit.errors import UsageError
from vaekit.hierarchy import active_units_per_layer, kl_per_layer, layer_sizes
from vaekit.model import VAE
from vaekit.moments import (
    Moments,
    _encode_rows,
    posterior_moments,
)
from vaekit.objectives import AutoencoderLoss
from vaekit.rundir import (
    STANDARD_K,
    Run,
    RunError,
    nonfinite_key,
    prior_note,
    result_header,
    weights_fallback,
)

__all__ = [
    "DEFAULT_MAX_ROWS",
    "fitted_max_rows",
    "StreamingLogSumExp",
    "has_density",
    "log_weights",
    "log_likelihood",
    "log_likelihood_split",
    "mean_and_se",
    "classification_error",
    "elbo_terms",
    "kl_per_dim",
    "Moments",
    "posterior_moments",
    "encode_split",
    "moment_draws_needed",
    "latent_means",
    "active_units",
    "classifier_accuracy",
    "evaluate_run",
    "num_threads",
    "available_cpus",
]

# Decoder rows (samples x examples) per forward pass: large enough for the matmuls to
# run near peak, small enough that a layer's activations (rows x width floats, 4 MB for
# 2048 x 500) stay in cache for the elementwise work between matmuls. Measured on the
# tutorial-002 model: 1250-2500 rows 15-25% faster than 5000-8192.
DEFAULT_MAX_ROWS = 2048
# Wider decoders get fewer rows, so that the widest activation of a pass stays this many
# floats (2048 rows of the tutorial-002 decoder's 784 logits): a conv decoder's 64 x 14 x
# 14 maps give 128 rows, 1.5x faster than 2048 (`python benchmarks/nll_rows.py`), and a
# 256-way categorical head's 200,704 logits per row 16 instead of 3 GB per pass.
ROW_FLOATS = DEFAULT_MAX_ROWS * 784
MIN_ROWS = 16


class StreamingLogSumExp:
    """log(sum(exp(a))) over the first axis of chunks that arrive one at a time.

    The running value is held in float64: log-weights of binarized MNIST are around
    -100 and their spread across 5000 samples is large, and float64 keeps the
    rescaling exact to far below the standard error.

    Example:
        >>> acc = StreamingLogSumExp()
        >>> acc.update(torch.tensor([[0.0], [1.0]]))
        >>> acc.update(torch.tensor([[2.0]]))
        >>> round(float(acc.result()[0]), 6) == round(math.log(1 + math.e + math.e**2), 6)
        True
    """

    def __init__(self) -> None:
        self._value: Tensor | None = None
        self.count = 0

    def update(self, chunk: Tensor) -> None:
        """Fold in ``chunk`` of shape ``(S, *batch)``."""
        if chunk.dim() == 0:
            raise ValueError(
                "StreamingLogSumExp.update expects a chunk of shape (S, *batch), got a scalar"
            )
        part = torch.logsumexp(chunk.to(torch.float64), dim=0)
        # logaddexp is exact for -inf on both sides (an impossible sample adds nothing).
        self._value = part if self._value is None else torch.logaddexp(self._value, part)
        self.count += int(chunk.shape[0])

    def result(self) -> Tensor:
        """The log-sum-exp of everything folded in so far (float64)."""
        if self._value is None:
            raise ValueError("StreamingLogSumExp.result called before any update")
        return self._value


def _model(obj: VAE | Run) -> VAE:
    return obj.model if isinstance(obj, Run) else obj


def has_density(model: VAE | Run) -> bool:
    """Whether the model's posterior has a log-density, as its part declares (a point mass
    or an implicit posterior does not, so neither the ELBO nor the likelihood exists)."""
    return _model(model).composition.posterior.density


def log_weights(
    model: VAE | Run,
    q: Distribution,
    x: Tensor,
    y: Tensor | None,
    samples: int,
    prior: Distribution | None = None,
) -> Tensor:
    """``samples`` log importance weights per example, shape ``(S, B)``.

    ``log w = log p(x|z) + log p(z) - log q(z|x)`` with ``z ~ q`` reparameterised (so a
    seeded draw is the same one the ELBO objective would make). ``prior`` is p(z) when the
    caller already has it (a VampPrior costs an encoder pass to build).
    """
    m = _model(model)
    try:
        # Flows give the density of their own draws as they make them.
        z, log_q = sample_with_log_prob(q, (samples,))  # (S, B, D), (S, B)
    except NotImplementedError:
        raise UsageError(
            "the posterior has no density (a point mass, model.posterior=point, or an implicit "
            "posterior, model.posterior=implicit); the importance-sampled likelihood is undefined for it"
        ) from None
    p = m.prior_given(y) if prior is None else prior
    return m.decode(z, y).log_prob(x) + p.log_prob(z) - log_q


def _check_k(k: int) -> None:
    if k < 1:
        raise UsageError(f"k (importance samples per example) must be >= 1, got {k}")


def fitted_max_rows(model: VAE | Run) -> int:
    """Decoder rows per pass for this model: ``ROW_FLOATS`` over its widest activation.

    The widths come from one decoder pass on a single latent point (forward hooks on
    every layer and the likelihood's parameters), so any network or head is measured.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> fitted_max_rows(build_model(ModelConfig(latent_dim=2), (1, 28, 28)))
        2048
        >>> conv = ModelConfig(latent_dim=2, encoder=part("conv", channels=[64, 128]))
        >>> fitted_max_rows(build_model(conv, (1, 28, 28)))
        128
    """
    m = _model(model)
    widest = 1

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal widest
        if isinstance(output, Tensor):
            widest = max(widest, output.numel())

    param = next(m.parameters())
    z = torch.zeros(1, m.latent_dim, device=param.device, dtype=param.dtype)
    y = torch.zeros(1, dtype=torch.long, device=param.device) if m.conditional else None
    handles = [layer.register_forward_hook(hook) for layer in m.decoder.modules()]
    try:
        with torch.no_grad():
            m.decode(z, y)
    finally:
        for h in handles:
            h.remove()
    return max(MIN_ROWS, min(DEFAULT_MAX_ROWS, ROW_FLOATS // widest))


def _max_rows_default(max_rows: int | None, model: VAE) -> int:
    if max_rows is None:
        return fitted_max_rows(model)
    if max_rows < 1:
        raise UsageError(f"max_rows must be >= 1, got {max_rows}")
    return max_rows


@torch.inference_mode()
def log_likelihood(
    model: VAE | Run,
    x: Tensor,
    y: Tensor | None = None,
    k: int = 5000,
    *,
    chunk: int | None = None,
    max_rows: int | None = None,
) -> Tensor:
    """Importance-sampled estimate of log p(x) for a batch, shape ``(B,)``, float64.

    ``k`` samples per example are drawn ``chunk`` at a time (default: as many as fit in
    ``max_rows`` decoder rows), so memory does not grow with ``k``.

    Example:
        >>> from vaekit.config import ModelConfig
        >>> from vaekit.model import build_model
        >>> model = build_model(ModelConfig(latent_dim=2), (1, 8, 8))
        >>> log_likelihood(model, torch.rand(3, 1, 8, 8).round(), k=10).shape
        torch.Size([3])
    """
    _check_k(k)
    m = _model(model)
    x = x.reshape(x.shape[0], *m.data_shape)
    rows = _max_rows_default(max_rows, m)
    if chunk is None:
        # Equal chunks (5000 = 3 x 1667 rather than 2048 + 2048 + 904): every pass as large.
        cap = max(1, rows // max(1, x.shape[0]))
        chunk = math.ceil(k / math.ceil(k / cap))
    if chunk < 1:
        raise UsageError(f"chunk must be >= 1, got {chunk}")
    if m.classifier is None:
        return _log_likelihood_given(m, x, y, k, chunk)
    # A model with a classifier (M2) is p(y) p(z|y) p(x|y,z): log p(x) sums the labels
    # out, log (1/C) sum_y p(x|y), each p(x|y) importance-sampled from q(z|x,y) (k draws
    # per class, whatever labels the data have).
    per = [
        _log_likelihood_given(m, x, torch.full((len(x),), c, device=x.device), k, chunk)
        for c in range(m.num_classes)
    ]
    return torch.logsumexp(torch.stack(per), 0) - math.log(m.num_classes)


def _log_likelihood_given(m: VAE, x: Tensor, y: Tensor | None, k: int, chunk: int) -> Tensor:
    """log p(x[|y]) from ``k`` importance samples drawn ``chunk`` at a time, float64."""
    q = m.encode(x, y)
    prior = m.prior_given(y)
    acc = StreamingLogSumExp()
    for start in range(0, k, chunk):
        acc.update(log_weights(m, q, x, y, min(chunk, k - start), prior))
    return acc.result() - math.log(k)


def _batches(
    split: Split, batch_size: int, device: torch.device, with_labels: bool
) -> Iterator[tuple[Tensor, Tensor | None]]:
    for i in range(0, len(split), batch_size):
        x = split.x[i : i + batch_size].to(device)
        y = (
            split.y[i : i + batch_size].to(device)
            if (with_labels and split.y is not None)
            else None
        )
        yield x, y


def _labels_needed(m: VAE, split: Split) -> bool:
    if m.conditional and split.y is None:
        raise UsageError("this is a conditional model, but the split has no labels to condition on")
    return m.conditional


@torch.inference_mode()
def log_likelihood_split(
    model: VAE | Run,
    split: Split,
    k: int = 5000,
    *,
    batch_size: int | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Tensor:
    """Importance-sampled log p(x) of every example of a split, shape ``(N,)``, float64.

    ``batch_size`` examples share each decoder pass (default: ``max_rows // k``, at
    least 1, so a chunk is ``batch_size`` examples times up to ``max_rows / batch_size``
    samples). The draws are seeded without touching the global random state.
    """
    _check_k(k)
    m = _model(model)
    device = next(m.parameters()).device
    rows = _max_rows_default(max_rows, m)
    if batch_size is None:
        batch_size = min(len(split), max(1, rows // k), 1000)
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    labels = _labels_needed(m, split)
    if progress is None:
        progress = sys.stderr.isatty()
    out = torch.empty(len(split), dtype=torch.float64)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        bar = tqdm(
            total=len(split),
            desc=f"log p(x), k={k}",
            disable=not progress,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
        i = 0
        for x, y in _batches(split, batch_size, device, labels):
            out[i : i + len(x)] = log_likelihood(m, x, y, k, max_rows=rows).cpu()
            i += len(x)
            bar.update(len(x))
        bar.close()
    return out


@torch.inference_mode()
def classification_error(
    model: VAE | Run, split: Split, batch_size: int = 1000
) -> dict[str, float | int]:
    """The test error of the model's classifier q(y|x) (its most probable class) on a
    labelled split: ``error``, its binomial standard error ``error_se`` = sqrt(e (1 - e) / n)
    and ``n``.

    Example:
        >>> from vaekit.config import ModelConfig
        >>> from vaekit.model import build_model
        >>> cfg = ModelConfig(latent_dim=2, conditional=True, classifier="mlp")
        >>> m = build_model(cfg, (1, 4, 4), num_classes=2)
        >>> sorted(classification_error(m, Split(torch.rand(8, 1, 4, 4), torch.arange(8) % 2)))
        ['error', 'error_se', 'n']
    """
    m = _model(model)
    if m.classifier is None:
        raise UsageError(
            "this model has no classifier q(y|x) to score (model.classifier, objective m2)"
        )
    if split.y is None or bool((split.y < 0).any()):
        raise UsageError(
            "the classification error needs every label of the split; this one has "
            + ("none" if split.y is None else "hidden ones (data.labels)")
        )
    device = next(m.parameters()).device
    wrong = 0
    for x, y in _batches(split, batch_size, device, True):
        assert y is not None
        wrong += int((m.classify(x).logits.argmax(-1) != y).sum())
    n = len(split)
    error = wrong / n
    return {"error": error, "error_se": math.sqrt(error * (1 - error) / n), "n": n}


def mean_and_se(values: Tensor | np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)), in float64."""
    a = np.asarray(
        values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64
    )
    if a.size == 0:
        raise UsageError("mean_and_se needs at least one value")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    return float(a.mean()), se


@torch.inference_mode()
def elbo_terms(
    run: Run, split: Split, samples: int = 1, batch_size: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean of every ELBO term over a split: ``elbo``, ``recon`` (-E log p(x|z)), ``kl``.

    Also ``elbo_se``, the standard error of the mean ELBO over examples. A posterior
    without a density (plain autoencoder, implicit posterior) has no ELBO: its terms are
    ``loss`` and ``recon``, with ``recon_se``.
    """
    m = run.model
    labels = _labels_needed(m, split)
    per: dict[str, list[Tensor]] = {}
    density = has_density(m)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for x, y in _batches(split, batch_size, run.device, labels):
            # Without a posterior density (point mass, implicit) only reconstruction exists.
            terms = run.elbo(x, y, samples=samples) if density else AutoencoderLoss()(m, x, y).terms
            for key, v in terms.items():
                per.setdefault(key, []).append(v.detach().to("cpu", torch.float64))
    out: dict[str, Any] = {}
    for key, parts in per.items():
        out[key] = float(torch.cat(parts).mean())
    main = "elbo" if "elbo" in per else "recon"
    out[f"{main}_se"] = mean_and_se(torch.cat(per[main]))[1]
    return out | {"n": len(split), "samples": samples}


def _marginal_log_prob(dist: Distribution, z: Tensor) -> Tensor | None:
    """Per-dimension marginal log-densities ``(..., D)`` where the distribution allows it.

    Factorised distributions (``Independent`` over the last axis) give them directly; a
    mixture of factorised components (a mixture-of-Gaussians or VampPrior prior) gives
    each dimension's marginal as a mixture too. Anything else (a flow) has no closed
    per-dimension marginal: None.
    """
    if isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1:
        lp: Tensor = dist.base_dist.log_prob(z)
        return lp
    if isinstance(dist, MixtureSameFamily):
        comp = dist.component_distribution
        if isinstance(comp, Independent) and comp.reinterpreted_batch_ndims == 1:
            lp_comp = comp.base_dist.log_prob(z.unsqueeze(-2))  # (..., K, D)
            log_mix = torch.log_softmax(dist.mixture_distribution.logits, dim=-1).unsqueeze(-1)
            return torch.logsumexp(lp_comp + log_mix, dim=-2)
    return None


@torch.inference_mode()
def kl_per_dim(
    model: VAE | Run, split: Split, *, samples: int = 16, batch_size: int = 1000, seed: int = 0
) -> tuple[Tensor | None, str]:
    """KL(q(z_d|x) || p(z_d)) per latent dimension, averaged over the split.

    Returns ``(values (D,), method)`` with method ``analytic`` (closed form of the
    factorised posterior and prior), ``monte carlo`` (``samples`` draws, marginal
    densities), or ``(None, reason)`` when the posterior or prior does not factorise
    over dimensions (a flow) or has no density (a point mass).
    """
    m = _model(model)
    device = next(m.parameters()).device
    labels = _labels_needed(m, split)
    if not has_density(m):
        return None, "undefined: the posterior has no density (point mass or implicit)"
    parts = m.composition
    closed_form = parts.posterior.factorised and parts.prior.factorised
    prior = m.prior
    total: Tensor | None = None
    method = ""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for x, y in _batches(split, batch_size, device, labels):
            q = m.encode(x, y)
            part: Tensor | None = None
            if (
                closed_form
                and isinstance(q, Independent)
                and isinstance(prior, Independent)
                and method != "monte carlo"
            ):
                try:
                    part = kl_divergence(q.base_dist, prior.base_dist)  # (B, D)
                    method = "analytic"
                except NotImplementedError:
                    part = None
            if part is None:
                z = q.rsample((samples,))
                lq, lp = _marginal_log_prob(q, z), _marginal_log_prob(prior, z)
                if lq is None or lp is None:
                    return (
                        None,
                        "undefined: the posterior or prior does not factorise over latent dimensions",
                    )
                part = (lq - lp).mean(0)
                method = "monte carlo"
            s = part.to(torch.float64).sum(0).cpu()
            total = s if total is None else total + s
    assert total is not None
    return total / len(split), method


# Active units are counted on posterior means whose Monte Carlo variance, averaged over
# the examples, is at most ACTIVE_UNIT_TOLERANCE for every unit: a twentieth of Burda's
# threshold of 0.01 (see moment_draws_needed). A fixed 128 independent draws once made all
# 40 units of a planar-flow model look active when 36 are (measured with 4096 draws); a
# fixed 2048 took 700 s on MNIST's test split for a two-layer hierarchy with an IAF. With
# antithetic pairs (shared_noise) and, in a hierarchy, each layer's conditional Gaussian
# (Rao-Blackwellised), 128 draws leave at most 8e-5 on the binarized-MNIST flows and
# hierarchies and take 46 s; 2048 stays the most taken (the error is reported).
ACTIVE_UNIT_TOLERANCE = 5e-4
ACTIVE_UNIT_MAX_DRAWS = 2048


def encode_split(
    run: Run, split: str = "test", *, dataset: Dataset | None = None, batch_size: int = 1000
) -> dict[str, np.ndarray]:
    """Every example of one split of the run's data encoded: :meth:`vaekit.rundir.Run.encode_split`."""
    return run.encode_split(split, dataset=dataset, batch_size=batch_size)


@torch.inference_mode()
def moment_draws_needed(
    model: VAE | Run,
    x: Tensor,
    y: Tensor | None = None,
    *,
    tolerance: float = ACTIVE_UNIT_TOLERANCE,
    max_draws: int = ACTIVE_UNIT_MAX_DRAWS,
    pilot: int = 500,
    seed: int = 0,
) -> tuple[int, float] | None:
    """How many draws :func:`posterior_moments` needs so that every unit's posterior
    mean carries Monte Carlo variance at most ``tolerance``, averaged over the examples:
    ``(draws, error)``, ``error`` being the largest such variance at that count (above
    ``tolerance`` only when ``max_draws`` stopped it). None when the posterior's moments
    have a closed form (no draws are taken).

    A mean from n draws of the conditional mean m (see
    :meth:`~vaekit.distributions.posteriors.MonteCarloMoments.moment_draws`) in antithetic
    pairs has variance 2 Var(pair average of m_d | x) / n (Var_q(m_d | x) / n for
    independent draws). Its average over x is estimated from MOMENT_DRAWS draws on a
    seeded random ``pilot`` of the examples; the count is MOMENT_DRAWS times a power of
    two, at most ``max_draws``.

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> from vaekit.model import build_model
        >>> flow = build_model(ModelConfig(latent_dim=2, flow=part("planar")), (1, 4, 4))
        >>> draws, bound = moment_draws_needed(flow, torch.rand(50, 1, 4, 4))
        >>> draws in (128, 256, 512, 1024, 2048) and (bound <= 5e-4 or draws == 2048)
        True
    """
    if tolerance <= 0:
        raise UsageError(f"tolerance must be > 0, got {tolerance}")
    if max_draws < MOMENT_DRAWS:
        raise UsageError(f"max_draws must be >= {MOMENT_DRAWS}, got {max_draws}")
    m = _model(model)
    if m.conditional and y is None:
        raise UsageError("this is a conditional model: pass the labels y to encode with")
    rows = torch.from_numpy(
        np.sort(np.random.default_rng(seed).permutation(len(x))[: min(pilot, len(x))])
    )
    q = _encode_rows(m, torch.as_tensor(x), None if y is None else torch.as_tensor(y), rows)
    if not isinstance(q, MonteCarloMoments):
        return None
    cond_mean, _ = q.moment_draws(MOMENT_DRAWS)
    # The mean of n draws is the mean of n / 2 pair averages (draw j with draw j + n/2):
    # its variance is 2 Var(pair) / n, right for antithetic pairs (shared_noise) and for
    # independent draws alike.
    half = MOMENT_DRAWS // 2
    pairs = (cond_mean[:half].double() + cond_mean[half : 2 * half].double()) / 2
    noise = (2 * pairs.var(0)).reshape(-1, cond_mean.shape[-1]).mean(0).max()
    draws = MOMENT_DRAWS
    while draws < max_draws and float(noise) / draws > tolerance:
        draws *= 2
    draws = min(draws, max_draws)
    return draws, float(noise) / draws


def latent_means(
    model: VAE | Run,
    x: Tensor,
    y: Tensor | None = None,
    *,
    batch_size: int = 1000,
    samples: int = MOMENT_DRAWS,
) -> Tensor:
    """E_q[z | x] for every example, shape ``(N, D)`` (on the CPU): the means of
    :func:`posterior_moments`."""
    return posterior_moments(model, x, y, batch_size=batch_size, samples=samples).mean


@torch.inference_mode()
def _code_usage(m: VAE, split: Split, labels: bool) -> dict[str, Any]:
    """Codebook usage of a discrete model over a split (the codes of the posterior's mode)."""
    head = m.encoder.head
    assert isinstance(head, CodeHead)
    device = next(m.parameters()).device
    codes = [head.codes(m.encode(x, y).mode) for x, y in _batches(split, 1000, device, labels)]
    return code_usage(torch.cat(codes), head.space)


def active_units(means: Tensor | np.ndarray, threshold: float = 0.01) -> tuple[int, list[float]]:
    """Burda et al. (2016)'s active units: dimensions with Cov_x(E_q[z_d|x]) > ``threshold``.

    ``means`` are the posterior means ``(N, D)`` over a data set. Returns the count and
    the per-dimension variances.
    """
    a = np.asarray(means.detach().cpu() if isinstance(means, Tensor) else means, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise UsageError(f"active_units needs posterior means of shape (N >= 2, D), got {a.shape}")
    var = a.var(axis=0, ddof=1)
    return int((var > threshold).sum()), [float(v) for v in var]


def classifier_accuracy(
    train_z: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    test_z: Tensor | np.ndarray,
    test_y: Tensor | np.ndarray,
    *,
    max_train: int = 20000,
    seed: int = 0,
) -> dict[str, float]:
    """Test accuracy of logistic regression and 5-nearest-neighbours on latent codes.

    Logistic regression asks whether the classes are linearly separated; k-NN whether
    they form clusters at all (a 2-D latent space is rarely linearly separable). At
    most ``max_train`` training codes are used, chosen with a fixed seed.
    """
    # scikit-learn costs ~1.3 s of start-up, to every command that reads runs: on use.
    from sklearn import linear_model, neighbors, pipeline, preprocessing

    def arr(a: Tensor | np.ndarray) -> np.ndarray:
        return np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a)

    zt, yt, zs, ys = arr(train_z), arr(train_y), arr(test_z), arr(test_y)
    if len(zt) != len(yt) or len(zs) != len(ys):
        raise UsageError("classifier_accuracy: codes and labels must have the same length")
    if len(np.unique(yt)) < 2:
        raise UsageError("classifier_accuracy needs at least two classes in the training labels")
    if len(zt) > max_train:
        idx = np.random.default_rng(seed).choice(len(zt), max_train, replace=False)
        zt, yt = zt[idx], yt[idx]
    logreg = pipeline.make_pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=2000)
    )
    knn = neighbors.KNeighborsClassifier(n_neighbors=5)
    return {
        "logistic_regression": float(logreg.fit(zt, yt).score(zs, ys)),
        "knn": float(knn.fit(zt, yt).score(zs, ys)),
    }


@contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` threads (None: leave the settings), then restore them.

    ``n`` holds torch's pool and the BLAS and OpenMP pools numpy, scipy and scikit-learn
    compute in (the latent classifiers, DCI's regressors): left at one thread per core,
    those spin against each other and against other processes on a shared machine (a
    logistic regression on 784-d VQ codes took 160 s with 2 BLAS threads on a busy 2-core
    machine, 42 s with 1).
    """
    if n is not None and n < 1:
        raise UsageError(f"threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    try:
        with ExitStack() as stack:
            if n is not None:
                # Before torch's own setting, so that what it restores is the original.
                stack.enter_context(threadpool_limits(limits=n))
                torch.set_num_threads(n)
            yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _layer_results(
    result: dict[str, Any], m: VAE, part: Split, variances: list[float], seed: int
) -> None:
    """With several stochastic layers: each layer's size, KL and active units."""
    sizes = layer_sizes(m)
    if sizes is None or not has_density(m):
        return
    result["layer_sizes"] = sizes
    result["kl_per_layer"] = kl_per_layer(m, part, seed=seed)
    result["active_units_per_layer"] = active_units_per_layer(variances, sizes)


def nonfinite_result(run: Run, key: str, value: Any, split: str) -> RunError:
    """The error for a figure of ``run`` that came out NaN or infinite: it names the weights
    file and what to load instead, for such a figure is not reported as a result."""
    path = getattr(run, "weights_file", None)
    weights = f"the weights in {path}" if path is not None else "its weights"
    instead = f"; {weights_fallback(run.dir, path)}" if path is not None else ""
    return RunError(
        f"{run.dir}: the {key} of the {split} split is {value}, not a number: {weights} are "
        f"damaged, or the model diverged, so nothing is reported{instead}"
    )


def _finite_or_stop(run: Run, figures: dict[str, Any], split: str) -> None:
    """Stop at once (before the long part) when a figure is NaN or infinite."""
    found = nonfinite_key(figures)
    if found is not None:
        raise nonfinite_result(run, *found, split)


def evaluate_run(
    run: Run,
    *,
    k: int = STANDARD_K,
    split: str = "test",
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    limit: int = 0,
    batch_size: int | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    classifier: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Every evaluation figure of a run as one JSON-able dict.

    Keys: ``nll`` and ``nll_se`` (nats, k-sample importance sampling; None with
    ``nll_note`` for a plain autoencoder; ``nll_note`` also says when the number is not a
    likelihood of the data, e.g. a Bernoulli cross-entropy on grey levels, see
    :meth:`~vaekit.distributions.LikelihoodHead.nll_caveat`), ``bits_per_dim`` (image data), ``elbo``,
    ``elbo_se``, ``recon``, ``kl``, ``kl_per_dim`` (+ ``kl_per_dim_method``),
    ``active_units`` with ``latent_variance`` (and, for posteriors whose means are Monte
    Carlo estimates, ``active_units_draws`` and ``active_units_mc_error``, see
    :func:`moment_draws_needed`), ``classifier`` (accuracies on latent
    means, where labels exist), ``error`` and ``error_se`` (a model with a classifier
    q(y|x), M2: its test error and binomial standard error; its ``nll`` and ``elbo`` sum
    the labels out) and ``seconds``; with several stochastic layers also
    ``layer_sizes``, ``kl_per_layer`` and ``active_units_per_layer`` (bottom layer first).
    A discrete posterior adds ``codes`` (the
    codebook's use over the split); one that is deterministic (VQ-VAE) needs a single
    sample, and its ``nll`` is the bound -log p(x|z_q) - log p(z_q) (``nll_bound``). ``prior_note``: the
    prior over codes is uniform, nothing learned yet.

    ``limit`` evaluates a seeded random ``limit`` of the split's examples, each class
    keeping its share (:func:`vaekit.data.limit_split`), for quick checks: never the first
    ones, which in a file's order can be far from the whole (the first 2,000 images of
    binarized MNIST's test split score ~20 nats better than the rest). ``subset_of`` then
    says how many the split holds. Where the result is saved in the run directory:
    :func:`vaekit.rundir.eval_file_name`.
    """
    _check_k(k)
    if limit < 0:
        raise UsageError(f"limit must be >= 0 (0 = every example), got {limit}")
    ds = dataset if dataset is not None else run.dataset(data_dir)
    binarize = run.config.data.binarize
    part = ds.split(split)
    if split == "train":
        # What the model saw: a dynamically binarized run's training split is grey.
        part = model_view(part, binarize, run.config.train.seed)
    if part.y is not None and bool((part.y < 0).any()):
        raise UsageError(
            f"the {split} split's labels were mostly hidden in training (data.labels="
            f"{run.config.data.labels}), and the conditional parts need one for each example: "
            "evaluate the test split (--split test) or the validation split"
        )
    whole = len(part)
    if limit:
        part = limit_split(part, limit, seed)
    if len(part) < 2:
        # Checked before anything is computed: the standard errors and the active units are
        # spreads over examples, which one example cannot give.
        asked = f"limit={limit} keeps" if limit else f"the {split} split holds"
        raise UsageError(
            f"{asked} {len(part)} example(s); an evaluation needs 2 or more (its standard "
            "errors and active units are spreads over examples): ask for a larger limit"
        )
    m = run.model
    d = int(np.prod(m.data_shape))
    result: dict[str, Any] = result_header(run, ds.name, split, len(part)) | {"k": k}
    if len(part) < whole:
        result["subset_of"] = whole
    seconds: dict[str, float] = {}
    with num_threads(threads) as used:
        result["threads"] = used
        labels = _labels_needed(m, part)
        density = has_density(m)

        t = time.perf_counter()
        terms = elbo_terms(run, part, samples=1, batch_size=1000, seed=seed)
        seconds["elbo"] = time.perf_counter() - t
        _finite_or_stop(run, {k: v for k, v in terms.items() if not k.endswith("_se")}, split)
        result |= {
            key: terms[key]
            for key in ("elbo", "elbo_se", "recon", "recon_se", "kl")
            if key in terms
        }

        if density:
            t = time.perf_counter()
            # A deterministic posterior with a density (VQ-VAE's one-hot code) gives the same
            # sample every time: one is the whole estimate, the bound log p(x|z_q) + log p(z_q).
            deterministic = not m.composition.posterior.stochastic
            ll = log_likelihood_split(
                m,
                part,
                1 if deterministic else k,
                batch_size=batch_size,
                max_rows=max_rows,
                seed=seed,
                progress=progress,
            )
            seconds["nll"] = time.perf_counter() - t
            nll, se = mean_and_se(-ll)
            _finite_or_stop(run, {"nll": nll}, split)
            result["nll"], result["nll_se"] = nll, se
            if ds.is_image:
                result["bits_per_dim"] = nll / (d * math.log(2))
                result["bits_per_dim_se"] = se / (d * math.log(2))
            # Every split is binary here with dynamic binarization (the dataset's kind is
            # that of its grey training split).
            caveat = m.decoder.head.nll_caveat("binary" if binarize == "dynamic" else ds.kind)
            if deterministic:
                result["nll_bound"] = True
                caveat = (
                    "the bound -log p(x|z_q) - log p(z_q) (an upper bound on the NLL): the posterior "
                    "is one code per example, so every importance sample is the same and one is used"
                    + (f"; {caveat}" if caveat else "")
                )
            if caveat:
                result["nll_note"] = caveat
        else:
            result["nll"] = result["nll_se"] = None
            result["nll_note"] = (
                "undefined: the posterior has no density (a plain autoencoder's point mass or an "
                "implicit posterior), so neither the ELBO nor the importance-sampled likelihood exists"
            )

        if m.classifier is not None and part.y is not None:
            # The semi-supervised model's own classifier q(y|x) on the split's labels.
            scored = classification_error(m, part)
            result["error"], result["error_se"] = scored["error"], scored["error_se"]
        if m.composition.posterior.discrete:
            result["codes"] = _code_usage(m, part, labels)
        note = prior_note(run)
        if note:
            result["prior_note"] = note

        kl_d, method = kl_per_dim(m, part, seed=seed)
        result["kl_per_dim"] = None if kl_d is None else [float(v) for v in kl_d]
        result["kl_per_dim_method"] = method

        t = time.perf_counter()
        y_enc = part.y if labels else None
        plan = moment_draws_needed(m, part.x, y_enc, seed=seed)
        if plan is not None:
            result["active_units_draws"], result["active_units_mc_error"] = plan
        unit_draws = MOMENT_DRAWS if plan is None else plan[0]
        means = latent_means(m, part.x, y_enc, samples=unit_draws)
        count, variances = active_units(means)
        result["active_units"] = count
        result["latent_variance"] = variances
        _layer_results(result, m, part, variances, seed)

        result["classifier"] = None
        if (
            classifier
            and part.y is not None
            and ds.train.y is not None
            and len(torch.unique(ds.train.y)) > 1
        ):
            train = ds.train
            if train.y is not None and bool((train.y < 0).any()):
                # data.labels hid most training labels: the probe learns from those kept.
                train = train.select(torch.nonzero(train.y >= 0).squeeze(1))
            if len(train) > 20000:
                idx = torch.from_numpy(
                    np.random.default_rng(seed).choice(len(train), 20000, replace=False)
                )
                train = Split(train.x[idx], None if train.y is None else train.y[idx])
            # Fitted on the images the encoder saw, as its test split is: a dynamically
            # binarized run's training split is grey, its test split one binary draw.
            train = model_view(train, binarize, run.config.train.seed)
            # Both sides with the same number of draws: for flow and implicit posteriors the
            # means carry Monte Carlo noise, and a classifier fitted on noisier train means
            # than its test means would be scored on a shifted input.
            train_means = latent_means(m, train.x, train.y if labels else None)
            # The active units' means, when they took the classifier's number of draws.
            test_means = means if unit_draws == MOMENT_DRAWS else latent_means(m, part.x, y_enc)
            assert train.y is not None
            result["classifier"] = classifier_accuracy(
                train_means, train.y, test_means, part.y, seed=seed
            ) | {"train_n": len(train)}
        seconds["latent"] = time.perf_counter() - t
    result["seconds"] = {key: round(v, 3) for key, v in seconds.items()}
    _finite_or_stop(run, result, split)  # results are always finite (valid JSON)
    return result
