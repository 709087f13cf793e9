"""Discrete latents: Gumbel-softmax and VQ-VAE posteriors, priors over codes, the second stage.

The contract test covers every registered combination; these check the maths that is
particular to codes on tiny models (8x8 data, a handful of codes).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import train_tiny

import vaekit
from vaekit.cli import main
from vaekit.config import ConfigError, ModelConfig, config_from_dict, part
from vaekit.distributions.codes import GatedPixelCNN, GumbelPosterior, VQPosterior
from vaekit.evaluate import log_likelihood
from vaekit.model import build_model
from vaekit.objectives import ELBO, IWAE, PriorFit, build_objective

SHAPE = (1, 8, 8)


def _x(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed)).round()


def _gumbel_model(prior: dict | str = "categorical", categories: int = 3, latent: int = 6):
    torch.manual_seed(0)
    cfg = ModelConfig(
        latent_dim=latent,
        encoder=part("mlp", hidden=[16]),
        posterior=part("gumbel", categories=categories),
        prior=prior,
    )
    return build_model(cfg, SHAPE)


def _vq_model(prior: dict | str = "categorical", **vq: object):
    torch.manual_seed(0)
    options = {"codes": 4, "code_dim": 2} | vq
    cfg = ModelConfig(
        latent_dim=6, encoder=part("mlp", hidden=[16]), posterior=part("vq", **options), prior=prior
    )
    return build_model(cfg, SHAPE)


# -- Gumbel-softmax ------------------------------------------------------------------------------


def test_gumbel_log_prob_of_one_hot_codes_is_the_categorical_log_probability() -> None:
    head = GumbelPosterior(latent_dim=6, categories=3).eval()
    logits = torch.randn(4, 6)
    q = head(logits)
    z = q.sample((5,))
    rows = z.reshape(5, 4, 2, 3)
    assert torch.equal(rows.sum(-1), torch.ones(5, 4, 2))  # exact one-hot draws
    expected = torch.distributions.Categorical(logits=logits.reshape(4, 2, 3)).log_prob(
        rows.argmax(-1)
    )
    torch.testing.assert_close(q.log_prob(z), expected.sum(-1))


def test_gumbel_relaxed_draws_are_soft_and_straight_through_draws_one_hot() -> None:
    logits = torch.randn(4, 6, requires_grad=True)
    soft = GumbelPosterior(6, 3).train()(logits).rsample()
    assert not torch.equal(soft, soft.round())
    hard_head = GumbelPosterior(6, 3, hard=True).train()
    z = hard_head(logits).rsample()
    assert torch.equal(z, z.round())
    (z * torch.randn(6)).sum().backward()  # the relaxation's gradient reaches the logits
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_gumbel_temperature_anneals_by_epoch_and_stops_at_its_floor() -> None:
    head = GumbelPosterior(6, 3, temperature=1.0, min_temperature=0.5, anneal=0.1)
    head.set_epoch(1)
    assert head.temperature == 1.0
    head.set_epoch(3)
    assert head.temperature == pytest.approx(math.exp(-0.2))
    head.set_epoch(100)
    assert head.temperature == 0.5


def test_the_exact_categorical_kl_matches_its_monte_carlo_estimate() -> None:
    model = _gumbel_model(part("categorical", learned=True)).eval()
    with torch.no_grad():
        model.prior_module.logits.normal_()
    q, p = model.encode(_x(3)), model.prior
    exact = torch.distributions.kl_divergence(q, p)
    z = q.sample((20000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(mc, exact, atol=0.05, rtol=0.0)
    assert bool((exact > 0).all())


def _exact_log_likelihood(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = logsumexp over every code of log p(x|z) + log p(z)."""
    prior = model.prior
    z = prior.enumerate_support()  # (K**N, D)
    log_pz = prior.log_prob(z)
    log_px = model.decode(z.unsqueeze(1).expand(-1, len(x), -1)).log_prob(x)
    return torch.logsumexp(log_px + log_pz[:, None], 0)


