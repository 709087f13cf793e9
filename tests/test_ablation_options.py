"""The options of issue 27's HVAE + VampPrior ablation: gated units, the weights' moving
average (train.ema), and the VampPrior's pseudo-input settings."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from vaekit.config import ConfigError, load_config
from vaekit.model import build_model
from vaekit.nn import MLP
from vaekit.rundir import latest_checkpoint, read_metrics
from vaekit.train import fit
from vaekit.train.ema import WeightAverage

SHAPE = (1, 8, 8)


def _quiet_fit(cfg: Any, run: Path) -> list[dict[str, Any]]:
    return fit(cfg, run, progress=False, log=io.StringIO())


# -- gated units ------------------------------------------------------------------------------


def test_a_gated_mlp_layer_is_the_gated_dense_formula() -> None:
    """(W x + b) * sigmoid(V x + c) by hand, from the layer's own weights."""
    torch.manual_seed(0)
    net = MLP(5, [4, 3], 2, "gated")
    x = torch.randn(7, 5)
    h = x
    for linear in (net.net[0], net.net[2]):
        w, v = linear.weight.chunk(2, dim=0)
        b, c = linear.bias.chunk(2)
        h = (h @ w.T + b) * torch.sigmoid(h @ v.T + c)
    want = net.net[4](h)
    assert net(x).shape == (7, 2)
    torch.testing.assert_close(net(x), want)
    # Twice the weights of a plain layer of the same width.
    assert net.net[0].weight.shape == (8, 5) and net.net[2].weight.shape == (6, 4)


def _gated_hvae(style: str, *sets: str) -> Any:
    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder={name: mlp, hidden: [16, 16], activation: gated}",
            f"model.posterior={{name: hierarchical, hidden: 10, style: {style}, decoder_reads: 2}}",
            "model.prior={name: vamp, components: 4}",
            *sets,
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg.model, SHAPE)


@pytest.mark.parametrize("style", ["bottom-up", "ladder", "residual"])
def test_gated_units_run_through_every_network_of_a_hierarchy(style: str) -> None:
    model = _gated_hvae(style)
    glus = [m for m in model.modules() if isinstance(m, torch.nn.GLU)]
    pointwise = [m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Tanh))]
    assert glus and not pointwise
    x = torch.rand(5, *SHAPE).round()
    q = model.encode(x)
    z, log_q = q.rsample_and_log_prob((2,))
    assert z.shape == (2, 5, 6) and log_q.shape == (2, 5)
    # The doubly reparameterised estimator's log q (weights held fixed) is the same number.
    torch.testing.assert_close(q.log_prob_fixed(z), q.log_prob(z.clone()))
    assert torch.isfinite(model.prior.log_prob(z)).all()
    assert model.decode(z).log_prob(x).shape == (2, 5)


def test_the_bottom_up_layer_gates_the_sum_of_what_it_reads() -> None:
    """q(z_1 | x, z_2)'s first hidden layer: (a_x + A z_2) * sigmoid(g_x + G z_2), with
    (a_x, g_x) from the encoder network and (A; G) the layer's weights of z_2."""
    head = _gated_hvae("bottom-up").encoder.head
    assert head.in_features == 2 * 3 + 2 * 10
    ctx, above = torch.randn(4, 20), torch.randn(4, 3)
    (mu, logvar), _ = head.posterior_layer(0, ctx, above)
    pre = ctx + above @ head.from_above[0].weight.T
    a = pre[:, :10] * torch.sigmoid(pre[:, 10:])
    want = head.posterior_nets[0](a)
    torch.testing.assert_close(torch.cat([mu, logvar], dim=-1), want)


def test_gated_units_are_refused_by_a_conv_network_with_what_to_use() -> None:
    with pytest.raises(ConfigError, match="option of the mlp network"):
        load_config(None, ["model.encoder=conv", "model.encoder.activation=gated"])
    with pytest.raises(ConfigError, match="did you mean 'gated'"):
        load_config(None, ["model.encoder.activation=gatd"])


def test_a_tiny_gated_hvae_vamp_config_trains(tmp_path: Path) -> None:
    cfg = tiny_config(
        "model.encoder={name: mlp, hidden: [16, 16], activation: gated}",
        "model.posterior={name: hierarchical, hidden: 8, decoder_reads: 2}",
        "model.prior={name: vamp, components: 5}",
        "train.epochs=2",
    )
    rows = _quiet_fit(cfg, tmp_path / "run")
    assert math.isfinite(rows[-1]["test"]["elbo"])
    assert rows[1]["train"]["loss"] < rows[0]["train"]["loss"]  # it learns


# -- the weights' moving average ---------------------------------------------------------------


