"""The VampPrior per class (``model.prior=class-vamp``, issue 28): p(z|y) against torch's
mixture computed class by class, p(z) the mixture over classes, its gradients, its start
from each class's examples, what it refuses, and an M2 run from the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vaekit.cli import main
from vaekit.config import ModelConfig, load_config
from vaekit.data import DataError, Split
from vaekit.distributions.priors import ClassVampPrior, DiagonalGaussianMixture, tempered
from vaekit.errors import ConfigError
from vaekit.model import build_model
from vaekit.train.loop import _init_from_data

C, K, D = 3, 4, 2
SHAPE = (1, 4, 4)


def _model(**options: Any) -> Any:
    torch.manual_seed(0)
    cfg = ModelConfig(
        latent_dim=D,
        conditional=True,
        encoder={"name": "mlp", "hidden": [8], "activation": "tanh"},
        prior={"name": "class-vamp", "components": K, **options},
    )
    model = build_model(cfg, SHAPE, num_classes=C)
    with torch.no_grad():  # pseudo-inputs apart, so that the components differ
        model.prior_module.pseudo_inputs.uniform_()
    return model


def _by_hand(model: Any, c: int) -> MixtureSameFamily:
    """p(z|c) as torch's mixture of class c's K pseudo-inputs, encoded with label c."""
    u = model.prior_module.pseudo_inputs[c * K : (c + 1) * K]
    q = model.encode(u, torch.full((K,), c))
    comps = Independent(Normal(q.base_dist.loc, q.base_dist.scale), 1)
    return MixtureSameFamily(Categorical(logits=torch.zeros(K)), comps)


def test_a_mixture_with_weights_per_row_is_torchs_mixture_of_each_row() -> None:
    # Float64, narrow components far apart (most terms far below exp(-87) of the largest),
    # zero weights (-inf): the value and the gradients are torch's elementwise ones.
    g = torch.Generator().manual_seed(0)
    loc = 3 * torch.randn(6, D, generator=g, dtype=torch.float64)
    scale = 0.05 + 0.2 * torch.rand(6, D, generator=g, dtype=torch.float64)
    logits = torch.randn(4, 6, generator=g, dtype=torch.float64)
    logits[0, 3:] = -math.inf
    z = 3 * torch.randn(5, 4, D, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (loc, scale, z)]
    p = DiagonalGaussianMixture(logits, *leaves[:2])
    assert p.batch_shape == (4,) and p.event_shape == (D,)
    p.log_prob(leaves[2]).sum().backward()
    ref = [t.clone().requires_grad_() for t in (loc, scale, z)]
    comps = Independent(Normal(ref[0].expand(4, 6, D), ref[1].expand(4, 6, D)), 1)
    want = MixtureSameFamily(Categorical(logits=logits), comps).log_prob(ref[2])
    want.sum().backward()
    torch.testing.assert_close(p.log_prob(z), want.detach(), rtol=0, atol=1e-9)
    for got, w in zip(leaves, ref, strict=True):
        torch.testing.assert_close(got.grad, w.grad, rtol=1e-7, atol=1e-9)


def test_p_z_given_y_is_the_mixture_of_its_class_components() -> None:
    model = _model()
    y = torch.tensor([2, 0, 1, 2, 0])
    z = 2 * torch.randn(6, 5, D)  # (S, B, D): each draw against its own example's class
    got = model.prior_given(y).log_prob(z)
    want = torch.stack([_by_hand(model, int(c)).log_prob(z[:, b]) for b, c in enumerate(y)], 1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # A soft row weighs the classes' mixtures: log sum_c y_c p(z|c).
    soft = torch.tensor([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    each = torch.stack([_by_hand(model, c).log_prob(z[:, :2]) for c in range(C)], -1)
    want_soft = torch.logsumexp(each + soft.log(), -1)
    torch.testing.assert_close(
        model.prior_given(soft).log_prob(z[:, :2]), want_soft, atol=1e-4, rtol=0
    )


def test_p_z_is_the_uniform_mixture_over_the_classes() -> None:
    model = _model()
    z = 2 * torch.randn(7, D)
    each = torch.stack([_by_hand(model, c).log_prob(z) for c in range(C)])
    want = torch.logsumexp(each, 0) - math.log(C)
    torch.testing.assert_close(model.prior.log_prob(z), want, atol=1e-4, rtol=0)
    # At a temperature the mixture keeps its weights and scales each component's spread,
    # for the prior of one class as for p(z).
    p, cold = (
        model.prior_given(torch.tensor([1])),
        tempered(model.prior_given(torch.tensor([1])), 0.5),
    )
    assert cold.batch_shape == (1,)
    torch.testing.assert_close(cold.component_scale, 0.5 * p.component_scale)


def test_the_gradient_reaches_the_pseudo_inputs_and_the_encoder() -> None:
    model = _model()
    model.prior_given(torch.tensor([0, 1, 2])).log_prob(torch.randn(3, D)).sum().backward()
    assert float(model.prior_module.pseudo_inputs.grad.abs().sum()) > 0
    # Every class's pseudo-inputs get some: each example reads its own class's.
    per_class = model.prior_module.pseudo_inputs.grad.reshape(C, -1).abs().sum(-1)
    assert bool((per_class > 0).all())
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_data_init_takes_examples_of_each_class() -> None:
    model = _model(init="data")
    prior: ClassVampPrior = model.prior_module
    # Example i is the constant image i; labels: class c at rows c, c + 3, ...; row 9 hidden.
    n = 10
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, *SHAPE).clone()
    y = torch.arange(n) % C
    y[9] = -1
    prior.init_from_data(x, torch.Generator().manual_seed(0), labels=y)
    picked = prior.pseudo_inputs.detach().reshape(C, K, -1).mean(-1).round().long()
    for c in range(C):
        assert bool((y[picked[c]] == c).all()), (c, picked[c])
    # Class 0 has 3 labelled examples (0, 3, 6) for K = 4: drawn with replacement, all of them.
    assert set(picked[0].tolist()) <= {0, 3, 6}
    # Noise init leaves them; data without labels, or a class without any, is refused.
    with pytest.raises(DataError, match="no labels"):
        prior.init_from_data(x, torch.Generator(), labels=None)
    with pytest.raises(DataError, match="class 2 has none"):
        prior.init_from_data(x, torch.Generator(), labels=torch.where(y == 2, -1, y))
    noise = _model()
    before = noise.prior_module.pseudo_inputs.detach().clone()
    noise.prior_module.init_from_data(x, torch.Generator(), labels=y)
    assert torch.equal(noise.prior_module.pseudo_inputs, before)


def test_the_trainer_hands_the_labels_to_parts_that_take_them() -> None:
    seen: dict[str, Any] = {}

    class Old(torch.nn.Module):  # a part of the user's with the two-argument hook
        def init_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
            seen["old"] = len(x)

    class New(torch.nn.Module):
        def init_from_data(self, x: torch.Tensor, generator: torch.Generator, labels: Any) -> None:
            seen["new"] = labels

    data = SimpleNamespace(train=Split(torch.rand(4, 2), torch.tensor([0, 1, -1, 1])))
    _init_from_data(torch.nn.Sequential(Old(), New()), data, seed=0)  # type: ignore[arg-type]
    assert seen["old"] == 4 and seen["new"].tolist() == [0, 1, -1, 1]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.prior=class-vamp"], "model.conditional=true"),
        (
            ["model.prior=class-vamp", "model.conditional=true", "model.posterior=point"],
            "diagonal Gaussian posteriors",
        ),
        (
            ["model.prior=class-vamp", "model.conditional=true", "model.flow=planar"],
            "diagonal Gaussian posteriors",
        ),
        (
            ["model.prior={name: class-vamp, init: pseudo}", "model.conditional=true"],
            "init",
        ),
    ],
)
def test_configs_that_cannot_work_are_refused(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def test_bad_labels_and_encoders_are_refused() -> None:
    model = _model()
    with pytest.raises(DataError, match=r"integers in 0\.\.2"):
        model.prior_given(torch.tensor([0, 3]))
    prior = model.prior_module
    with pytest.raises(DataError, match="one entry per class"):
        prior.given(torch.ones(2, 4), model.encoder)
    with pytest.raises(ConfigError, match="diagonal Gaussian posterior"):
        prior.given(torch.eye(C), lambda u, y: Normal(u.flatten(1), 1.0))
    with pytest.raises(ConfigError, match="conditional"):
        ClassVampPrior(D, components=K, num_classes=0, data_shape=SHAPE)


def test_m2_with_it_trains_reloads_and_evaluates_from_the_command_line(tmp_path: Path) -> None:
    sets = [
        "data.name=digits",
        "data.limit=200",
        "data.labels=20",
        "model.latent_dim=2",
        "model.encoder={name: mlp, hidden: [16]}",
        "model.conditional=true",
        "model.classifier={name: mlp, hidden: [16]}",
        # init=data: the trainer hands each class's labelled examples over.
        "model.prior={name: class-vamp, components: 3, init: data}",
        "objective=m2",
        "train.epochs=1",
        "train.batch_size=50",
    ]
    run = tmp_path / "m2"
    assert main(["train", "--out", str(run), "--no-progress", *[f"--set={s}" for s in sets]]) == 0
    assert main(["evaluate", str(run), "--k", "2", "--limit", "60"]) == 0
    result = json.loads(next(run.glob("eval*.json")).read_text())
    assert 0 <= result["error"] <= 1 and math.isfinite(result["nll"])