@pytest.mark.parametrize("prior", ["categorical", {"name": "pixelcnn", "hidden": 8, "layers": 2}])
def test_importance_sampled_nll_matches_exact_enumeration_of_the_codes(prior) -> None:
    # Two variables of 3 classes: 9 codes, few enough to sum over.
    model = _gumbel_model(prior).eval()
    x = _x(4)
    with torch.no_grad():
        exact = _exact_log_likelihood(model, x)
    torch.manual_seed(1)
    estimate = log_likelihood(model, x, k=30000)
    torch.testing.assert_close(estimate.float(), exact, atol=0.02, rtol=0.0)
    # The ELBO (its expectation, over many draws) stays below it.
    elbo = ELBO(samples=2000)(model, x).terms["elbo"].detach()
    assert bool((elbo <= exact + 0.02).all())


# -- VQ-VAE ------------------------------------------------------------------------------------


def test_vq_bound_with_a_uniform_prior_is_reconstruction_plus_p_log_k() -> None:
    model = _vq_model().eval()
    x = _x()
    terms = ELBO()(model, x).terms
    # 3 positions of 4 codes: KL = -log p(z_q) = 3 log 4, log q = 0.
    torch.testing.assert_close(terms["kl"], torch.full((6,), 3 * math.log(4)))
    torch.testing.assert_close(terms["elbo"], -(terms["recon"] + 3 * math.log(4)))
    # The importance-sampled bound of a one-hot posterior is that same number.
    torch.testing.assert_close(log_likelihood(model, x, k=3).float(), terms["elbo"])


def test_vq_quantises_to_the_nearest_code_with_a_straight_through_gradient() -> None:
    head = VQPosterior(latent_dim=4, codes=3, code_dim=2, restart_dead=False).eval()
    head.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    # z is channel-major (d, P): position 0 is (0.9, 1.2), position 1 is (-1.5, 0.1).
    features = torch.tensor([[0.9, -1.5, 1.2, 0.1]], requires_grad=True)
    q = head(features)
    assert q.indices.tolist() == [[1, 2]]
    assert q.sample().tolist() == [[1.0, -2.0, 1.0, 0.0]]
    q.rsample().sum().backward()
    assert features.grad is not None and features.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert q.log_prob(q.sample()).item() == 0.0
    assert q.log_prob(torch.tensor([[0.0, -2.0, 0.0, 0.0]])).item() == -math.inf


def test_vq_commitment_loss_reaches_the_objective_and_the_codebook_learns_by_gradient() -> None:
    model = _vq_model(ema=False)
    x = _x()
    out = ELBO()(model, x)
    q = model.encode(x)
    assert q.aux_loss is not None
    torch.testing.assert_close(out.terms["loss"], out.terms["recon"] + out.terms["kl"] + q.aux_loss)
    assert {"commitment", "perplexity", "codes_used"} <= set(out.terms)
    out.loss.backward()
    assert float(model.encoder.head.codebook.grad.abs().sum()) > 0


def test_vq_ema_moves_each_used_code_to_the_running_mean_of_its_vectors() -> None:
    head = VQPosterior(latent_dim=2, codes=2, code_dim=2, decay=0.5, restart_dead=False).train()
    head.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    head.ema_sum.copy_(head.codebook)
    features = torch.tensor([[1.0, 1.0], [3.0, 3.0]], requires_grad=True)  # both to code 0
    head(features)
    # usage 0.5 * 1 + 0.5 * 2 = 1.5; sum 0.5 * 0 + 0.5 * (4, 4) = (2, 2): code (4/3, 4/3).
    torch.testing.assert_close(head.codebook[0], torch.tensor([4 / 3, 4 / 3]))
    torch.testing.assert_close(head.codebook[1], torch.tensor([10.0, 10.0]))  # unused: kept
    with torch.no_grad():  # measuring (no gradients) leaves the codebook alone
        head(features)
    torch.testing.assert_close(head.codebook[0], torch.tensor([4 / 3, 4 / 3]))