def test_the_moving_average_follows_its_formula() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in net.parameters()]
    avg = WeightAverage(net, decay=0.75)
    want = start
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        avg.update(net)
        want = [0.75 * e + 0.25 * p.detach() for e, p in zip(want, net.parameters(), strict=True)]
    for got, w in zip(avg.module.parameters(), want, strict=True):
        torch.testing.assert_close(got, w)
    assert not any(p.requires_grad for p in avg.module.parameters())
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        WeightAverage(net, decay=1.0)


def test_train_ema_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.ema"):
        tiny_config("train.ema=1.5").validate()


def test_validation_scores_the_average_and_the_run_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every split is scored with the average; RUN/best.safetensors and model.safetensors
    hold it, the checkpoint keeps it beside the raw weights the optimiser goes on from."""
    import vaekit.train.loop as loop

    scored: list[dict[str, torch.Tensor]] = []
    real = loop.evaluate_split

    def spy(model: Any, *args: Any, **kw: Any) -> Any:
        scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kw)

    monkeypatch.setattr(loop, "evaluate_split", spy)
    run = tmp_path / "run"
    rows = _quiet_fit(
        tiny_config("train.ema=0.9", "data.valid_fraction=0.25", "train.epochs=3"), run
    )
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    raw, avg = load_file(ckpt / "model.safetensors"), load_file(ckpt / "ema.safetensors")
    last = load_file(run / "model.safetensors")
    assert all(torch.equal(last[k], avg[k]) for k in avg)
    assert not all(torch.equal(raw[k], avg[k]) for k in avg)
    # The last epoch scored its validation and test splits with the average.
    for weights in scored[-2:]:
        assert all(torch.equal(weights[k], avg[k]) for k in avg)
    # The best weights are the average at the best validation epoch (valid, test each epoch
    # but the last, which scores both).
    best_epoch = rows[-1]["best_epoch"]
    best = load_file(run / "best.safetensors")
    at_best = scored[best_epoch - 1]
    assert all(torch.equal(best[k], at_best[k]) for k in best)
    assert len(read_metrics(run)) == 3


# -- the VampPrior's pseudo-inputs ---------------------------------------------------------------


def test_pseudo_inputs_from_data_are_training_examples_plus_a_little_noise() -> None:
    from vaekit.distributions.priors import VampPrior

    x = torch.rand(10, *SHAPE).round()
    prior = VampPrior(2, components=4, init="data", data_shape=SHAPE)
    prior.init_from_data(x, torch.Generator().manual_seed(0))
    u = prior.pseudo_inputs.detach()
    gap = (u[:, None] - x[None]).flatten(2).abs().amax(-1)  # (K, N)
    nearest = gap.argmin(1)
    assert len(set(nearest.tolist())) == 4  # four different examples
    assert (gap.amin(1) < 0.06).all()  # 0.01 N(0, 1) noise on 64 elements
    assert 0.005 < float((u - x[nearest]).std()) < 0.02
    # The default (noise) ignores the data.
    noise = VampPrior(2, components=4, data_shape=SHAPE)
    before = noise.pseudo_inputs.detach().clone()
    noise.init_from_data(x, torch.Generator().manual_seed(0))
    assert torch.equal(noise.pseudo_inputs, before)


def test_clipped_pseudo_inputs_reach_the_encoder_inside_0_1() -> None:
    model = _gated_hvae("bottom-up", "model.prior.clip=true")
    with torch.no_grad():
        model.prior_module.pseudo_inputs.mul_(0).add_(torch.linspace(-2, 3, 64).reshape(SHAPE))
        p = model.prior.top
        q = model.encode(model.prior_module.pseudo_inputs.clamp(0, 1))
    torch.testing.assert_close(p.component_distribution.base_dist.loc, q.top.base_dist.loc)


def test_pseudo_inputs_learn_at_their_own_rate_and_start_from_data(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_config(
        "model.prior={name: vamp, components: 6, init: data, lr_scale: 1e-6}",
        "train.epochs=1",
        "train.lr=0.01",
    )
    _quiet_fit(cfg, run)
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    groups = state["optimizers"]["model"]["param_groups"]
    assert sorted(g.get("lr_scale", 1.0) for g in groups) == [1e-6, 1.0]
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.01 * 1e-6, 0.01])
    # At a millionth of the rate the pseudo-inputs are still the training examples they
    # started as (plus their 0.01 noise).
    import vaekit

    u = load_file(run / "model.safetensors")["prior_module.pseudo_inputs"]
    x = vaekit.load(run).dataset().train.x
    gap = (u[:, None] - x[None]).flatten(2).abs().amax(-1).amin(1)
    assert (gap < 0.06).all()


def test_every_arm_of_the_ablation_benchmark_is_a_valid_config() -> None:
    """benchmarks/hvae_vamp_ablation.py's arms: each one's settings on bmnist_hvae_vamp
    load and validate (a misspelt key would only show hours into the sweep)."""
    import argparse
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import hvae_vamp_ablation as ablation
    finally:
        sys.path.remove(str(bench))
    a = argparse.Namespace(epochs=3, seed=1, limit=100, set=["objective.warmup_epochs=2"])
    for name in ablation.ARMS:
        cfg = load_config(ablation.CONFIG, ablation.arm_settings(name, a))
        assert cfg.train.epochs == 3 and cfg.train.seed == 1 and cfg.data.limit == 100
        assert cfg.objective.options.warmup_epochs == (0 if name == "no-warmup" else 2)


GATED_CONFIGS = ["bmnist_vamp_gated", "bmnist_hvae_gated", "bmnist_hvae_vamp_gated"]


@pytest.mark.parametrize("name", GATED_CONFIGS)
def test_the_gated_configs_train_an_epoch_on_binarized_mnist(
    name: str, tmp_path: Path, shared_data_dir: Path
) -> None:
    cfg = load_config(
        name, ["train.epochs=1", "data.limit=200", "train.score_limit=200", "train.threads=1"]
    )
    assert cfg.model.encoder.options.activation == "gated"
    run = tmp_path / name
    rows = fit(cfg, run, data_dir=str(shared_data_dir), progress=False, log=io.StringIO())
    assert math.isfinite(rows[-1]["valid"]["elbo"]) and math.isfinite(rows[-1]["test"]["elbo"])
    assert -rows[-1]["test"]["elbo"] < 543  # below 784 log 2: one short epoch learns


def test_gated_units_reach_the_implicit_posterior_of_avb() -> None:
    """AVB's head reads the encoder's last features through the encoder's activation: a
    gated encoder hands it twice as many (value and gate)."""
    cfg = load_config(
        None,
        [
            "model.latent_dim=2",
            "model.encoder={name: mlp, hidden: [16], activation: gated}",
            "model.posterior=implicit",
            "objective.name=avb",
        ],
    )
    model = build_model(cfg.model, SHAPE)
    assert model.encoder.head.in_features == 32
    assert model.encode(torch.rand(3, *SHAPE)).rsample((2,)).shape == (2, 3, 2)


# -- Tomczak & Welling's optimiser -------------------------------------------------------------


def test_adam_normgrad_is_adam_on_gradients_divided_by_their_norm() -> None:
    from vaekit.optim import make_optimizer

    torch.manual_seed(0)
    start = torch.randn(3, 4)
    ours = torch.nn.Parameter(start.clone())
    ref = torch.nn.Parameter(start.clone())
    raw = torch.nn.Parameter(start.clone())
    opt = make_optimizer("adam-normgrad", [ours], 0.1, 0.0, torch.device("cpu"))
    ref_opt = torch.optim.Adam([ref], lr=0.1)
    raw_opt = torch.optim.Adam([raw], lr=0.1)
    for scale in (1.0, 100.0, 0.01):  # gradients of very different sizes
        g = scale * torch.randn(3, 4)
        ours.grad, raw.grad = g.clone(), g.clone()
        ref.grad = g / (g.norm() + 1e-7)
        opt.step()
        ref_opt.step()
        raw_opt.step()
    torch.testing.assert_close(ours.detach(), ref.detach())
    assert not torch.allclose(ours.detach(), raw.detach())


def test_he_init_starts_every_linear_layer_at_n_0_2_over_fan_in() -> None:
    sets = [
        "model.latent_dim=40",
        "model.encoder={name: mlp, hidden: [300, 300], activation: gated}",
    ]
    sets += ["model.posterior={name: hierarchical, decoder_reads: 2}"]
    torch.manual_seed(0)
    he = build_model(load_config(None, [*sets, "model.weight_init=he"]).model, (1, 28, 28))
    torch.manual_seed(0)
    plain = build_model(load_config(None, sets).model, (1, 28, 28))
    linears = [m for m in he.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 8  # the encoder's, the decoder's and the hierarchy's own
    for m in linears:
        want = (2.0 / m.in_features) ** 0.5
        assert abs(float(m.weight.detach().std()) / want - 1) < 0.1, m
    first = plain.encoder.net.net[0].weight.detach()  # PyTorch's default: U(+-1/sqrt(fan-in))
    assert abs(float(first.std()) * (3 * 784) ** 0.5 - 1) < 0.05
    with pytest.raises(ConfigError, match="model.weight_init"):
        load_config(None, ["model.weight_init=xavier"]).validate()
