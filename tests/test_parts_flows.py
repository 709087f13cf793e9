"""Flow posteriors: exact log-densities, exact inverses, the planar constraint, MADE masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit.distributions import (
    IAF,
    Flow,
    FlowDistribution,
    FlowPosterior,
    PlanarFlow,
    diagonal_normal,
)
from vaekit.distributions.flows import MOMENT_DRAWS
from vaekit.nn import MADE

D = 3


def _planar(d: int = D, length: int = 4, std: float = 0.0) -> tuple[Flow, torch.Tensor]:
    flow = PlanarFlow(d, length)
    # Large parameters: strongly curved steps, where a wrong log-det or inverse shows.
    return flow, 2.0 * torch.randn(5, flow.context_features)


def _iaf(d: int = D, length: int = 3, std: float = 0.5) -> tuple[Flow, torch.Tensor]:
    flow = IAF(d, length, hidden=16)
    with torch.no_grad():
        for made in flow.mades:
            for p in made.parameters():
                p.normal_(0.0, std)  # far from the near-identity initialisation
    return flow, torch.randn(5, flow.context_features)


FLOWS = {"planar": _planar, "iaf": _iaf}


@pytest.mark.parametrize("name", FLOWS)
def test_log_det_matches_the_autograd_jacobian(name: str) -> None:
    torch.manual_seed(0)
    flow, context = FLOWS[name]()
    # float64, so the comparison is about the formula, not rounding.
    flow, context = flow.double(), context.double()
    z0 = torch.randn(5, D, dtype=torch.float64)
    with torch.no_grad():
        _, logdet = flow(z0, context)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: flow(v, context[i])[0], z0[i])
        _, ref = torch.linalg.slogdet(jac)
        assert abs(float(logdet[i]) - float(ref)) < 1e-8


@pytest.mark.parametrize("name", FLOWS)
def test_inverse_undoes_forward_with_the_same_log_det(name: str) -> None:
    torch.manual_seed(1)
    flow, context = FLOWS[name]()
    # float64: these random steps contract strongly (sigma ~ 1e-2), and inverting a
    # contraction magnifies float32 rounding; the algorithm itself must be exact.
    flow, context = flow.double(), context.double()
    z0 = torch.randn(7, 5, D, dtype=torch.float64)  # (S, B, D): the context broadcasts over samples
    with torch.no_grad():
        z, logdet = flow(z0, context)
    back, logdet_inv = flow.inverse(z, context)
    torch.testing.assert_close(back, z0, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(logdet_inv, logdet, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", FLOWS)
def test_cached_and_inverted_log_prob_agree(name: str) -> None:
    torch.manual_seed(2)
    flow, context = FLOWS[name]()
    flow, context = flow.double(), context.double()  # see the test above
    base = diagonal_normal(
        torch.randn(5, D, dtype=torch.float64), torch.randn(5, D, dtype=torch.float64)
    )
    q = FlowDistribution(base, flow, context)
    z, log_q = q.rsample_and_log_prob((4,))
    assert q.log_prob(z) is log_q  # the cache: the density of its own sample, no inversion
    torch.testing.assert_close(q.log_prob(z.detach().clone()), log_q.detach(), atol=1e-8, rtol=1e-8)
    # sample() goes through the same path and is cached too
    zs = q.sample((2,))
    assert not zs.requires_grad and q.log_prob(zs).shape == (2, 5)


@pytest.mark.parametrize("name", FLOWS)
def test_flow_density_integrates_to_one(name: str) -> None:
    torch.manual_seed(3)
    # Milder IAF weights than above: std 0.5 folds the density into slivers thinner than
    # the grid (it still integrates to 1 on a 1600^2 grid, too slow for a unit test).
    flow, context = FLOWS[name](d=2, std=0.3)
    q = FlowDistribution(
        diagonal_normal(torch.zeros(1, 2), torch.full((1, 2), -0.5)), flow, context[:1]
    )
    # The density on a grid through the inverse path: its integral is 1 if log_prob is exact.
    lim, n = 9.0, 301
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis).float().unsqueeze(1)  # (n*n, 1, 2)
    with torch.no_grad():
        dens = q.log_prob(grid).double().exp()
    mass = float(dens.sum()) * (2 * lim / (n - 1)) ** 2
    assert abs(mass - 1.0) < 0.01


@given(
    u=st.lists(st.floats(-20, 20), min_size=3, max_size=3),
    w=st.lists(st.floats(-20, 20), min_size=3, max_size=3),
)
@settings(max_examples=60, deadline=None)
def test_planar_steps_are_always_invertible(u: list[float], w: list[float]) -> None:
    flow = PlanarFlow(3, 1)
    context = torch.tensor([u + w + [0.3]])
    u_hat, w_t, _, m = flow._params(context)
    assert float(m) > -1
    if float((w_t * w_t).sum()) > 1e-6:  # w = 0: a translation (see the test below)
        assert float((w_t * u_hat).sum()) > -1 + 1e-5
    z0 = torch.randn(10, 1, 3)
    z, logdet = flow(z0, context)
    assert torch.isfinite(logdet).all() and (logdet > math.log(1e-4) - 1e-3).all()
    back, _ = flow.inverse(z, context)
    assert torch.isfinite(back).all()


def test_a_planar_step_with_w_zero_is_a_translation_with_log_det_zero() -> None:
    # A context of exact zeros (a ReLU's) once gave such a step log det log(1 - 0.31 (1 -
    # t^2)) and an inverse that missed by 0.05: m came from softplus(w . u) - 1, not w . u_hat.
    flow = PlanarFlow(3, 1)
    context = torch.tensor([[0.5, -1.0, 2.0, 0.0, 0.0, 0.0, 0.3]])
    z0 = torch.randn(10, 1, 3)
    z, logdet = flow(z0, context)
    torch.testing.assert_close(z, z0 + math.tanh(0.3) * torch.tensor([0.5, -1.0, 2.0]))
    torch.testing.assert_close(logdet, torch.zeros(10, 1))
    back, logdet_back = flow.inverse(z, context)
    torch.testing.assert_close(back, z0)
    torch.testing.assert_close(logdet_back, torch.zeros(10, 1))


def test_flow_posterior_mean_is_reproducible() -> None:
    torch.manual_seed(4)
    head = FlowPosterior(D, PlanarFlow(D, 2))
    q = head(torch.randn(5, head.in_features))
    torch.testing.assert_close(q.mean, q.mean)
    assert q.mean.shape == (5, D) and q.variance.shape == (5, D) and (q.variance > 0).all()
    # The mean is a Monte Carlo estimate from MOMENT_DRAWS fixed draws: within its error.
    far = q.sample((20000,)).mean(0)
    tol = 4 * (q.variance / MOMENT_DRAWS).sqrt() + 0.05
    assert ((far - q.mean).abs() < tol).all()


def test_antithetic_draws_give_a_translating_flows_mean_exactly() -> None:
    # The fixed draws behind a flow's mean come in antithetic pairs (eps, -eps): whatever
    # is odd in the noise cancels, so through a translation (planar, w = 0) the mean is
    # exact where independent draws missed by ~ sigma / sqrt(128). Its variance is the
    # base's, from the same draws.
    flow = PlanarFlow(3, 1)
    context = torch.tensor([[0.5, -1.0, 2.0, 0.0, 0.0, 0.0, 0.3]]).expand(4, 7)
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    base = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
    q = FlowDistribution(base, flow, context)
    shift = math.tanh(0.3) * torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(q.mean, loc + shift)
    draws = q.draws(MOMENT_DRAWS)
    torch.testing.assert_close(
        draws[MOMENT_DRAWS // 2 :] - shift, -(draws[: MOMENT_DRAWS // 2] - shift) + 2 * loc
    )
    torch.testing.assert_close(q.variance, scale**2, rtol=0.35, atol=0.0)


def test_made_is_autoregressive_with_and_without_context() -> None:
    torch.manual_seed(5)
    made = MADE(4, [32, 32], multiplier=2, context=3)
    x, h = torch.randn(4), torch.randn(3)
    jac = torch.autograd.functional.jacobian(lambda v: made(v, h), x)  # (8, 4)
    for chunk in range(2):
        block = jac[chunk * 4 : (chunk + 1) * 4]
        # output i may depend on inputs j < i only: the upper triangle incl. the diagonal is 0
        assert torch.count_nonzero(torch.triu(block)) == 0
        assert torch.count_nonzero(torch.tril(block, -1)) > 0
    with pytest.raises(ValueError, match="context"):
        made(x)


def test_one_dimensional_iaf_is_an_affine_map_of_the_context() -> None:
    flow, context = _iaf(d=1, length=2)
    z0 = torch.randn(6, 5, 1)
    z, logdet = flow(z0, context)
    back, _ = flow.inverse(z, context)
    torch.testing.assert_close(back, z0, atol=1e-5, rtol=1e-5)
    assert math.isfinite(float(logdet.detach().sum()))
