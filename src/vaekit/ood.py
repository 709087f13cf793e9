"""Out-of-distribution and anomaly scores of a trained run, per example, and their metrics.

Every score is a number per example; :data:`SCORES` says which way each points (its
anomaly score is the value or minus it, so that higher always means "more unusual"):

- ``log_px``: the importance-sampled log p(x) (:func:`vaekit.evaluate.log_likelihood`,
  ``k`` samples); the score whose failure Nalisnick et al. (2019) showed: a model of
  Fashion-MNIST gives MNIST digits *higher* likelihoods;
- ``elbo``, ``recon`` (-E_q log p(x|z)) and ``kl``: the terms of the ELBO;
- ``ratio``: log p(x) - log p_bg(x), the likelihood ratio of Ren et al. (2019) against a
  background model (a second run trained on perturbed inputs, ``background=``);
- ``complexity``: S(x) = -log2 p(x) - L(x) in bits, with L(x) the PNG length of the
  8-bit image (Serra et al. 2020's input complexity; ``png_bits`` is L(x));
- ``llr_gtK`` (and ``elbo_gtK``): Havtorn et al. (2021)'s LLR>k = L(x) - L>k(x) for a
  hierarchy, where L>k is the bound whose top L-k layers come from q(z|x) and whose bottom
  k layers come from the prior's conditionals p(z_{<=k} | z_{>k});
- ``regret``: likelihood regret (Xiao et al. 2020), log p(x) after the encoder is
  fine-tuned on that one example minus log p(x) before: slow, so asked for with
  ``regret_steps > 0``.

:func:`ood_metrics` gives AUROC, AUPRC and the FPR at 80% TPR of in-distribution against
out-of-distribution scores (out-of-distribution is the positive class, as in Havtorn et
al.'s code); :func:`anomaly_threshold` a threshold from a quantile of validation scores.

Example:
    >>> import numpy as np
    >>> m = ood_metrics(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0]))
    >>> round(m["auroc"], 4), m["fpr80"]
    (0.8333, 0.3333333333333333)
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import rankdata
from torch import Tensor
from torch.distributions import Distribution
from torch.func import functional_call, vmap
from tqdm import tqdm

from vaekit.data import DataError, Split, limit_split, load_dataset
from vaekit.data.core import check_finite_rows
from vaekit.data.readers import read_amat, read_csv, read_npy
from vaekit.distributions.hierarchical import HierarchicalDistribution, HierarchicalPrior
from vaekit.distributions.posteriors import sample_with_log_prob
from vaekit.errors import UsageError
from vaekit.evaluate import (
    StreamingLogSumExp,
    has_density,
    log_likelihood,
    log_weights,
    nonfinite_result,
)
from vaekit.optim import EagerAdam

if TYPE_CHECKING:
    from vaekit.data import Split
    from vaekit.model import VAE
    from vaekit.rundir import Run

__all__ = [
    "score",
    "SCORES",
    "DEFAULT_SCORES",
    "anomaly_sign",
    "anomaly_scores",
    "auroc",
    "auprc",
    "fpr_at_tpr",
    "ood_metrics",
    "anomaly_threshold",
    "png_bits",
    "bound_above",
    "likelihood_regret",
    "ScoreSettings",
    "default_scores",
    "score_split",
    "score_columns",
    "read_scoring_data",
    "check_same_shape",
]

# name: (+1 when a higher value is more anomalous, -1 when lower is; what it is).
SCORES: dict[str, tuple[int, str]] = {
    "log_px": (-1, "importance-sampled log p(x), nats (Nalisnick et al. 2019's failure case)"),
    "elbo": (-1, "the ELBO, nats"),
    "recon": (+1, "the reconstruction term -E_q log p(x|z), nats"),
    "kl": (+1, "KL(q(z|x) || p(z)), nats"),
    "ratio": (-1, "log p(x) - log p_background(x) (Ren et al. 2019)"),
    "complexity": (+1, "-log2 p(x) - PNG bits (Serra et al. 2020)"),
    "llr": (+1, "LLR>k = L - L>k (Havtorn et al. 2021)"),
    "elbo_gt": (-1, "L>k, the bound with the bottom k layers from the prior (Havtorn et al. 2021)"),
    "regret": (+1, "likelihood regret (Xiao et al. 2020), nats"),
}
# What ScoreSettings computes unless told (any run with a density has them); a plain
# `vaekit score` adds what applies to the run (:func:`default_scores`).
DEFAULT_SCORES = ("log_px", "elbo")


def _kind(name: str) -> str:
    """The score a column belongs to: ``llr_gt2`` -> ``llr``, ``elbo_gt1`` -> ``elbo_gt``."""
    if name.startswith("llr_gt"):
        return "llr"
    if name.startswith("elbo_gt"):
        return "elbo_gt"
    return name


def anomaly_sign(name: str) -> int | None:
    """+1 when a higher value of column ``name`` is more anomalous, -1 when a lower one is,
    None for a column that is not a score (``png_bits``, ``bg_log_px``, ...)."""
    spec = SCORES.get(_kind(name))
    return None if spec is None else spec[0]


def anomaly_scores(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every score column turned so that higher means more anomalous."""
    out = {}
    for name, values in columns.items():
        sign = anomaly_sign(name)
        if sign is not None:
            out[name] = sign * np.asarray(values, dtype=np.float64)
    return out


