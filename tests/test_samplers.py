"""Post-hoc latent samplers (GMM, flow, two-stage VAE), temperature, and their CLI."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny
from torch.distributions import Independent, Uniform

import vaekit
from vaekit.cli import main
from vaekit.config import ConfigError
from vaekit.distributions.priors import MixturePrior, StandardNormalPrior, tempered
from vaekit.samplers import (
    Codes,
    GMMSampler,
    SamplerError,
    fit_sampler,
    load_sampler,
    saved_samplers,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained VAE (with a validation split) shared by the module's tests."""
    out = tmp_path_factory.mktemp("samplers") / "run"
    torch.set_num_threads(1)
    return train_tiny(out, "data.valid_fraction=0.2", "model.latent_dim=3")


def test_temperature_scales_a_gaussian_prior_and_each_mixture_component() -> None:
    p = StandardNormalPrior(3)()
    assert tempered(p, 1.0) is p
    assert torch.allclose(tempered(p, 0.5).stddev, torch.full((3,), 0.5))
    torch.manual_seed(0)
    mix = MixturePrior(2, components=4)()
    cold = tempered(mix, 0.1)
    # Weights and means stay; each component's spread shrinks: z = mu_k + T (z0 - mu_k).
    assert torch.equal(cold.component_distribution.mean, mix.component_distribution.mean)
    assert torch.allclose(
        cold.component_distribution.stddev, 0.1 * mix.component_distribution.stddev
    )
    with torch.no_grad():
        z = cold.sample((500,))
        nearest = torch.cdist(z, mix.component_distribution.mean).min(1).values
        assert float(nearest.max()) < 0.1 * 5 * float(mix.component_distribution.stddev.max())
    with pytest.raises(ConfigError, match="has no temperature"):
        tempered(Independent(Uniform(torch.zeros(2), torch.ones(2)), 1), 0.5)
    with pytest.raises(ConfigError, match="positive number"):
        tempered(p, 0.0)


def test_sampling_at_a_low_temperature_decodes_the_prior_mean(run_dir: Path) -> None:
    run = vaekit.load(run_dir)
    torch.manual_seed(0)
    x = run.sample(5, temperature=1e-4)
    centre = run.generate(torch.zeros(1, run.latent_dim))
    assert torch.allclose(x, centre.expand_as(x), atol=1e-3)
    assert not torch.allclose(run.sample(5), centre.expand_as(x), atol=1e-3)


def test_gmm_picks_components_on_held_out_codes() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])

    def draw(n: int) -> torch.Tensor:
        return centres[torch.randint(0, 3, (n,), generator=g)] + torch.randn(n, 2, generator=g)

    s = GMMSampler(GMMSampler.Options(components=[1, 3, 6]))
    s.fit(Codes(draw(1500), draw(500), "test codes"))
    scores = {c["components"]: c["held_out_log_likelihood"] for c in s.info["candidates"]}
    assert s.info["chosen_components"] == max(scores, key=lambda k: scores[k]) >= 3
    assert scores[3] > scores[1] + 0.5
    torch.manual_seed(0)
    z = s.sample(3000)
    # Samples land on the clusters, in their proportions (a third each).
    nearest = torch.cdist(z, centres).argmin(1)
    assert torch.allclose(nearest.bincount().float() / 3000, torch.full((3,), 1 / 3), atol=0.05)
    # A low temperature pulls every draw onto its component's mean.
    torch.manual_seed(0)
    cold = s.sample(300, temperature=1e-3)
    assert float(torch.cdist(cold, s.means.float() * s.std + s.mean).min(1).values.max()) < 0.05
    with pytest.raises(SamplerError, match="positive number"):
        s.sample(3, temperature=-1)


def test_gmm_sampler_is_saved_reloaded_and_refitted_when_the_weights_change(
    run_dir: Path, tmp_path: Path
) -> None:
    import shutil

    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    run = vaekit.load(run_copy)
    log = io.StringIO()
    fitted = fit_sampler(run, "gmm", {"components": [1, 2]}, log=log)
    info = json.loads((run_copy / "samplers" / "gmm" / "sampler.json").read_text())
    assert info["chosen_components"] in (1, 2) and info["weights_sha256"]
    assert "validation split" in info["codes"] and "saved the gmm" in log.getvalue()
    assert saved_samplers(run_copy) == ["gmm"]
    again = load_sampler(run, "gmm", fit=False)
    torch.manual_seed(3)
    a = fitted.sample(4)
    torch.manual_seed(3)
    assert torch.equal(again.sample(4), a)
    # Other weights: the saved sampler is stale, refused without fit, refitted with it.
    with torch.no_grad():
        next(run.model.parameters()).add_(0.5)
    with pytest.raises(SamplerError, match="fitted on other weights.*vaekit fit-sampler"):
        load_sampler(run, "gmm", fit=False)
    refit = load_sampler(run, "gmm", options={"components": [1, 2]})
    assert refit.info["weights_sha256"] != info["weights_sha256"]
    with pytest.raises(SamplerError, match="no option 'component'.*did you mean 'components'"):
        fit_sampler(run, "gmm", {"component": [2]})
    with pytest.raises(SamplerError, match="unknown sampler 'gmn'.*did you mean 'gmm'"):
        run.sampler("gmn")