def test_vq_starts_from_data_and_restarts_codes_that_fall_out_of_use() -> None:
    torch.manual_seed(0)
    head = VQPosterior(latent_dim=2, codes=4, code_dim=2, decay=0.5).train()
    data = torch.randn(64, 2) + 100.0  # far from the N(0, 1) start
    q = head(data.requires_grad_())
    assert int(head.started) == 1  # every code among the data, then one EMA step
    assert float((head.codebook - 100.0).abs().max()) < 4.0
    assert q.terms["codes_used"][0] > 1
    # Feed one region only: the other codes fall below 1% of an even share and move there.
    for _ in range(12):
        head(torch.full((64, 2), -50.0, requires_grad=True))
    assert bool((head.codebook + 50.0).abs().max() < 1.0)
    # Without restarts a code that is never picked stays where it started.
    still = VQPosterior(latent_dim=2, codes=4, code_dim=2, restart_dead=False).train()
    start = still.codebook.clone()
    still(data)
    assert int((still.codebook == start).all(1).sum()) >= 3


# -- priors over codes ---------------------------------------------------------------------------


def test_pixelcnn_logits_depend_only_on_earlier_positions_in_raster_order() -> None:
    rows, cols = 3, 4
    net = GatedPixelCNN(codes=3, hidden=8, layers=4, grid=(rows, cols))
    for pos in range(rows * cols):
        x = F.one_hot(torch.randint(3, (1, rows, cols)), 3).float().requires_grad_()
        net(x)[0].reshape(rows * cols, 3)[pos].sum().backward()
        seen = x.grad[0].abs().sum(-1).reshape(-1) > 0
        assert not bool(seen[pos:].any()), f"position {pos} sees itself or later ones"
        # With 4 layers of 3x3 every earlier position of this grid is in view.
        assert bool(seen[:pos].all()), f"position {pos} misses earlier ones"


def test_pixelcnn_prior_sums_to_one_and_scores_its_own_samples() -> None:
    model = _vq_model(part("pixelcnn", hidden=8, layers=2))  # 3 positions of 4 codes
    p = model.prior
    with torch.no_grad():
        total = torch.logsumexp(p.log_prob(p.enumerate_support()), 0)
        z = p.sample((10,))
        lp = p.log_prob(z)
    assert abs(float(total)) < 1e-5
    assert z.shape == (10, 6) and bool(torch.isfinite(lp).all())


@pytest.mark.parametrize(
    "prior", [part("pixelcnn", hidden=8, layers=2), part("categorical", learned=True)]
)
def test_priors_over_codes_sample_at_a_temperature(prior) -> None:
    # Below 1, each conditional's logits are divided by T: still a distribution, sharper.
    from vaekit.distributions.priors import tempered

    model = _vq_model(prior)
    with torch.no_grad():
        for prm in model.prior_module.parameters():
            prm.add_(torch.randn_like(prm))  # a prior with preferences
        p = model.prior
        support = p.enumerate_support()
        entropy = {}
        for t in (1.0, 0.5, 0.2):
            lp = tempered(p, t).log_prob(support)
            assert abs(float(torch.logsumexp(lp, 0))) < 1e-5
            entropy[t] = float(-(lp.exp() * lp).sum())
        assert entropy[1.0] > entropy[0.5] > entropy[0.2]
        assert torch.allclose(tempered(p, 1.0).log_prob(support), p.log_prob(support))
        # Near zero, sampling is the most probable grid: every draw alike.
        z = tempered(p, 1e-4).sample((8,))
        assert bool((z == z[0]).all())
        assert model.sample(4, temperature=0.5).shape == (4, *SHAPE)


def test_the_uniform_prior_over_codes_refuses_a_temperature() -> None:
    # Issue 25: `vaekit sample --temperature 0.5` on a uniform categorical prior was accepted
    # (and changed nothing); the README says a prior with no temperature refuses it.
    from vaekit.distributions.priors import tempered
    from vaekit.errors import UsageError

    model = _vq_model("categorical")
    with pytest.raises(UsageError, match="uniform categorical prior.*has no temperature"):
        model.sample(4, temperature=0.5)
    p = model.prior
    assert tempered(p, 1.0) is p  # T = 1 is no temperature
    assert model.sample(4).shape == (4, *SHAPE)