# -- metrics ------------------------------------------------------------------------------


def _labelled(in_scores: Any, out_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(in_scores, dtype=np.float64).ravel()
    b = np.asarray(out_scores, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise UsageError(
            f"the metrics need scores of both sets, got {len(a)} in-distribution and "
            f"{len(b)} out-of-distribution"
        )
    s = np.concatenate([a, b])
    if not np.isfinite(s).all():
        raise UsageError("the scores hold NaN or infinite values; the metrics need finite scores")
    return s, np.concatenate([np.zeros(len(a)), np.ones(len(b))])


def auroc(in_scores: Any, out_scores: Any) -> float:
    """Area under the ROC curve, out-of-distribution the positive class, higher scores more
    anomalous: the probability that an out-of-distribution example scores above an
    in-distribution one (ties count half; the Mann-Whitney statistic)."""

    s, y = _labelled(in_scores, out_scores)
    ranks = rankdata(s)  # average ranks: ties count half
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _curve(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, highest score first."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return tp, fp


def auprc(in_scores: Any, out_scores: Any) -> float:
    """Average precision, out-of-distribution the positive class: the precision at each
    distinct threshold weighed by the recall it adds (no interpolation)."""
    s, y = _labelled(in_scores, out_scores)
    tp, fp = _curve(s, y)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(in_scores: Any, out_scores: Any, tpr: float = 0.8) -> float:
    """The false-positive rate at the first threshold that flags ``tpr`` of the
    out-of-distribution examples (Havtorn et al.'s FPR80 at 0.8)."""
    if not 0 < tpr <= 1:
        raise UsageError(f"tpr must be in (0, 1], got {tpr}")
    s, y = _labelled(in_scores, out_scores)
    tp, fp = _curve(s, y)
    i = int(np.flatnonzero(tp / tp[-1] >= tpr)[0])
    return float(fp[i] / fp[-1]) if fp[-1] else 0.0


def ood_metrics(in_scores: Any, out_scores: Any) -> dict[str, float]:
    """AUROC, AUPRC and FPR at 80% TPR of anomaly scores (higher = more anomalous)."""
    return {
        "auroc": auroc(in_scores, out_scores),
        "auprc": auprc(in_scores, out_scores),
        "fpr80": fpr_at_tpr(in_scores, out_scores, 0.8),
    }


def anomaly_threshold(valid_scores: Any, quantile: float = 0.99) -> float:
    """The anomaly score above which an example is flagged: the ``quantile`` of the scores
    of in-distribution validation examples, so that about ``1 - quantile`` of new
    in-distribution examples are flagged (a false-positive rate chosen in advance)."""
    if not 0 < quantile < 1:
        raise UsageError(f"the quantile must be in (0, 1), got {quantile}")
    a = np.asarray(valid_scores, dtype=np.float64).ravel()
    if len(a) < 2 or not np.isfinite(a).all():
        raise UsageError(
            f"a threshold needs 2 or more finite validation scores, got {len(a)} "
            f"({int((~np.isfinite(a)).sum())} not finite)"
        )
    return float(np.quantile(a, quantile))


# -- input complexity ---------------------------------------------------------------------


def png_bits(x: Tensor | np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """L(x) of Serra et al. (2020): the length in bits of each image as a PNG at the
    strongest compression, of its 8-bit levels (values in [0, 1] times 255, rounded)."""

    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise UsageError(
            f"the compressed length is that of an image (1 or 3 channels); these examples "
            f"are of shape {shape}"
        )
    a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    levels = np.clip(np.rint(a.reshape(len(a), *shape) * 255), 0, 255).astype(np.uint8)
    out = np.empty(len(levels))
    for i, img in enumerate(levels):
        im = Image.fromarray(img[0] if shape[0] == 1 else img.transpose(1, 2, 0))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True, compress_level=9)
        out[i] = 8 * buf.tell()
    return out


# -- Havtorn et al.'s L>k ----------------------------------------------------------------


def _layers(m: VAE) -> int | None:
    sizes = getattr(m.encoder.head, "sizes", None)
    return None if sizes is None else len(sizes)


def check_llr_k(m: VAE, ks: Sequence[int]) -> None:
    """The k of LLR>k must leave a layer to q: 1 <= k <= L - 1 for L stochastic layers."""
    layers = _layers(m)
    if layers is None:
        raise UsageError(
            "LLR>k needs a model with several stochastic layers (model.posterior=hierarchical "
            "or hierarchical-conv); this one has one"
        )
    bad = [k for k in ks if not 1 <= k <= layers - 1]
    if bad:
        raise UsageError(
            f"LLR>k takes k from 1 to {layers - 1} for {layers} stochastic layers (the bottom "
            f"k from the prior, the rest from q), got {bad}"
        )


def bound_above(
    m: VAE,
    x: Tensor,
    y: Tensor | None,
    k: int,
    samples: int = 1,
    *,
    prior_mean: bool = False,
) -> Tensor:
    """L>k(x) of Havtorn et al. (2021), shape ``(B,)``: the importance-weighted bound with
    the top layers z_{>k} from q(z_{>k}|x) and the bottom k from the prior's conditionals,

    ``log 1/S sum_s p(x|z_s) p(z_{>k,s}) / q(z_{>k,s}|x)``, ``z_{>k} ~ q``, ``z_{<=k} ~ p(.|z_{>k})``

    (the bottom layers' prior and proposal cancel). ``k=0`` is the usual bound with ``S``
    samples. ``prior_mean`` takes the bottom layers at their conditional prior means (as
    the authors' code does) instead of drawing them.
    """

    q = m.encode(x, y)
    prior = m.prior
    if not isinstance(q, HierarchicalDistribution) or not isinstance(prior, HierarchicalPrior):
        check_llr_k(m, [k])  # says what is needed
        raise UsageError("LLR>k needs a hierarchical posterior and prior")
    z = q.rsample((samples,))
    if k > 0:
        # Layers k+1.. (1-based) kept, those below redrawn from the prior given them.
        z = prior.sample_below(z, k + 1, temperature=0.0 if prior_mean else 1.0)
    lq = q.layer_log_probs(z)
    lp = prior.layer_log_probs(z)
    log_w = m.decode(z, y).log_prob(x) + sum(lp[k:]) - sum(lq[k:])
    return torch.logsumexp(log_w.double(), 0) - math.log(samples)


# -- likelihood regret -------------------------------------------------------------------

# Examples tuned at once by the vectorised regret: each holds its own copy of the encoder's
# parameters, gradients and Adam moments (a 784-500-500 encoder: ~11 MB an example).
_REGRET_CHUNK = 25


def _inference_parameters(m: VAE) -> list[torch.nn.Parameter]:
    """The encoder's own parameters: not the decoder's, nor the prior's (a hierarchy's
    posterior part holds its conditional priors; the convolutional one the whole model)."""
    generative = {id(p) for p in m.prior_parameters()} | {id(p) for p in m.decoder.parameters()}
    return [p for p in m.encoder.parameters() if id(p) not in generative]


class _Proposal(torch.nn.Module):
    """One example's draw from q(z|x) and its log density, as a module call, so that
    ``torch.func.functional_call`` can run it with that example's own encoder parameters
    (the decoder's data checks stay outside ``vmap``, which cannot run them)."""

    def __init__(self, m: VAE) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q = self.m.encode(x.unsqueeze(0), None if y is None else y.unsqueeze(0))
        z, log_q = sample_with_log_prob(q, (1,))
        return z[0, 0], log_q[0, 0]


def _tune_each(
    work: VAE,
    params: list[torch.nn.Parameter],
    prior_of: Callable[[Tensor | None], Distribution],
    x: Tensor,
    y: Tensor | None,
    steps: int,
    lr: float,
    seed: int,
) -> list[list[Tensor]]:
    """The encoder parameters tuned on each example alone, one example after another (the
    reference the vectorised :func:`_tune_together` is tested against)."""
    start = [p.detach().clone() for p in params]
    out = []
    for i in range(len(x)):
        with torch.no_grad():
            for p, p0 in zip(params, start, strict=True):
                p.copy_(p0)
        opt = EagerAdam(params, lr=lr, betas=(0.9, 0.999), weight_decay=5e-5)
        # Clones: the examples may be inference tensors, which autograd cannot save.
        xi = x[i : i + 1].clone()
        yi = None if y is None else y[i : i + 1].clone()
        prior = prior_of(yi)
        torch.manual_seed(seed)  # every example the same draws (see likelihood_regret)
        with torch.enable_grad():
            for _ in range(steps):
                q = work.encode(xi, yi)
                z, log_q = sample_with_log_prob(q, (1,))
                elbo = work.decode(z, yi).log_prob(xi) + prior.log_prob(z) - log_q
                opt.zero_grad(set_to_none=True)
                (-elbo.mean()).backward()
                opt.step()
        out.append([p.detach().clone() for p in params])
    with torch.no_grad():
        for p, p0 in zip(params, start, strict=True):
            p.copy_(p0)
    return out


def _tune_together(
    work: VAE,
    params: list[torch.nn.Parameter],
    prior_of: Callable[[Tensor | None], Distribution],
    x: Tensor,
    y: Tensor | None,
    steps: int,
    lr: float,
    seed: int,
) -> list[list[Tensor]]:
    """:func:`_tune_each` for a batch at once: the encoder parameters stacked with one copy
    per example, the proposal run with each example's own copy under ``torch.func.vmap``
    (``randomness="same"``: the draws :func:`_tune_each` makes for every example), the
    decoder and prior on the batch as usual. The summed loss gives each copy its own
    example's gradient, and Adam is elementwise, so one Adam over the stacked copies is
    each example's own Adam."""

    proposal = _Proposal(work)
    tuned = {id(p) for p in params}
    names = [n for n, p in proposal.named_parameters() if id(p) in tuned]
    by_name = dict(proposal.named_parameters())
    b = len(x)
    stacked = {
        n: by_name[n].detach().unsqueeze(0).repeat(b, *[1] * by_name[n].dim()).requires_grad_()
        for n in names
    }
    opt = EagerAdam(list(stacked.values()), lr=lr, betas=(0.9, 0.999), weight_decay=5e-5)
    xs = x.clone()
    ys = None if y is None else y.clone()

    def draw(p: dict[str, Tensor], xi: Tensor, yi: Tensor | None) -> tuple[Tensor, Tensor]:
        out: tuple[Tensor, Tensor] = functional_call(proposal, p, (xi, yi), strict=False)
        return out

    batched = vmap(draw, in_dims=(0, 0, None if ys is None else 0), randomness="same")
    prior = prior_of(ys)
    torch.manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            z, log_q = batched(stacked, xs, ys)
            z, log_q = z.unsqueeze(0), log_q.unsqueeze(0)  # sample dim first: (1, B, ...)
            elbo = work.decode(z, ys).log_prob(xs) + prior.log_prob(z) - log_q
            opt.zero_grad(set_to_none=True)
            (-elbo.sum()).backward()
            opt.step()
    return [[stacked[n][i].detach() for n in names] for i in range(b)]


def likelihood_regret(
    m: VAE,
    x: Tensor,
    y: Tensor | None = None,
    *,
    steps: int = 100,
    lr: float = 2e-4,
    k: int = 100,
    before: Tensor | None = None,
    vectorized: bool = False,
) -> tuple[Tensor, Tensor]:
    """Likelihood regret (Xiao et al. 2020) of each example, and log p(x) after tuning.

    For each example, a copy of the encoder is fine-tuned on that example alone: ``steps``
    Adam steps (lr ``lr``, betas (0.9, 0.999), weight decay 5e-5, as the authors' code) on
    its one-sample negative ELBO, the decoder and the prior held fixed. The regret is
    log p(x) with the tuned encoder minus log p(x) with the trained one, both importance
    sampled with ``k`` samples (``before`` when already computed).

    Every example is tuned and scored with the same random draws (one seed taken from the
    global generator): common random numbers, so that an example's regret does not depend
    on which other examples are scored with it. ``vectorized`` tunes up to 25 examples at
    once, each with its own copy of the encoder's parameters (``torch.func.vmap``), rather
    than one after another; both give the same numbers. It pays where the Python overhead
    of one-example steps dominates, a small encoder (5x on the tests' tiny hierarchy); a
    784-500-500 encoder is bound by reading each example's weights either way (1.21 CPU-s
    an example vectorised, 1.07 one at a time), hence the default. Cost: ``steps``
    forward and backward passes of one example per example, then ``k`` samples.
    """

    if steps < 1:
        raise UsageError(f"likelihood regret needs 1 or more steps, got {steps}")
    work = copy.deepcopy(m)
    params = _inference_parameters(work)
    tuned = {id(p) for p in params}
    for p in work.parameters():
        # The decoder and the prior stay fixed: no gradient reaches them (nor the run's model).
        p.requires_grad_(id(p) in tuned)
    with torch.no_grad():
        # p(z) fixed at the trained model's: a VampPrior is built from the encoder. From
        # the copy: a hierarchy's joint prior runs its conditional networks when scoring,
        # and the copy's take no gradient.
        marginal = work.prior
    per_class = y is not None and m.composition.prior.per_class

    def prior_of(labels: Tensor | None) -> Distribution:
        """The prior an example's bound takes: p(z|y) for a prior per class, made here from
        the trained model (a class-vamp reads the encoder, which the copy tunes; its
        distributions are computed as they are made, so no gradient reaches the run), else
        p(z)."""
        if not per_class:
            return marginal
        with torch.no_grad():
            return m.prior_given(labels)

    if before is None:
        with torch.inference_mode():
            before = log_likelihood(m, x, y, k)
    seed = int(torch.randint(2**62, ()))
    device = x.device
    after = torch.empty(len(x), dtype=torch.float64)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for c in range(0, len(x), _REGRET_CHUNK):
            xc = x[c : c + _REGRET_CHUNK]
            yc = None if y is None else y[c : c + _REGRET_CHUNK]
            tune = _tune_together if vectorized else _tune_each
            states = tune(work, params, prior_of, xc, yc, steps, lr, seed)
            for i, state in enumerate(states):
                with torch.no_grad():
                    for p, value in zip(params, state, strict=True):
                        p.copy_(value)
                    xi = xc[i : i + 1].clone()
                    yi = None if yc is None else yc[i : i + 1].clone()
                    torch.manual_seed(seed + 1)
                    q = work.encode(xi, yi)
                    acc = StreamingLogSumExp()
                    prior = prior_of(yi)
                    for start_k in range(0, k, 1000):
                        acc.update(log_weights(work, q, xi, yi, min(1000, k - start_k), prior))
                    after[c + i] = (acc.result() - math.log(k))[0].cpu()
    return after - before.cpu().double(), after


# -- data ----------------------------------------------------------------------------------

# Single files whose rows are scored in the file's order by default (every row).
_ROW_FILES = (".csv", ".tsv", ".npy", ".amat")


def _row_file(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path if path.is_file() and path.suffix.lower() in _ROW_FILES else None


def read_scoring_data(
    name: str,
    split: str | None = None,
    *,
    data_dir: str | None = None,
    limit: int = 0,
    seed: int = 0,
) -> tuple[Split, str]:
    """The examples to score from a DATA argument, and what they are, in words.

    A named dataset (``mnist-10k``, ``fashion-mnist``, ...), a folder or ``.npz`` with
    splits, or a ``module:function`` gives its ``split`` (default ``test``; ``all``: every
    split, train first). A single ``.csv``/``.tsv``/``.npy``/``.amat`` file gives every
    row in the file's order by default (``split=None`` or ``all``), so that the scores line
    up with its rows; ``train``/``test`` take the split a run trained on it would see.
    ``limit`` keeps a seeded random subset (:func:`vaekit.data.limit_split`).
    """

    if split not in (None, "all", "train", "valid", "test"):
        raise UsageError(f"split must be train, valid, test or all, got {split!r}")
    if limit < 0:
        raise UsageError(f"limit must be >= 0 (0 = every example), got {limit}")
    rows = _row_file(name)
    if rows is not None and split in (None, "all"):
        suffix = rows.suffix.lower()
        if suffix in (".csv", ".tsv"):
            table = read_csv(rows)
            xa, ya = table.x, table.y
        else:
            xa, ya = (read_npy(rows) if suffix == ".npy" else read_amat(rows)), None
        if xa.dtype == np.uint8:  # 8-bit images, as the dataset readers scale them
            xa = xa.astype(np.float32) / 255
        xa = np.asarray(xa, dtype=np.float32)
        check_finite_rows(xa, str(rows))
        part = Split(torch.from_numpy(xa), None if ya is None else torch.from_numpy(np.asarray(ya)))
        what = f"{rows} (every row, in order)"
    else:
        ds = load_dataset(name, data_dir_=data_dir)
        if split == "all":
            parts = [s for s in (ds.train, ds.valid, ds.test) if s is not None]
            ys = [s.y for s in parts if s.y is not None]
            part = Split(
                torch.cat([s.x for s in parts]),
                torch.cat(ys) if len(ys) == len(parts) else None,
            )
        else:
            part = ds.split(split or "test")
        what = f"{ds.name} ({split or 'test'}{' splits' if split == 'all' else ' split'})"
    if limit and limit < len(part):
        part = limit_split(part, limit, seed)
        what += f", a seeded {limit} of them"
    return part, what


def check_same_shape(run: Run, split: Split, what: str) -> None:
    """A DataError unless ``split``'s examples have the run's data shape (or its size
    flat): scores of examples of another shape do not exist."""

    shape = tuple(int(d) for d in run.data_shape)
    got = tuple(int(d) for d in split.x.shape[1:])
    flat = int(np.prod(shape))
    squeezed = tuple(d for d in got if d != 1)
    if got != shape and got != (flat,) and squeezed != tuple(d for d in shape if d != 1):
        raise DataError(
            f"{what} holds examples of shape {got}, but {run.dir} was trained on examples of "
            f"shape {shape}: a model scores only data of its own shape (resize or select the "
            "columns first, or score with a run trained on data of this shape)"
        )


def _binarized(run: Run, split: Split, seed: int) -> Split:
    """The examples as the run's model sees data: its data.binarize applied (threshold, or
    one seeded Bernoulli draw for static and dynamic, as its test split got)."""

    mode = run.config.data.binarize
    if mode == "none":
        return split
    x = split.x.clamp(0, 1)
    if mode == "threshold":
        return replace(split, x=(x > 0.5).float())
    gen = torch.Generator().manual_seed(seed)
    return replace(split, x=torch.bernoulli(x, generator=gen))


# -- the scores of a split ---------------------------------------------------------------


@dataclass
class ScoreSettings:
    """What :func:`score_split` computes and how."""

    scores: Sequence[str] = DEFAULT_SCORES
    # Importance samples of log p(x).
    k: int = 100
    # Monte Carlo samples of the ELBO terms per example.
    elbo_samples: int = 10
    # LLR>k: the k values, the importance samples of both bounds, and whether the bottom
    # layers sit at their prior means (the authors' code) rather than being drawn.
    llr_k: Sequence[int] = (1,)
    llr_samples: int = 1
    llr_prior_mean: bool = False
    # Likelihood regret: optimiser steps per example and learning rate.
    regret_steps: int = 100
    regret_lr: float = 2e-4
    batch_size: int = 100
    seed: int = 0


def default_scores(run: Run) -> tuple[str, ...]:
    """The scores a plain ``vaekit score`` computes for this run: log p(x) and the ELBO
    terms, the input complexity for images, LLR>1 for a hierarchy (a background run and
    likelihood regret are asked for by name)."""
    out = ["log_px", "elbo"]
    if run.info["data"].get("is_image", False):
        out.append("complexity")
    if _layers(run.model) is not None:
        out.append("llr")
    return tuple(out)


def score_columns(settings: ScoreSettings) -> list[str]:
    """The score columns :func:`score_split` gives for ``settings`` (those a threshold or
    a metric can use), in order."""
    names = _needed(settings)
    out = ["log_px"] if names & {"log_px", "ratio", "complexity", "regret"} else []
    out += ["elbo", "recon", "kl"] if names & {"elbo", "recon", "kl"} else []
    out += [n for n in ("ratio", "complexity") if n in names]
    if "llr" in names:
        for k in settings.llr_k:
            out += [f"elbo_gt{k}", f"llr_gt{k}"]
    return out + (["regret"] if "regret" in names else [])


def _needed(settings: ScoreSettings) -> set[str]:
    names = set(settings.scores)
    unknown = names - {"log_px", "elbo", "recon", "kl", "ratio", "complexity", "llr", "regret"}
    if unknown:
        raise UsageError(
            f"unknown score(s) {sorted(unknown)}; choose from log_px, elbo (with recon and kl), "
            "ratio, complexity, llr, regret"
        )
    return names


def score_split(
    run: Run,
    split: Split,
    settings: ScoreSettings | None = None,
    *,
    background: Run | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-example columns for every example of ``split`` (see the module's list) and the
    seconds each score took. Columns are float64 arrays of ``len(split)``; which exist
    depends on ``settings.scores``: ``elbo`` brings ``recon`` and ``kl``; ``ratio``
    brings ``bg_log_px`` and needs ``background``; ``complexity`` brings ``png_bits``
    (images only); ``llr`` brings ``elbo_gtK`` and ``llr_gtK`` for each K; ``regret``
    brings ``log_px_tuned``. The draws are seeded and leave the global random state alone.
    """

    s = settings or ScoreSettings()
    names = _needed(s)
    m = run.model
    if not has_density(m):
        raise UsageError(
            f"{run.dir}: the posterior has no density (a plain autoencoder or an implicit "
            "posterior), so neither log p(x) nor the ELBO exists to score with"
        )
    if s.k < 1 or s.elbo_samples < 1 or s.llr_samples < 1 or s.batch_size < 1:
        raise UsageError("k, elbo_samples, llr_samples and batch_size must be >= 1")
    if "ratio" in names and background is None:
        raise UsageError(
            "the likelihood ratio (Ren et al. 2019) needs a background model: a second run "
            "trained on perturbed inputs (--background RUN2, Python: background=...)"
        )
    if "llr" in names:
        check_llr_k(m, s.llr_k)
    if "complexity" in names and not run.info["data"].get("is_image", False):
        raise UsageError(
            "the input complexity (Serra et al. 2020) is the compressed length of an image, "
            "and this run's data are not images; leave out the complexity score"
        )
    if background is not None and tuple(background.data_shape) != tuple(run.data_shape):
        raise DataError(
            f"the background run {background.dir} models examples of shape "
            f"{tuple(background.data_shape)}, the run {run.dir} {tuple(run.data_shape)}: "
            "the likelihood ratio needs both models of the same data"
        )
    check_same_shape(run, split, "the data")
    part = _binarized(run, split, s.seed)
    labels = part.y if m.conditional else None
    if m.conditional and labels is None:
        raise UsageError("this is a conditional model, but the data have no labels")
    # Through the run's own checks: flat or shaped examples, finite, in [0, 1] for [0, 1] data.
    x_all = run._x(part.x).cpu()
    n = len(x_all)
    cols: dict[str, list[Tensor]] = {}
    seconds: dict[str, float] = {}

    def add(name: str, value: Tensor) -> None:
        cols.setdefault(name, []).append(value.detach().to("cpu", torch.float64))

    def timed(name: str, t0: float) -> None:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

    device = run.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(s.seed)
        bar = tqdm(total=n, desc="scores", disable=not progress, leave=False, dynamic_ncols=True)
        for i in range(0, n, s.batch_size):
            x = x_all[i : i + s.batch_size].to(device)
            y = None if labels is None else labels[i : i + s.batch_size].to(device)
            log_px = None
            if names & {"log_px", "ratio", "complexity", "regret"}:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    log_px = log_likelihood(m, x, y, s.k)
                add("log_px", log_px)
                timed("log_px", t0)
            if "elbo" in names or "recon" in names or "kl" in names:
                t0 = time.perf_counter()
                terms = run.elbo(x, y, samples=s.elbo_samples)
                for key in ("elbo", "recon", "kl"):
                    add(key, terms[key])
                timed("elbo", t0)
            if "ratio" in names:
                assert background is not None and log_px is not None
                t0 = time.perf_counter()
                with torch.inference_mode():
                    bg = log_likelihood(background.model, x.to(background.device), y, s.k)
                add("bg_log_px", bg)
                add("ratio", log_px.cpu() - bg.cpu())
                timed("ratio", t0)
            if "complexity" in names:
                assert log_px is not None
                t0 = time.perf_counter()
                bits = torch.from_numpy(png_bits(x, run.data_shape))
                add("png_bits", bits)
                add("complexity", -log_px.cpu() / math.log(2) - bits)
                timed("complexity", t0)
            if "llr" in names:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    full = log_likelihood(m, x, y, s.llr_samples)
                    for k in s.llr_k:
                        above = bound_above(m, x, y, k, s.llr_samples, prior_mean=s.llr_prior_mean)
                        add(f"elbo_gt{k}", above)
                        add(f"llr_gt{k}", full.cpu() - above.cpu())
                timed("llr", t0)
            if "regret" in names:
                assert log_px is not None
                t0 = time.perf_counter()
                regret, tuned = likelihood_regret(
                    m, x, y, steps=s.regret_steps, lr=s.regret_lr, k=s.k, before=log_px
                )
                add("log_px_tuned", tuned)
                add("regret", regret)
                timed("regret", t0)
            bar.update(len(x))
        bar.close()
    out = {name: torch.cat(parts).numpy() for name, parts in cols.items()}
    for name, values in out.items():
        if not np.isfinite(values).all():
            raise nonfinite_result(run, name, "NaN or infinite", "scored")
    return out, {key: round(v, 3) for key, v in seconds.items()}


def score_table(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The columns as one structured array (a named field per column), for ``.npy``."""
    names = list(columns)
    n = len(next(iter(columns.values()))) if names else 0
    table = np.empty(n, dtype=[(name, np.float64) for name in names])
    for name in names:
        table[name] = columns[name]
    return table


def summarize(
    in_cols: dict[str, np.ndarray], out_cols: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """:func:`ood_metrics` of every score both sets have, higher = more anomalous."""
    a, b = anomaly_scores(in_cols), anomaly_scores(out_cols)
    return {name: ood_metrics(a[name], b[name]) for name in a if name in b}


def score_data(
    run: Run,
    data: str,
    *,
    split: str | None = None,
    settings: ScoreSettings | None = None,
    background: Run | None = None,
    data_dir: str | None = None,
    limit: int = 0,
) -> dict[str, np.ndarray]:
    """The per-example columns of a DATA argument (:func:`read_scoring_data`) under ``run``:
    what :func:`score` does for arrays, from a dataset name or file."""
    s = settings or ScoreSettings()
    part, what = read_scoring_data(data, split, data_dir=data_dir, limit=limit, seed=s.seed)
    check_same_shape(run, part, what)
    return score_split(run, part, s, background=background)[0]


def score_histograms(
    in_cols: dict[str, np.ndarray],
    out_cols: dict[str, np.ndarray],
    *,
    in_label: str = "in-distribution",
    out_label: str = "out-of-distribution",
    metrics: dict[str, dict[str, float]] | None = None,
) -> Any:
    """A matplotlib Figure: one panel per score both sets have, the histograms of the two
    sets overlaid (the values as they are, their AUROC in the title: below 0.5 where the
    out-of-distribution set looks *more* typical, as log p(x) of MNIST under a
    Fashion-MNIST model)."""

    metrics = metrics if metrics is not None else summarize(in_cols, out_cols)
    names = [n for n in in_cols if n in out_cols and n in metrics]
    if not names:
        raise UsageError("no score that both sets have to draw")
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        a = np.asarray(in_cols[name], dtype=np.float64)
        b = np.asarray(out_cols[name], dtype=np.float64)
        lo, hi = np.percentile(np.r_[a, b], [0.5, 99.5])
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 50)
        ax.hist(np.clip(a, lo, hi), bins=bins, alpha=0.55, density=True, label=in_label)
        ax.hist(np.clip(b, lo, hi), bins=bins, alpha=0.55, density=True, label=out_label)
        sign = "higher" if anomaly_sign(name) == 1 else "lower"
        ax.set_title(f"{name}: AUROC {metrics[name]['auroc']:.3f}", fontsize="medium")
        ax.set_xlabel(f"{name} ({sign} = more anomalous)", fontsize="small")
        ax.legend(fontsize="x-small")
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    return fig


def read_scores(path: str | Path) -> dict[str, np.ndarray]:
    """The per-example columns `vaekit score` wrote: a ``.csv`` (a header of column
    names) or a ``.npy`` structured array (a field per column)."""

    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            table = np.load(path, allow_pickle=False)
            names = table.dtype.names or ()
            return {n: np.asarray(table[n], dtype=np.float64) for n in names}
        with path.open() as f:
            header = f.readline().strip().split(",")
        values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a scores file of `vaekit score` ({e})") from None
    if values.shape[1] != len(header):
        raise DataError(f"{path}: {len(header)} column names for {values.shape[1]} columns")
    return {n: values[:, i] for i, n in enumerate(header)}


def saved_comparison(run_dir: str | Path) -> Path | None:
    """The newest in/out comparison `vaekit score RUN IN OUT` saved in the run directory
    (``RUN/scores_IN_vs_OUT.json``), or None."""
    found = sorted(Path(run_dir).glob("scores_*_vs_*.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def comparison_figure(summary: str | Path) -> Any:
    """:func:`score_histograms` of a saved comparison (its JSON names both sets' files)."""

    summary = Path(summary)
    try:
        saved = json.loads(summary.read_text())
        first, second = saved["files"][:2]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"{summary}: not a comparison saved by `vaekit score RUN IN OUT`; score again"
        ) from None
    cols = [read_scores(f) for f in (first, second)]
    labels = [Path(f).stem.removeprefix("scores_") for f in (first, second)]
    return score_histograms(cols[0], cols[1], in_label=labels[0], out_label=labels[1])


def score(
    run: Run,
    x: Any,
    y: Any = None,
    *,
    scores: Any = None,
    background: Run | None = None,
    **settings: Any,
) -> dict[str, np.ndarray]:
    """Per-example out-of-distribution / anomaly scores of ``x`` under ``run``:
    a float64 array per column, ``log_px``, ``elbo``, ``recon``, ``kl``, and (images)
    ``png_bits`` and ``complexity``, (hierarchies) ``llr_gt1``; ``scores`` names others
    (``ratio`` with ``background``, ``regret``). ``settings``: the fields of
    :class:`vaekit.ood.ScoreSettings` (``k``, ``llr_k``, ``regret_steps``, ...)."""
    xt = run._x(x)
    yt = run._y(y, len(xt))
    try:
        chosen = default_scores(run) if scores is None else tuple(scores)
        options = ScoreSettings(scores=chosen, **settings)
    except TypeError as e:
        raise UsageError(
            f"vaekit.ood.score: {e}; its settings are those of vaekit.ood.ScoreSettings"
        ) from None
    part = Split(xt.cpu(), None if yt is None else yt.cpu())
    return score_split(run, part, options, background=background)[0]
