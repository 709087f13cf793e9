"""One contract for every combination of registered parts that makes sense.

The combinations come from the registries (:mod:`vaekit.registry`) and the config
validator, which accepts only those that make sense (a point or implicit posterior has
no density, the VampPrior needs the Gaussian posterior, ...): a part added to a registry
is checked here without being listed. The checks are the public ones of
:mod:`vaekit.testing`, which users run on their own parts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from vaekit.config import config_from_dict
from vaekit.data import load_dataset
from vaekit.model import build_model
from vaekit.objectives import ELBO, build_objective, warmup_epochs
from vaekit.registry import REGISTRIES
from vaekit.testing import (
    ContractError,
    check_abilities,
    check_model,
    check_part,
    check_training,
    contract_combinations,
    prior_parameter_names,
)

SHAPE = (1, 8, 8)
LEVELS = 17  # the UCI digits have 17 grey levels: 0, 1/16, ..., 1


def _variants(kind: str, name: str) -> list[dict[str, Any]]:
    """Small options for a part, chosen by option name (so new parts get them too), and
    the variants of an option that changes the maths (an estimator)."""
    fields = {f.name for f in dataclasses.fields(REGISTRIES[kind].get(name).options)}
    small: dict[str, Any] = {}
    sizes = {
        "length": 2,
        "samples": 3,
        # A likelihood's grey levels; an FSQ posterior's levels per channel (mixed, so that
        # a factorised prior's masked levels are checked too).
        "levels": LEVELS if kind == "likelihood" else [8, 5, 6],
        "sigma": "learned",
        "discriminator": [24],
        "hidden": [24] if kind == "network" else 12,
        # A convolutional hierarchy's latent maps at 2x2 and 1x1 of the 8x8 digits (15 units:
        # the normalisation check's importance sampling is reliable at that size).
        "channels": [4, 8] if kind == "network" else [4, 8, 8],
        # tanh: no dead units at initialisation, so every parameter gets a gradient.
        "activation": "tanh",
        "components": 3 if kind == "prior" else 2,
        "groups": 2 if kind == "objective" else [0, 1, 1],
        # Discrete codes: 3 positions of 4 codes (vq), one variable of 3 classes (gumbel), so
        # that every code can be listed; a prior over codes with something to learn.
        "codes": 4,
        "code_dim": 1,
        "categories": 3,
        "num_quantizers": 3,
        "learned": True,
        "layers": 2,
    }
    small = {k: v for k, v in sizes.items() if k in fields}
    out = [small]
    if "gradient" in fields:
        out.append(small | {"gradient": "dreg"})

    return out


# Every posterior, flow, prior and objective together; likelihoods and networks in turn.
COMBOS = contract_combinations(_variants, cover=True)


def _id(data: dict[str, Any]) -> str:
    m = data["model"]
    names = [m["posterior"]["name"], (m["flow"] or {}).get("name"), m["prior"]["name"]]
    names += [m["likelihood"]["name"], data["objective"]["name"], m["encoder"]["name"]]
    if data["objective"].get("gradient") == "dreg":
        names.append("dreg")
    if data["objective"].get("divergence", {}).get("name", "kl") != "kl":
        names.append(data["objective"]["divergence"]["name"])
    return "-".join(n for n in names if n)


IDS = [_id(c) for c in COMBOS]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return load_dataset("digits").train.x[:48]


def _build(data: dict[str, Any], seed: int = 0) -> tuple[Any, Any]:
    cfg = config_from_dict(data)
    torch.manual_seed(seed)
    return build_model(cfg.model, SHAPE), build_objective(cfg.objective)


def test_the_combinations_cover_every_registered_part() -> None:
    seen: dict[str, set[str]] = {kind: set() for kind in REGISTRIES}
    for c in COMBOS:
        m = c["model"]
        seen["network"].add(m["encoder"]["name"])
        seen["posterior"].add(m["posterior"]["name"])
        if m["flow"]:
            seen["flow"].add(m["flow"]["name"])
        seen["prior"].add(m["prior"]["name"])
        seen["likelihood"].add(m["likelihood"]["name"])
        seen["objective"].add(c["objective"]["name"])
        if "divergence" in c["objective"]:
            seen["divergence"].add(c["objective"]["divergence"]["name"])
    for kind, registry in REGISTRIES.items():
        assert seen[kind] == set(registry.names()), kind
    # Each posterior meets every likelihood it can take, and both networks.
    for post in seen["posterior"]:
        mine = [c["model"] for c in COMBOS if c["model"]["posterior"]["name"] == post]
        assert {m["likelihood"]["name"] for m in mine} == seen["likelihood"], post
        if not REGISTRIES["posterior"].get(post).abilities.networks:  # else it ignores them
            assert {m["encoder"]["name"] for m in mine} == seen["network"], post
    assert len(COMBOS) >= 50


def _labels(model: Any, n: int) -> torch.Tensor | None:
    # A conditional model (a prior per class, a classifier) of 3 classes takes labels.
    return torch.arange(n) % model.num_classes if model.conditional else None


@pytest.mark.parametrize("data", COMBOS, ids=IDS)
def test_contract(data: dict[str, Any], batch: torch.Tensor) -> None:
    model, objective = _build(data)
    unused = prior_parameter_names(model) if not objective.abilities.needs_stochastic else ()
    check_model(model, objective, batch[:6], _labels(model, 6), unused=unused)


@pytest.mark.parametrize("data", COMBOS, ids=IDS)
def test_short_training_lowers_the_loss(data: dict[str, Any], batch: torch.Tensor) -> None:
    model, objective = _build(data, seed=1)
    torch.manual_seed(2)
    # (sets a second stage up: start_second_stage)
    check_training(model, objective, batch, _labels(model, len(batch)))


# -- the checks fail where a part breaks the contract ------------------------------------------


class WrongShapePrior(torch.nn.Module):
    """A prior whose distribution has no event dimension (a common mistake)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, encoder: Any = None) -> torch.distributions.Distribution:
        return torch.distributions.Normal(torch.zeros(self.latent_dim), 1.0)


