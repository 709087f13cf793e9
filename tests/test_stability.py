"""Stability options for deep hierarchies: gradient-norm skipping, spectral
regularisation and KL balancing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import train_tiny

from vaekit.config import ConfigError, load_config
from vaekit.model import build_model
from vaekit.objectives import ELBO
from vaekit.stability import kl_balance_weights, spectral_penalty


def test_spectral_penalty_is_the_largest_singular_value_of_each_weight() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(30, 20), torch.nn.Tanh(), torch.nn.Conv2d(2, 3, 3), torch.nn.Linear(5, 4)
    )
    exact = sum(
        torch.linalg.matrix_norm(m.weight.reshape(m.weight.shape[0], -1), 2)
        for m in net.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    )
    got = spectral_penalty(net, iterations=50)
    assert torch.allclose(got, exact, rtol=1e-3)
    # Its gradient shrinks the top singular direction: a step down lowers the penalty.
    got.backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert float(spectral_penalty(net, iterations=50).detach()) < float(got.detach())


def _hvae():
    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder.hidden=[16]",
            "model.posterior={name: hierarchical, hidden: 8, sizes: [2, 4]}",
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg.model, (1, 8, 8))


def test_kl_balancing_weighs_layers_during_the_warm_up_only() -> None:
    model = _hvae()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).round()
    objective = ELBO(warmup_epochs=10, kl_balance=True)
    objective.set_epoch(2)
    torch.manual_seed(1)
    out = objective(model, x)
    layers = torch.stack([out.terms["kl_z1"], out.terms["kl_z2"]])
    w = kl_balance_weights(layers, [2, 4])
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    expected = (out.terms["recon"] + 0.2 * (w[:, None] * layers).sum(0)).mean()
    assert torch.allclose(out.loss, expected, atol=1e-5)
    objective.set_epoch(10)  # warm-up over: the plain ELBO
    torch.manual_seed(1)
    out = objective(model, x)
    assert torch.allclose(out.loss, out.terms["loss"].mean(), atol=1e-5)


def test_spectral_option_adds_the_penalty_to_the_loss() -> None:
    model = _hvae()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).round()
    torch.manual_seed(1)
    out = ELBO(spectral=0.5)(model, x)
    penalty = spectral_penalty(model)
    assert torch.allclose(out.terms["spectral"], penalty.detach().expand(6))
    assert torch.allclose(out.loss, out.terms["loss"].mean() + 0.5 * penalty, atol=1e-4)


class SpikyELBO(ELBO):
    """The ELBO whose every second training step has a loss (and gradient) 1e6 times larger."""

    calls = 0

    def forward(self, model, x, y=None):  # type: ignore[no-untyped-def]
        out = super().forward(model, x, y)
        if torch.is_grad_enabled():  # a training step, not the evaluation
            SpikyELBO.calls += 1
            if SpikyELBO.calls % 2 == 0:
                out.loss = out.loss * 1e6
        return out


def test_gradient_norm_skipping_drops_outsized_steps(tmp_path: Path) -> None:
    from vaekit.rundir import read_metrics
    from vaekit.train.loop import TrainingError

    SpikyELBO.calls = 0
    run = train_tiny(
        tmp_path / "s", "objective.name=test_stability:SpikyELBO", "train.skip_threshold=1e4"
    )
    rows = read_metrics(run)
    # 256 examples in batches of 64: steps 2 and 4 of each epoch are dropped, 1 and 3 taken.
    assert [r["skipped_steps"] for r in rows] == [2, 2] and rows[-1]["step"] == 4
    assert "nonfinite" not in rows[-1]
    run = train_tiny(tmp_path / "t", "train.skip_threshold=1e9", "train.epochs=1")
    row = read_metrics(run)[-1]
    assert "skipped_steps" not in row and row["step"] == 4
    # A threshold below every step's norm would freeze the model: refused with advice.
    with pytest.raises(TrainingError, match="every step of epoch 1 was skipped"):
        train_tiny(tmp_path / "u", "train.skip_threshold=1e-9", "train.epochs=1")
    with pytest.raises(ConfigError, match="skip_threshold must be >= 0"):
        load_config(None, ["train.skip_threshold=-1"])


@pytest.mark.parametrize("style", ["bottom-up", "ladder", "residual"])
def test_a_log_variance_past_its_bound_is_pulled_back(style: str) -> None:
    # One Fashion-MNIST training example sat at a top-layer log-variance of ~490 epoch after
    # epoch: the hard clamp at 12 gave it zero gradient, so nothing pulled it in. The
    # clamp now passes the gradient straight through; values are unchanged.
    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder.hidden=[16]",
            f"model.posterior={{name: hierarchical, layers: 2, hidden: 10, style: {style}}}",
        ],
    )
    model = build_model(cfg.model, (1, 8, 8))
    head = model.encoder.head
    # The bias behind the top layer's log-variance (the last 3 of its 6 outputs).
    if style == "bottom-up":
        last = [m for m in model.encoder.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    else:
        last = head.estimates[-1] if style == "ladder" else head.top
    with torch.no_grad():
        last.bias[3:6] += 40.0
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).round()
    (_, logvar), _ = head.context(model.encoder.net(x))
    assert (logvar > 30).all()  # far past LOGVAR_MAX = 12
    out = ELBO()(model, x)
    assert torch.isfinite(out.loss)
    # The top layer's KL pulls each unit in with d KL / d logvar = (e^12 - 1) / 2 at the
    # bound (a plain clamp: 0); the reconstruction adds its own pull through the draw.
    out.terms["kl_z2"].mean().backward(retain_graph=True)
    grad = last.bias.grad[3:6]
    torch.testing.assert_close(grad, torch.full((3,), 0.5 * math.expm1(12.0)))
    model.zero_grad()
    out.loss.backward()
    assert torch.isfinite(last.bias.grad).all() and (last.bias.grad[3:6] != 0).all()
    # The values are those of the plain clamp: the KL of the top layer at log-variance 12.
    q = model.encode(x)
    assert torch.allclose(q.layer_dists(q.rsample())[-1].base_dist.scale, torch.tensor(403.4288))
