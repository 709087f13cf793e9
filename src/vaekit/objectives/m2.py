"""The semi-supervised objective of Kingma et al. 2014's M2 model: labelled examples
train the conditional VAE and the classifier q(y|x); unlabelled ones sum over the classes.

The model is the one composition: a conditional VAE (q(z|x, y), p(x|y, z):
``model.conditional=true``), a classifier q(y|x) (``model.classifier``), a uniform prior
over y, and any prior over z (one per class: ``model.prior=class-gaussian``). Hidden
labels are -1 (``data.labels`` keeps a few, :func:`vaekit.data.hide_labels`).

Example:
    >>> import torch
    >>> from vaekit.config import ModelConfig
    >>> from vaekit.model import build_model
    >>> cfg = ModelConfig(latent_dim=2, conditional=True, classifier="mlp")
    >>> model = build_model(cfg, (1, 4, 4), num_classes=3)
    >>> out = M2()(model, torch.rand(5, 1, 4, 4).round(), torch.tensor([0, 2, -1, -1, 1]))
    >>> sorted(out.terms)
    ['elbo', 'kl', 'loss', 'recon']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.data.core import DataError
from vaekit.objectives.base import KL_MODES, Objective, ObjectiveOutput, kl_term
from vaekit.parts import Composition, ObjectiveAbilities
from vaekit.validate import check_choice, check_nonneg, check_positive

if TYPE_CHECKING:
    from vaekit.vae import VAE

__all__ = ["M2", "class_bounds"]

WEIGHTINGS = ("data", "batch")


def class_bounds(
    model: VAE, x: Tensor, samples: int = 1, kl: str = "auto"
) -> tuple[Tensor, Tensor]:
    """``(recon, kl)`` of every example under every class, each ``(C, B)``: the terms of
    -ELBO(x, y) = E_q(z|x,y)[-log p(x|y,z)] + KL(q(z|x,y) || p(z|y)) - log p(y) (the last,
    log C for the uniform prior over y, is the caller's). One batched pass of C * B
    examples, class-major: row c holds every example paired with class c."""
    c, b = model.num_classes, x.shape[0]
    xr = x.unsqueeze(0).expand(c, *x.shape).reshape(c * b, *x.shape[1:])
    yr = torch.arange(c, device=x.device).repeat_interleave(b)
    q = model.encode(xr, yr)
    prior = model.prior_given(yr)
    z = q.rsample((samples,))  # (S, C*B, D)
    recon = -model.decode(z, yr).log_prob(xr).mean(0)
    kl_ = kl_term(q, prior, z, kl)
    return recon.reshape(c, b), kl_.reshape(c, b)


class M2(Objective):
    """Semi-supervised learning with the M2 model (Kingma et al. 2014, eq. 6-9).

    A labelled example (x, y) costs -ELBO(x, y) + w * (-log q(y|x)); an unlabelled one
    (label -1) costs U(x) = sum_y q(y|x) (-ELBO(x, y)) - H(q(y|x)), the negative bound on
    log p(x) with y marginalised. The paper's objective sums these over the data set, N_l
    labelled examples and N - N_l unlabelled ones; the trainer puts both kinds in every
    batch, so the loss weighs the batch's mean over each kind by that kind's share of the
    data, N_l / N and 1 - N_l / N (an unbiased estimate of the paper's J^alpha / N).

    ``alpha`` is the paper's alpha over N: the paper adds alpha * E_labelled[-log q(y|x)]
    to a bound summed over its N training examples, with alpha = 0.1 * N, so each labelled
    example's cross-entropy weighs ``w = alpha * N / N_labelled`` against its ELBO
    (``alpha=0.1``: the paper's choice). The terms reported are those of the bound on
    log p(x) with y marginalised (``elbo``, ``recon``, ``kl`` = KL over z and y), for every
    example; with every label of a batch known (the validation and test splits), also
    ``error`` (q(y|x)'s most probable class is not y) and ``ce`` (-log q(y|x)).
    """

    @dataclass
    class Options:
        # The paper's alpha / N: the cross-entropy of each labelled example weighs
        # alpha * N / N_labelled (Kingma et al. 2014: alpha = 0.1 N).
        alpha: float = 0.1
        # Monte Carlo samples S of z per example and class.
        samples: int = 1
        # auto (analytic where torch registers a closed form, else Monte Carlo) | analytic | mc
        kl: str = "auto"
        # How a batch's labelled and unlabelled means add up. data: each weighs its kind's
        # share of the training data, N_l / N and 1 - N_l / N (the paper's objective, a sum
        # over the data set); batch: both weigh 1, as if each label were copied N_u / N_l
        # times (not the paper's: it trains q(y|x) on the labels far faster, for short runs).
        weighting: str = "data"

        def validate(self, where: str) -> None:
            check_nonneg(f"{where}.alpha", self.alpha)
            check_positive(f"{where}.samples", self.samples)
            check_choice(f"{where}.kl", self.kl, KL_MODES)
            check_choice(f"{where}.weighting", self.weighting, WEIGHTINGS)

    abilities = ObjectiveAbilities(
        bound="elbo", bound_label="ELBO (y summed out)", hidden_labels=True, classifier=True
    )

    @staticmethod
    def check(o: M2.Options, parts: Composition) -> str | None:
        if not parts.conditional:
            return (
                "objective.name=m2 trains q(z|x,y) and p(x|y,z): set model.conditional=true "
                "(with model.classifier=mlp)"
            )
        return None

    @staticmethod
    def label(o: M2.Options) -> str:
        notes = ([f"alpha={o.alpha:g}"] if o.alpha != 0.1 else []) + (
            [f"{o.weighting} weighting"] if o.weighting != "data" else []
        )
        return f"m2 ({', '.join(notes)})" if notes else "m2"

    def __init__(
        self, alpha: float = 0.1, samples: int = 1, kl: str = "auto", weighting: str = "data"
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.samples = samples
        self.kl_mode = kl
        self.weighting = weighting

    @property
    def weight(self) -> float:
        """The cross-entropy's weight per labelled example, ``alpha * N / N_labelled``."""
        n, n_l = self.dataset_size, self.labelled_size
        return self.alpha * n / n_l if n and n_l else self.alpha

    @property
    def labelled_share(self) -> float | None:
        """N_labelled / N, the labelled examples' share of the training data (None until
        the trainer sets both sizes, or with ``weighting="batch"``)."""
        n, n_l = self.dataset_size, self.labelled_size
        if self.weighting == "batch":
            return None
        return min(n_l / n, 1.0) if n and n_l else None

    def loss_note(self) -> str:
        return f"+ labelled cross-entropy x {self.weight:.3g}"

    def forward(self, model: VAE, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        c = model.num_classes
        log_qy = F.log_softmax(model.classify(x).logits, dim=-1)  # (B, C)
        qy = log_qy.exp()
        recon_c, kl_c = class_bounds(model, x, self.samples, self.kl_mode)  # (C, B)
        log_c = math.log(c)
        neg_elbo = recon_c + kl_c + log_c  # -ELBO(x, y) with log p(y) = -log C
        entropy = -(qy * log_qy).sum(-1)  # (B,)
        unlabelled = (qy.T * neg_elbo).sum(0) - entropy  # U(x), (B,)
        recon = (qy.T * recon_c).sum(0)
        kl = (qy.T * kl_c).sum(0) + log_c - entropy  # KL over z, plus KL(q(y|x) || p(y))
        terms = {"recon": recon, "kl": kl, "elbo": -unlabelled}
        if y is None:
            terms["loss"] = unlabelled
            return ObjectiveOutput(unlabelled.mean(), terms)
        y = torch.as_tensor(y, device=x.device).long()
        if y.shape != (x.shape[0],):
            raise DataError(
                f"objective m2 takes labels as class indices (-1: hidden), one per example; "
                f"got shape {tuple(y.shape)} for {x.shape[0]} examples"
            )
        if y.numel() and int(y.max()) >= c:
            raise DataError(
                f"labels must be class indices 0..{c - 1} (or -1 for a hidden label), got "
                f"{int(y.max())}: the model has {c} classes"
            )
        known = y >= 0
        idx = y.clamp_min(0)
        labelled = neg_elbo.gather(0, idx[None]).squeeze(0)
        ce = -log_qy.gather(1, idx[:, None]).squeeze(1)
        per = torch.where(known, labelled + self.weight * ce, unlabelled)
        n_l, n_u = int(known.sum()), int((~known).sum())
        share = self.labelled_share
        if self.weighting == "batch":  # each kind's mean weighs 1 (labels oversampled)
            loss = per.new_zeros(())
            for kind in (known, ~known):
                if bool(kind.any()):
                    loss = loss + per[kind].mean()
        elif share is None:  # sizes not set (outside the trainer): the batch stands for the data
            loss = per.mean()
        else:
            # The paper's J^alpha sums over the data: N_l labelled terms beside N - N_l
            # unlabelled ones. The trainer puts min(N_l, batch) labelled examples beside
            # batch unlabelled ones in every step, far more than their share, so each mean
            # weighs its kind's share of the data (an unbiased estimate of J^alpha / N).
            # Adding the two means instead weighs the labelled term N_u / N_l times too
            # much (79 times with 100 labels of 8,000), the cross-entropy included.
            loss = per.new_zeros(())
            if n_l:
                loss = loss + share * per[known].mean()
            if n_u:
                loss = loss + (1.0 - share) * per[~known].mean()
        terms["loss"] = per
        if n_u == 0:
            terms["ce"] = ce
            terms["error"] = (log_qy.argmax(-1) != y).to(ce.dtype)
        return ObjectiveOutput(loss, terms)