# -- composition rules and the second stage ------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"model.prior": "categorical"}, "model.prior=mog or model.prior=normal"),
        ({"model.posterior": "gumbel", "model.prior": "normal"}, "model.prior=categorical"),
        (
            {
                "model.posterior": "vq",
                "model.prior": "categorical",
                "objective.name": "iwae",
                "objective.samples": 5,
            },
            "use objective.name=elbo",
        ),
        (
            {"model.posterior": "gumbel", "model.prior": "categorical", "objective.name": "avb"},
            "use objective.name=elbo",
        ),
        (
            {
                "model.latent_dim": 64,
                "model.posterior": "vq",
                "model.prior": "categorical",
                "objective.name": "prior-fit",
            },
            "no parameters to fit",
        ),
        ({"model.prior": "normal", "objective.name": "prior-fit"}, "has nothing to learn"),
    ],
)
def test_discrete_parts_refuse_combinations_that_make_no_sense(sets, message) -> None:
    data: dict = {}
    for key, value in sets.items():
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    # A uniform categorical has no parameters, but the part can learn: the objective's
    # check reads abilities, so its parameters are asked for when training starts.
    if "categorical" in str(sets) and "prior-fit" in str(sets):
        cfg = config_from_dict(data)
        with pytest.raises(ConfigError, match=message):
            build_objective(cfg.objective).param_groups(build_model(cfg.model, SHAPE))
        return
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_a_latent_size_that_does_not_split_into_codes_is_explained() -> None:
    with pytest.raises(ValueError, match="multiple of model.posterior.code_dim"):
        _vq_model(code_dim=4)  # 6 is not a multiple of 4


def test_prior_fit_trains_only_the_prior_and_raises_the_elbo() -> None:
    model = _vq_model(part("pixelcnn", hidden=8, layers=2))
    fit = PriorFit()
    groups = fit.param_groups(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("prior")}
    opt = torch.optim.Adam(groups["model"], lr=0.01)
    x = _x(32)
    elbo0 = float(fit(model, x).terms["elbo"].mean().detach())
    for _ in range(30):
        opt.zero_grad()
        fit(model, x).loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # encoder, codebook, decoder
    assert float(fit(model, x).terms["elbo"].mean().detach()) > elbo0 + 0.5
    assert IWAE.check(IWAE.Options(samples=1), model.composition) is None


# -- the second stage in the same run directory, from the command line ---------------------------

VQ_RUN = (
    "model.latent_dim=8",
    "model.encoder={name: conv, channels: [8, 8], grid: true}",
    "model.posterior={name: vq, codes: 8, code_dim: 2}",
    "model.prior=categorical",
)


