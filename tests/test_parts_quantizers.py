"""Quantizers of today: FSQ, residual VQ, LFQ, and VQ's k-means start and cosine codes.

The contract test runs each through the registry; these check what is particular to
each on tiny heads and models (8x8 data, a handful of codes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import train_tiny

import vaekit
from vaekit.cli import main
from vaekit.config import ConfigError, ModelConfig, part
from vaekit.distributions.codes import (
    MAX_CODES,
    DigitView,
    FSQPosterior,
    LFQPosterior,
    ResidualVQPosterior,
    VQPosterior,
    join_digits,
    shown_head,
    split_index,
)
from vaekit.model import build_model
from vaekit.objectives import ELBO
from vaekit.testing import check_model

SHAPE = (1, 8, 8)


def _x(n: int = 6) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(0)).round()


def test_digits_and_indices_are_one_mixed_radix_number() -> None:
    factors = (2, 3, 4)
    codes = torch.arange(24)
    digits = split_index(codes, factors)
    assert digits[:, 0].tolist()[:4] == [0, 1, 0, 1]  # the first digit fastest
    assert torch.equal(join_digits(digits, factors), codes)
    assert len({tuple(d) for d in digits.tolist()}) == 24


def test_fsq_codes_round_trip_and_every_code_is_reachable() -> None:
    head = FSQPosterior(latent_dim=6, levels=[2, 3, 4]).eval()  # 2 positions of 24 codes
    assert head.space.codes == 24 and head.space.factors == (2, 3, 4)
    codes = torch.cartesian_prod(torch.arange(24), torch.arange(24))  # every pair
    z = head.embed(codes)
    assert torch.equal(head.codes(z), codes)
    assert z.abs().max() <= 1  # levels scaled into [-1, 1]
    # The bounded, rounded encoder outputs reach every code, and only codes.
    q = head(3 * torch.randn(4000, 6, generator=torch.Generator().manual_seed(0)))
    assert set(q.indices.unique().tolist()) == set(range(24))
    assert torch.equal(head.embed(q.indices), q.z)
    assert q.aux_loss is None  # no codebook, no commitment loss


def test_fsq_rounds_with_a_straight_through_gradient() -> None:
    head = FSQPosterior(latent_dim=2, levels=[5, 5])
    e = torch.tensor([[0.3, -2.0]], requires_grad=True)
    z = head(e).rsample()
    z.sum().backward()
    assert e.grad is not None and (e.grad > 0).all()  # d tanh, not the round's zero


def test_rvq_quantizes_residuals_and_any_prefix_decodes() -> None:
    torch.manual_seed(0)
    head = ResidualVQPosterior(latent_dim=12, num_quantizers=3, codes=4, code_dim=2, dropout=1.0)
    features = torch.randn(64, 4)  # 2 positions x 2 channels
    head.train()(features)  # the codebooks start from the data
    head.eval()
    q = head(features)
    assert q.z.shape == (64, 12) and head.digits(q.z).shape == (64, 2, 3)
    assert torch.allclose(head.embed(q.indices), q.z, atol=1e-6)  # codes read back from z
    blocks = q.z.reshape(64, 3, 4)
    # Each quantizer codes what the ones before it left: the error shrinks along the stack.
    errors = [(features - blocks[:, :n].sum(1)).pow(2).sum() for n in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    short = head.prefix(q.z, 1).reshape(64, 3, 4)
    assert torch.equal(short[:, 0], blocks[:, 0]) and not short[:, 1:].any()
    # Quantizer dropout: in training steps every example keeps a prefix (dropout=1: all
    # draw one), of every length.
    z = head.train()(features).z.reshape(64, 3, 4)
    kept = z.abs().sum(-1).gt(0).sum(-1)
    assert set(kept.tolist()) == {1, 2, 3}
    assert all(z[i, kept[i] :].eq(0).all() for i in range(64))
    head.dropout = 0.0
    assert head.train()(features).z.reshape(64, 3, 4).abs().sum(-1).gt(0).all()


def test_lfq_codes_are_the_numbers_of_their_bits() -> None:
    head = LFQPosterior(latent_dim=3, code_dim=3).eval()
    q = head(torch.tensor([[0.5, -0.1, 2.0], [-1.0, -1.0, -1.0]]))
    assert q.z.tolist() == [[1, -1, 1], [-1, -1, -1]]
    assert q.indices.tolist() == [[1 + 4], [0]]  # bit c is channel c's sign
    assert torch.equal(
        head.embed(torch.arange(8)[:, None]).gt(0).long(), split_index(torch.arange(8), (2, 2, 2))
    )


def test_lfq_entropy_penalty_rewards_confident_and_diverse_codes() -> None:
    head = LFQPosterior(latent_dim=4, code_dim=4, commitment=0.0, temperature=1.0)
    g = torch.Generator().manual_seed(0)
    diverse = 6 * torch.randint(0, 2, (64, 4), generator=g).float() - 3  # every code, +-3
    same = 3 * torch.ones(64, 4)  # one code for the whole batch
    vague = 0.01 * diverse  # bits near 1/2 in every example
    s_div, b_div = head.entropy_penalty(head._split(diverse))
    s_same, b_same = head.entropy_penalty(head._split(same))
    s_vague, _ = head.entropy_penalty(head._split(vague))
    assert b_div.mean() > 0.9 * 4 * np.log(2) and b_same.mean() < 0.05  # batch entropy
    assert s_vague.mean() > 10 * s_div.mean()  # per-example entropy
    # The loss: lower for a diverse batch than for one code, and for confident bits.
    loss = lambda e: head(e).aux_loss.mean()  # noqa: E731
    assert loss(diverse) < loss(same) and loss(diverse) < loss(vague)


def test_vq_kmeans_start_puts_the_codes_at_the_data_s_centroids() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = centres.repeat(40, 1) + 0.1 * torch.randn(120, 2)
    head = VQPosterior(latent_dim=2, codes=3, code_dim=2, init="kmeans", restart_dead=False)
    with torch.no_grad():
        head.train()
        with torch.enable_grad():
            head(x)
    means = torch.stack([x[i::3].mean(0) for i in range(3)])
    book = head.codebook[head.codebook[:, 0].argsort(descending=True)]
    order = means[:, 0].argsort(descending=True)
    assert torch.allclose(book, means[order], atol=0.05)
    assert VQPosterior(latent_dim=2, codes=3, code_dim=2, restart_dead=False).started == 0


def test_vq_cosine_codes_lie_on_the_unit_sphere_and_match_by_direction() -> None:
    torch.manual_seed(0)
    head = VQPosterior(latent_dim=8, codes=5, code_dim=2, cosine=True, ema=False)
    x = torch.randn(32, 8)
    q = head.train()(x)
    vectors = head._split(q.z)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(32, 4), atol=1e-5)
    assert torch.equal(head.eval()(10 * x).indices, head(x).indices)  # length does not count
    q.aux_loss.sum().backward()
    assert head.codebook.grad is not None  # the codebook learns through the normalisation


def test_a_factorised_prior_models_each_digit_and_passes_the_contract() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        latent_dim=3,
        encoder=part("mlp", hidden=[16]),
        posterior=part("fsq", levels=[4, 3, 2]),  # one position, 24 codes, mixed levels
        prior=part("pixelcnn", hidden=8, layers=2, factorised=True),
    )
    model = build_model(cfg, SHAPE)
    prior = model.prior
    assert isinstance(prior.head, DigitView) and prior.head.space.limits == (4, 3, 2)
    z = prior.sample((200,))
    digits = model.encoder.head.digits(z)[:, 0]
    assert (digits < torch.tensor([4, 3, 2])).all()  # never a level a channel lacks
    check_model(model, ELBO(), _x())  # sums to one over the 24 codes, gradients, shapes


def test_whole_codes_too_many_for_one_categorical_need_the_factorised_prior() -> None:
    def rvq(prior: dict) -> object:
        cfg = ModelConfig(
            latent_dim=2 * 3,
            encoder=part("mlp", hidden=[16]),
            posterior=part("rvq", num_quantizers=3, codes=32, code_dim=2),  # 32^3 codes
            prior=prior,
        )
        return build_model(cfg, SHAPE)

    assert MAX_CODES < 32**3
    with pytest.raises(ConfigError, match="factorised: true"):
        rvq(part("categorical", factorised=False))
    model = rvq(part("categorical", learned=True))  # unset: factorised where needed
    assert model.prior.head.space.positions == 3 and model.prior.head.space.codes == 32
    z = model.encode(_x()).rsample()
    assert model.prior.log_prob(z).shape == (6,)
    # Figures and the explorer show each quantizer's code, not numbers up to 32^3.
    assert isinstance(shown_head(model.encoder.head), DigitView)


@pytest.mark.parametrize(
    "posterior",
    [
        "{name: fsq, levels: [3, 2]}",
        "{name: rvq, num_quantizers: 2, codes: 4, code_dim: 1}",
        "{name: lfq, code_dim: 2}",
    ],
)
def test_each_quantizer_trains_fits_a_prior_stage_and_samples_from_it(
    posterior, tmp_path, capsys
) -> None:
    from vaekit.plots import code_grids

    run = train_tiny(
        tmp_path / "run",
        "model.latent_dim=8",
        "model.encoder={name: conv, channels: [4, 4], grid: true}",
        f"model.posterior={posterior}",
        "model.prior=categorical",
    )
    args = ["train", "--resume", str(run), "--stage", "prior", "--epochs", "1"]
    assert main([*args, "--set", "model.prior.hidden=4", "--set", "model.prior.layers=1"]) == 0
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "s.npy")]) == 0
    assert "uniform" not in capsys.readouterr().err and np.load(tmp_path / "s.npy").shape[0] == 2
    assert main(["encode", str(run), "--split", "test"]) == 0
    loaded = vaekit.load(run)
    codes = np.load(run / "prior" / "latents_test_codes.npy")
    assert codes.shape[1] == loaded.model.encoder.head.space.positions
    x = loaded.dataset().test.x[:2]
    assert len(code_grids(loaded, x, n=2).axes) == 6


def test_explorer_edits_each_fsq_channel_within_its_levels(tmp_path) -> None:
    import http.client
    import json
    import threading

    from vaekit.serve import make_server

    # 8 * 8 * 8 * 8 * 5 codes per position: more than one categorical takes, so the
    # explorer shows (and the code editor sets) each channel's level.
    run = train_tiny(
        tmp_path / "fsq",
        "model.latent_dim=10",
        "model.posterior={name: fsq, levels: [8, 8, 8, 8, 5]}",
        "model.prior=categorical",
    )
    server = make_server(str(run), port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def post(codes: list[int]) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        body = json.dumps({"codes": codes})
        conn.request("POST", "/api/codes", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())

    try:
        assert server.explorer.info()["codes"]["positions"] == 10  # 2 positions x 5 channels
        ok = [7, 0, 3, 5, 4, 1, 2, 6, 7, 0]
        status, out = post(ok)
        assert status == 200 and server.explorer.codes_of(np.array(out["z"])) == [ok]
        status, out = post(ok[:4] + [5] + ok[5:])  # the fifth channel has 5 levels
        assert status == 400 and "in 0..4" in out["error"]
    finally:
        server.shutdown()
        server.server_close()
