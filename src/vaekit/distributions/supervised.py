"""Regression and classification with the decoder's likelihood heads.

A VAE decoder is a network followed by a likelihood head, trained by maximising
``log p(x | z)``. Replace z by features and x by a target and the same two pieces are
a regression model (Gaussian or Student-t head: the loss is the negative
log-likelihood, which for a fixed Gaussian scale is the squared error) or a classifier
(:class:`~vaekit.distributions.likelihoods.LabelLikelihood`: the loss is the
cross-entropy). This is tutorial 001's point that "the loss is a likelihood".

Example:
    >>> torch.manual_seed(0) and None
    >>> x = torch.linspace(-2, 2, 256).unsqueeze(-1)
    >>> y = 3 * x + 0.1 * torch.randn_like(x)
    >>> model = regressor(1, [16], targets=1)
    >>> losses = fit_predictor(model, x, y, epochs=150, lr=0.02)
    >>> losses[-1] < losses[0]
    True
    >>> model(x).mean.shape          # p(y | x) is a Distribution
    torch.Size([256, 1])
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaekit.distributions.likelihoods import (
    LabelLikelihood,
    LikelihoodHead,
)
from vaekit.nn import MLP
from vaekit.optim import EagerAdam
from vaekit.parts import lookup, registry_of

__all__ = ["Predictor", "regressor", "classifier", "fit_predictor"]


class Predictor(nn.Module):
    """``p(y | x)``: a network whose outputs parameterise a likelihood head.

    ``target_shape`` is the shape of one target: ``(T,)`` for T regression columns,
    ``()`` for a class label.
    """

    def __init__(self, net: nn.Module, head: LikelihoodHead, target_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.target_shape = tuple(target_shape)

    def forward(self, x: Tensor) -> Distribution:
        params = self.net(x)
        dist: Distribution = self.head(
            params.reshape(x.shape[0], self.head.params_per_element, *self.target_shape)
        )
        return dist

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean negative log-likelihood of the targets (nats per example)."""
        return -self(x).log_prob(y).mean()


def regressor(
    in_features: int,
    hidden: list[int],
    targets: int = 1,
    likelihood: str = "gaussian",
    activation: str = "relu",
) -> Predictor:
    """A regression model for ``targets`` real columns with a learned, input-dependent scale.

    ``likelihood``: any registered likelihood that models real values (``gaussian``;
    ``student-t`` for heavy tails, robust to outliers); its scale-like options are learned.
    """
    # The registry's likelihoods, looked up by name when the regressor is built (the
    # registry imports this module's neighbours, so it is not imported here).
    real = [p.name for p in registry_of("likelihood") if "real" in p.abilities.fits]
    if likelihood not in real:
        raise ValueError(
            f"regressor likelihood must model real values: one of {', '.join(real)}; got {likelihood!r}"
        )
    part = lookup("likelihood", likelihood)
    fields = {f.name for f in dataclasses.fields(part.options)}
    options = part.options(**{k: "learned" for k in ("sigma", "df") if k in fields})
    head: LikelihoodHead = part.build(options, (targets,))
    return Predictor(
        MLP(in_features, hidden, head.params_per_element * targets, activation), head, (targets,)
    )


def classifier(
    in_features: int, hidden: list[int], num_classes: int, activation: str = "relu"
) -> Predictor:
    """A classifier: ``p(y | x)`` is a Categorical over ``num_classes`` labels."""
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    head = LabelLikelihood(num_classes)
    return Predictor(MLP(in_features, hidden, num_classes, activation), head, ())


def fit_predictor(
    model: Predictor,
    x: Tensor,
    y: Tensor,
    epochs: int = 100,
    lr: float = 1e-2,
    batch_size: int = 0,
    seed: int = 0,
) -> list[float]:
    """Adam on the negative log-likelihood; returns the mean loss of every epoch.

    ``batch_size=0`` uses the whole set as one batch.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have one row per example, got {len(x)} and {len(y)}")
    gen = torch.Generator().manual_seed(seed)
    opt = EagerAdam(model.parameters(), lr=lr)
    n = len(x)
    bs = batch_size or n
    history = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = model.loss(x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
    return history