def test_train_a_prior_stage_then_sample_and_evaluate_with_it(tmp_path, capsys) -> None:
    run = train_tiny(tmp_path / "vq", *VQ_RUN)
    assert vaekit.load(run).stage == "model"
    # Before the stage: samples come from the uniform prior, and the output says so.
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "a.npy")]) == 0
    assert "uniform prior" in capsys.readouterr().err
    # A temperature changes nothing on a uniform prior: refused, as the README says.
    assert main(["sample", str(run), "--temperature", "0.5"]) == 2
    assert "has no temperature" in capsys.readouterr().err
    assert main(["sample", str(run), "--n", "4"]) == 0
    assert f"wrote {run / 'samples.png'}" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--stage",
                "prior",
                "--epochs",
                "1",
                "--set",
                "model.prior.hidden=8",
                "--set",
                "model.prior.layers=2",
            ]
        )
        == 0
    )
    stage = run / "prior"
    cfg = json.loads((stage / "config.json").read_text())
    assert cfg["objective"]["name"] == "prior-fit" and cfg["model"]["prior"]["name"] == "pixelcnn"
    loaded = vaekit.load(run)
    assert loaded.stage == "prior" and loaded.dir == stage and loaded.parent == run
    first = vaekit.load(run, stage="model")
    # The stage changed only the prior: encoder, codebook and decoder are RUN's.
    same = {k: v for k, v in first.model.state_dict().items() if not k.startswith("prior")}
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in same.items())
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "b.npy")]) == 0
    assert "uniform" not in capsys.readouterr().err
    # Issue 25: outputs of the stage go under RUN/prior, beside RUN's own: every command
    # says where each file went, and that RUN/... is the first stage's.
    assert main(["sample", str(run), "--n", "4"]) == 0
    out, err = capsys.readouterr()
    assert f"wrote {stage / 'samples.png'}" in out and (stage / "samples.png").is_file()
    assert f"files stay in {run}" in err
    assert main(["encode", str(run), "--split", "test"]) == 0
    out = capsys.readouterr().out
    for name in ("latents_test_mean.npy", "latents_test_var.npy", "latents_test_codes.npy"):
        assert f"wrote {stage / name}" in out and (stage / name).is_file()
    assert main(["sample", str(run), "--stage", "model", "--n", "4", "--temperature", "1"]) == 0
    assert f"wrote {run / 'samples.png'}" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--k", "10", "--limit", "20"]) == 0
    result = json.loads((stage / "eval-n20-k10.json").read_text())
    assert result["codes"]["codes"] == 8 and result["codes"]["positions"] == 4
    assert "one is used" in result["nll_note"]
    # Training the stage further resumes it; --set applies only when it starts.
    assert main(["train", "--resume", str(run), "--stage", "prior", "--epochs", "2"]) == 0
    assert len(vaekit.load(run).metrics) == 2
    assert main(["train", "--resume", str(run), "--stage", "prior", "--set", "train.lr=0.1"]) == 2
    assert "--set applies when a stage starts" in capsys.readouterr().err


def test_a_prior_stage_needs_a_run_and_a_prior_for_continuous_latents(tmp_path, capsys) -> None:
    assert main(["train", "--stage", "prior"]) == 2
    assert "--resume RUN --stage prior" in capsys.readouterr().err
    run = train_tiny(tmp_path / "vae")
    assert main(["train", "--resume", str(run), "--stage", "prior", "--epochs", "1"]) == 2
    assert "--set model.prior=mog" in capsys.readouterr().err
    assert (
        main(["train", "--resume", str(run), "--stage", "prior", "--set", "model.latent_dim=3"])
        == 2
    )
    assert "keeps" in capsys.readouterr().err
    args = ["train", "--resume", str(run), "--stage", "prior", "--epochs", "1"]
    assert main([*args, "--set", "model.prior=mog"]) == 0
    assert (run / "prior" / "model.safetensors").is_file()


# -- figures and the explorer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    return train_tiny(tmp_path_factory.mktemp("vq") / "run", *VQ_RUN)


def test_figures_of_a_discrete_model_show_its_code_grids(vq_run) -> None:
    from vaekit.plots import applicable_figures, code_grids, run_figures

    run = vaekit.load(vq_run)
    ds = run.dataset()
    reasons = applicable_figures(run, ds)
    assert reasons["codes"] is None and reasons["reconstructions"] is None
    assert "discrete code" in reasons["traversal"] and "discrete code" in reasons["interpolation"]
    figs = run_figures(run, ds, which=["codes", "samples"])
    assert "uniform" in figs["samples"].axes[0].get_title()
    fig = code_grids(run, ds.test.x[:5])
    assert len(fig.axes) == 15  # image, code grid, decoding for each of 5
    grid = fig.axes[5].images[0].get_array()
    codes = run.model.encoder.head.codes(run.encode(ds.test.x[:1]).mode)
    assert grid.shape == (2, 2) and grid.ravel().tolist() == codes[0].tolist()
    assert len(fig.axes[5].texts) == 4  # the indices written in
    with pytest.raises(ValueError, match="discrete posterior"):
        code_grids(vaekit.load(train_tiny(vq_run.parent / "vae")), ds.test.x[:2])