class ShiftedPosterior(torch.nn.Module):
    """A Gaussian posterior whose log_prob is off by one nat from what it samples."""

    in_features = 6

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_features = 2 * latent_dim

    def forward(self, features: torch.Tensor) -> torch.distributions.Distribution:
        from vaekit.distributions import diagonal_normal

        q = diagonal_normal(*features.chunk(2, dim=-1))
        q.log_prob = lambda z: torch.distributions.Independent(q.base_dist, 1).log_prob(z) + 1.0  # type: ignore[method-assign]
        return q


def test_the_checks_catch_broken_parts() -> None:
    with pytest.raises(ContractError, match="event shape"):
        check_part("prior", WrongShapePrior, training=False)
    with pytest.raises(ContractError, match="does not integrate to one"):
        check_part("posterior", ShiftedPosterior, training=False)


def test_check_part_runs_on_a_user_class_and_reports() -> None:
    from vaekit.distributions.priors import MixturePrior

    report = check_part("prior", MixturePrior, {"components": 2})
    assert report["shapes"] == "ok" and "->" in report["training"]


def test_check_part_resumes_bit_identically() -> None:
    assert check_part("flow", "planar", {"length": 2}, training=False, resume=True)["resume"] == (
        "bit-identical"
    )


# -- the declared abilities match the Protocols of vaekit.abilities ---------------------------


def _model_of(posterior: dict[str, Any], prior: str = "normal") -> tuple[Any, Any]:
    data = {
        "model": {"latent_dim": 3, "posterior": posterior, "prior": prior},
        "objective": {"name": "elbo", "warmup_epochs": 2},
    }
    return _build(data)


@pytest.mark.parametrize("ability", ["layered", "networks", "discrete", "extras"])
def test_a_declared_ability_needs_its_members(ability: str, batch: torch.Tensor) -> None:
    model, objective = _model_of({"name": "gaussian"})
    check_abilities(model, objective, batch[:4])
    c = model.composition
    model.composition = dataclasses.replace(
        c, base_posterior=dataclasses.replace(c.base_posterior, **{ability: True})
    )
    with pytest.raises(ContractError, match=f"declares abilities.{ability}"):
        check_abilities(model, objective, batch[:4])


def test_members_without_the_declared_ability_are_refused(batch: torch.Tensor) -> None:
    model, objective = _model_of({"name": "hierarchical", "layers": 2, "hidden": 12})
    check_abilities(model, objective, batch[:4])
    c = model.composition
    model.composition = dataclasses.replace(
        c, base_posterior=dataclasses.replace(c.base_posterior, layered=False)
    )
    with pytest.raises(
        ContractError, match="LayeredPosterior .* does not declare abilities.layered"
    ):
        check_abilities(model, objective, batch[:4])
    # A prior whose p(z) says what its temperature means declares it.
    model, objective = _model_of({"name": "vq", "codes": 4, "code_dim": 1}, prior="categorical")
    check_abilities(model, objective, batch[:4])
    c = model.composition
    model.composition = dataclasses.replace(
        c, prior=dataclasses.replace(c.prior, temperature=False)
    )
    with pytest.raises(ContractError, match="TemperedDistribution"):
        check_abilities(model, objective, batch[:4])


def test_the_warmup_is_read_from_the_objectives_abilities(batch: torch.Tensor) -> None:
    class Undeclared(ELBO):
        abilities = dataclasses.replace(ELBO.abilities, warmup=False)

    assert warmup_epochs(ELBO(warmup_epochs=4)) == 4
    # The attribute alone is no warm-up: the trainer counts early stopping from 0.
    assert warmup_epochs(Undeclared(warmup_epochs=4)) == 0
    model, _ = _model_of({"name": "gaussian"})
    with pytest.raises(ContractError, match="WarmsUp .* does not declare abilities.warmup"):
        check_abilities(model, Undeclared(warmup_epochs=4), batch[:4])