def test_flow_sampler_round_trip(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("zuko")
    import shutil

    shutil.copytree(run_dir, tmp_path / "run")
    run = vaekit.load(tmp_path / "run")
    with pytest.raises(SamplerError, match="not been fitted yet.*vaekit fit-sampler"):
        run.sampler("flow")  # loading a run never fits (nor trains) a sampler
    s = load_sampler(run, "flow", options={"epochs": 2, "hidden": [16], "transforms": 1})
    assert s.info["best_epoch"] in (1, 2) and len(s.info["history"]) == 2
    torch.manual_seed(1)
    a = s.sample(6, temperature=0.7)
    torch.manual_seed(1)
    b = load_sampler(run, "flow", fit=False).sample(6, temperature=0.7)
    assert a.shape == (6, run.latent_dim) and torch.allclose(a, b, atol=1e-5)
    assert run.sample(4, sampler="flow").shape == (4, *run.data_shape)


def test_flow_sampler_without_zuko_says_how_to_install_it(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zuko", None)
    run = vaekit.load(run_dir)
    with pytest.raises(SamplerError, match=r'pip install "vaekit\[flows\]"'):
        fit_sampler(run, "flow", {"epochs": 1})


def test_two_stage_sampler_trains_a_second_vaekit_run(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(run_dir, tmp_path / "run")
    run = vaekit.load(tmp_path / "run")
    log = io.StringIO()
    # The second run lies in RUN/samplers, which only the sampler itself may train into.
    s = fit_sampler(run, "two-stage", {"epochs": 2, "hidden": [16]}, log=log)
    folder = tmp_path / "run" / "samplers" / "two-stage"
    wrote = {line[6:] for line in log.getvalue().splitlines() if line.startswith("wrote ")}
    assert wrote == {str(p) for p in folder.iterdir()}
    second = vaekit.load(tmp_path / "run" / "samplers" / "two-stage" / "run")
    # Dai & Wipf: the second latent is as wide as the first; a learned Gaussian scale.
    assert second.latent_dim == run.latent_dim and second.data_shape == (run.latent_dim,)
    assert second.config.model.likelihood.options.sigma == "learned"
    assert s.info["epochs"] == 2 and np.isfinite(s.info["held_out_elbo"])
    torch.manual_seed(0)
    z = load_sampler(run, "two-stage", fit=False).sample(5)
    assert z.shape == (5, run.latent_dim) and bool(torch.isfinite(z).all())


def test_samplers_figure_and_report_show_each_sampler_and_its_scores(
    run_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from vaekit.plots import applicable_figures, run_figures
    from vaekit.quality import quality_file_name
    from vaekit.report import render_report

    shutil.copytree(run_dir, tmp_path / "run")
    run = vaekit.load(tmp_path / "run")
    assert "vaekit fit-sampler" in str(applicable_figures(run, run.dataset())["samplers"])
    fit_sampler(run, "gmm", {"components": [1]})
    scores = {"prior": {"fid": 12.5, "precision": 0.5, "recall": 0.25}}
    result = {
        "features": {"network": "the test network", "key": "k"},
        "n_samples": 10,
        "reference": "test split",
        "temperature": 1.0,
        "scores": scores,
    }
    (run.dir / quality_file_name("domain")).write_text(json.dumps(result))
    fig = run_figures(run, which=["samplers"])["samplers"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["prior\nFID 12.5, P 0.50, R 0.25", "gmm (gmm1)"]
    html = render_report(run, {}, {"samplers": fig})
    assert "Sample quality" in html and "the test network" in html and "12.50" in html
    # A sampler fitted on other weights shows why it is left out, instead of samples.
    with torch.no_grad():
        next(run.model.parameters()).add_(1.0)
    fig = run_figures(run, which=["samplers"])["samplers"]
    assert "fitted on other weights" in fig.axes[1].texts[0].get_text()


def test_conditional_models_sample_from_their_prior_only(tmp_path: Path) -> None:
    run = vaekit.load(train_tiny(tmp_path / "cvae", "model.conditional=true", "train.epochs=1"))
    with pytest.raises(SamplerError, match="conditional model"):
        run.sampler("gmm")
    assert run.sample(4, 3, temperature=0.5).shape == (4, *run.data_shape)


def test_cli_sample_with_a_sampler_and_fit_sampler(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "--sampler", "gmm", "--n", "5", "--out", str(out)]) == 0
    assert "fitting the gmm sampler" in capsys.readouterr().err
    assert np.load(out).shape == (5, 1, 8, 8)
    assert main(["fit-sampler", str(run), "--sampler", "gmm", "--option", "components=[1, 2]"]) == 0
    # One `wrote PATH` line per file, as every command prints them (not "saved ... in DIR").
    wrote = [line[6:] for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    folder = run / "samplers" / "gmm"
    assert sorted(wrote) == sorted(str(p) for p in folder.iterdir())
    assert json.loads((run / "samplers/gmm/sampler.json").read_text())["options"]["components"] == [
        1,
        2,
    ]
    capsys.readouterr()
    assert main(["fit-sampler", str(run), "--sampler", "gmm", "--option", "k=3"]) == 2
    assert "no option 'k'" in capsys.readouterr().err
    assert main(["sample", str(run), "--temperature", "0", "--out", str(out)]) == 2
    assert "temperature must be a positive number" in capsys.readouterr().err


def test_draw_samples_the_likelihood_where_the_default_gives_its_means(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 25: samples of real-valued data were decoder means only, whose column sds
    # (0.42-1.27) were far below the data's 3; --draw / draw=True sample x ~ p(x|z).
    data = tmp_path / "rows.npy"
    np.save(data, np.random.default_rng(0).normal(0, 3, size=(300, 6)).astype(np.float32))
    run = tmp_path / "tab"
    sets = ["model.likelihood=gaussian", "model.likelihood.sigma=learned", "model.latent_dim=2"]
    args = ["train", "--dataset", str(data), "--out", str(run), "--epochs", "1"]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    r = vaekit.load(run)
    torch.manual_seed(0)
    means = r.sample(500)
    torch.manual_seed(0)
    draws = r.sample(500, draw=True)
    # By hand: z from the prior, then the likelihood's mean, or a draw from it.
    torch.manual_seed(0)
    px = r.decode(r.prior.sample((500,)))
    torch.testing.assert_close(means, px.mean)
    torch.manual_seed(0)
    z = r.prior.sample((500,))
    assert torch.equal(draws, r.decode(z).sample())
    assert bool((draws.std(0) > means.std(0) + 0.5).all())
    capsys.readouterr()
    for flags, name in (([], "m.npy"), (["--draw"], "d.npy")):
        assert main(["sample", str(run), "--n", "500", *flags, "--out", str(tmp_path / name)]) == 0
    out = capsys.readouterr().out
    assert "means of p(x|z)" in out and "draws x ~ p(x|z)" in out
    m, d = np.load(tmp_path / "m.npy"), np.load(tmp_path / "d.npy")
    assert m.shape == d.shape == (500, 6) and bool((d.std(0) > m.std(0) + 0.5).all())


def test_cli_quality_names_its_network(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    import vaekit.quality as quality

    monkeypatch.setattr(quality, "DOMAIN_STEPS", 20)
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    args = ["quality", str(run), "--sampler", "prior", "gmm", "--n", "60"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "quality-domain-n60.json").read_text())
    assert "domain classifier" in result["features"]["network"] in printed
    assert set(result["scores"]) == {"data", "prior", "gmm"}
    for s in result["scores"].values():
        assert s["fid"] >= 0 and 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1
        # Each score says in how many dimensions it was measured: 60 samples span at most 59.
        assert 0 < s["rank"] <= 59
    assert result["feature_dim"] == quality.DOMAIN_FEATURES and result["feature_rank"] > 0
    assert f"rank of the reference's features: {result['feature_rank']} of 128" in printed
    # The training examples score better than a two-epoch model's samples.
    assert result["scores"]["data"]["fid"] < result["scores"]["prior"]["fid"]
    # Another sampler later joins the same file; the scores already there stay.
    assert main(["quality", str(run), "--sampler", "prior", "--n", "60"]) == 0
    assert set(json.loads((run / "quality-domain-n60.json").read_text())["scores"]) == {
        "data",
        "prior",
        "gmm",
    }


def test_codes_of_a_dynamically_binarized_run_are_of_binary_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trainer draws binary pixels each batch and leaves the training split grey: the
    # samplers must be fitted (and selected) on codes of what the encoder saw, one seeded
    # binary draw, not of grey images it never saw.
    import vaekit.evaluate
    from vaekit.samplers import latent_codes

    run = vaekit.load(train_tiny(tmp_path / "run", "data.binarize=dynamic", "train.epochs=1"))
    seen: list[torch.Tensor] = []
    means = vaekit.evaluate.latent_means

    def spy(model: object, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        seen.append(x)
        return means(model, x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vaekit.evaluate, "latent_means", spy)
    codes = latent_codes(run)
    assert len(seen) == 2
    assert all(set(x.unique().tolist()) == {0.0, 1.0} for x in seen)
    assert torch.equal(latent_codes(run).fit, codes.fit)  # one seeded draw