def test_explorer_serves_the_codes_and_decodes_an_edited_grid(vq_run) -> None:
    import http.client
    import threading

    from vaekit.serve import make_server

    server = make_server(str(vq_run), port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def post(path: str, body: object) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())

    try:
        ex = server.explorer
        info = ex.info()
        assert info["codes"] == {"positions": 4, "codes": 8, "grid": [2, 2]}
        assert info["kind"] == "vae" and info["has_prior"]
        codes = ex.points()["codes"]
        assert len(codes) == 359 and all(len(c) == 4 for c in codes)
        # The map's points are codes: each decodes to its own indices.
        assert ex.codes_of(np.array(ex.points()["z"][:3])) == codes[:3]
        status, out = post("/api/codes", {"codes": [3, 1, 4, 1]})
        assert status == 200 and len(out["images"]) == 1
        run = vaekit.load(vq_run)
        z = run.model.encoder.head.embed(torch.tensor([[3, 1, 4, 1]]))
        np.testing.assert_allclose(out["z"], z.numpy(), atol=1e-4)
        assert ex.codes_of(np.array(out["z"])) == [[3, 1, 4, 1]]
        status, out = post("/api/sample", {"n": 3, "seed": 1})
        assert status == 200 and len(out["codes"]) == 3
        # The uniform prior has no temperature: a 400 that says so, as the CLI says it.
        status, out = post("/api/sample", {"n": 3, "temperature": 0.5})
        assert status == 400 and "has no temperature" in out["error"]
        plane = {"origin": [0.0] * 8, "axes": [[1.0] + [0.0] * 7, [0.0, 1.0] + [0.0] * 6]}
        status, out = post("/api/prior", {"plane": plane, "bounds": [-1, 1, -1, 1]})
        assert status == 400 and "distribution over codes" in out["error"]
        for bad, message in [
            ({"codes": [3, 1, 4]}, "4 code indices"),
            ({"codes": [3, 1, 4, 8]}, "in 0..7"),
            ({"codes": [3, 1, 4, True]}, "in 0..7"),
            ({"codes": []}, "code indices"),
        ]:
            status, out = post("/api/codes", bad)
            assert status == 400 and message in out["error"], (bad, out)
    finally:
        server.shutdown()
        server.server_close()


def test_report_of_a_discrete_model_shows_its_bound_and_codebook(vq_run, tmp_path) -> None:
    from vaekit.report import write_report

    out = write_report(vaekit.load(vq_run), k=2, out=tmp_path / "report.html")
    text = out.read_text()
    assert "codebook use" in text and "of 8 codes" in text
    assert "of one code per example" in text and 'alt="codes"' in text


@pytest.mark.parametrize(
    ("kind", "name", "options"),
    [("posterior", "vq", {"codes": 4, "code_dim": 1}), ("posterior", "gumbel", {"categories": 3})],
)
def test_check_part_builds_a_model_around_a_discrete_posterior(kind, name, options) -> None:
    from vaekit.testing import check_part, part_config

    cfg = part_config(kind, name, options)
    # A prior over its codes, and an objective that takes it (not AVB's discriminator).
    assert cfg.model.prior.name == "categorical" and cfg.objective.name == "elbo"
    assert check_part(kind, name, options, training=False)["bounds"] == "ok"


def test_train_init_loads_matching_weights_and_refuses_another_model(vq_run, tmp_path) -> None:
    from vaekit.rundir import RunError, init_weights

    run = vaekit.load(vq_run)
    other = _vq_model(part("pixelcnn", hidden=8, layers=2))  # an MLP model: other shapes
    with pytest.raises(RunError, match="not the same model"):
        init_weights(other, vq_run)
    with pytest.raises(RunError, match="no such run directory"):
        init_weights(other, tmp_path / "missing")
    # The same model with a learned prior: all but the prior's weights come from the run.
    cfg = config_from_dict(
        json.loads((vq_run / "config.json").read_text())
        | {
            "model": json.loads((vq_run / "config.json").read_text())["model"]
            | {"prior": "pixelcnn"}
        }
    )
    fresh = build_model(cfg.model, SHAPE)
    missing = init_weights(fresh, vq_run)
    assert missing and all(k.startswith("prior_module.") for k in missing)
    assert torch.equal(fresh.encoder.head.codebook, run.model.encoder.head.codebook)
