"""Every figure returns a Figure with the expected content, for tiny runs trained here."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny
from matplotlib.figure import Figure

import vaekit
from vaekit.cli import main
from vaekit.images import reconstruction_grid
from vaekit.plots import (
    FIGURES,
    LAYER_FIGURES,
    FigureSpec,
    applicable_figures,
    class_grid,
    compare_curves,
    compare_runs,
    interpolation,
    latent_grid,
    latent_histograms,
    latent_scatter,
    latent_traversal,
    manifold_grid,
    prior_samples,
    project_2d,
    reconstructions,
    run_figures,
    save_figures,
    training_curves,
)

GRID = 15 * (8 + 1) + 1  # a 15x15 grid of 8x8 digits with 1-pixel seams


def _train(tmp: Path, *overrides: str) -> vaekit.Run:
    return vaekit.load(train_tiny(tmp, *overrides))


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    torch.set_num_threads(1)
    return _train(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def cvae(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    torch.set_num_threads(1)
    return _train(tmp_path_factory.mktemp("cvae"), "model.conditional=true", "train.epochs=1")


@pytest.fixture(scope="module")
def ae(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    torch.set_num_threads(1)
    return _train(
        tmp_path_factory.mktemp("ae"),
        "model.posterior=point",
        "objective.name=ae",
        "train.epochs=1",
    )


@pytest.fixture(scope="module")
def test_split(vae: vaekit.Run) -> tuple[torch.Tensor, torch.Tensor]:
    t = vae.dataset().test
    assert t.y is not None
    return t.x, t.y


def _one_image(fig: Figure) -> np.ndarray:
    (ax,) = fig.axes
    (img,) = ax.get_images()
    a = np.asarray(img.get_array())
    assert np.isfinite(a).all()
    return a


def test_latent_scatter_colours_each_class() -> None:
    z = np.random.default_rng(0).normal(size=(300, 2))
    labels = np.arange(300) % 5
    fig = latent_scatter(z, labels, class_names=list("abcde"))
    (ax,) = fig.axes
    assert len(ax.collections) == 5
    assert sum(len(c.get_offsets()) for c in ax.collections) == 300
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list("abcde")
    # Beyond two dimensions: the PCA plane, labelled with its explained variance.
    fig3 = latent_scatter(np.random.default_rng(1).normal(size=(50, 4)))
    assert (
        fig3.axes[0].get_xlabel().startswith("PC1")
        and np.isfinite(fig3.axes[0].collections[0].get_offsets()).all()
    )
    assert (
        latent_scatter(np.random.default_rng(1).normal(size=(50, 4)), dims=(1, 3))
        .axes[0]
        .get_xlabel()
        == "z1"
    )


def test_project_2d_errors_and_pca() -> None:
    xy, names = project_2d(np.c_[np.arange(10.0), 2 * np.arange(10.0), np.zeros(10)])
    assert xy.shape == (10, 2) and "100%" in names[0]
    with pytest.raises(ValueError, match="two latent dimensions"):
        project_2d(np.zeros((4, 3)), dims=(0, 5))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        project_2d(np.zeros(4))


def test_latent_histograms_one_panel_per_class_and_dimension() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 10
    z = rng.normal(size=(400, 2)) + labels[:, None]
    fig = latent_histograms(z, labels)
    assert len(fig.axes) == 20
    for ax in fig.axes:
        assert len(ax.patches) > 0 and len(ax.lines) == 2  # fitted normal + mean line
        assert "N(" in ax.get_xlabel()
    # Every panel of a dimension shares its range.
    assert len({fig.axes[i].get_xlim() for i in range(0, 20, 2)}) == 1
    assert len(latent_histograms(z, labels, dims=[1]).axes) == 10
    with pytest.raises(ValueError, match="labels"):
        latent_histograms(z, labels[:10])


def test_manifold_grid_is_15_by_15(vae: vaekit.Run) -> None:
    fig = manifold_grid(vae)
    assert _one_image(fig).shape == (GRID, GRID)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "-1.64" and labels[-1] == "1.64"


def test_grids_of_a_conditional_model_name_their_class(cvae: vaekit.Run, vae: vaekit.Run) -> None:
    assert manifold_grid(cvae, 3, y=7).axes[0].get_title().endswith("(3x3, class 7)")
    assert latent_grid(cvae, n=2).axes[0].get_title().endswith(", class 0")
    assert "class" not in manifold_grid(vae, 2).axes[0].get_title()


def test_latent_grid_over_a_chosen_range(vae: vaekit.Run) -> None:
    fig = latent_grid(vae, (-2, 2), (-1, 1), n=5)
    assert _one_image(fig).shape == (5 * 9 + 1, 5 * 9 + 1)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks[0] == "1" and ticks[-1] == "-1"  # top row is the largest value
    with pytest.raises(ValueError, match="low < high"):
        latent_grid(vae, (2, -2))


def test_reconstructions_beside_originals(
    vae: vaekit.Run, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # The grid `vaekit reconstruct` writes: a row of originals above their reconstructions.
    fig = reconstructions(vae, test_split[0], n=8)
    assert len(fig.axes) == 1
    grid = _one_image(fig)
    assert grid.shape == (2 * 9 + 1, 8 * 9 + 1)
    top, bottom = grid[:10], grid[9:]
    assert not np.allclose(top, bottom)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["original", "reconstruction"]
    x = test_split[0][:8]
    expected, _ = reconstruction_grid(x, vae.reconstruct(x), vae.data_shape)
    assert np.array_equal(grid, expected)


def test_prior_samples_grid(vae: vaekit.Run) -> None:
    assert _one_image(prior_samples(vae, n=16)).shape == (4 * 9 + 1, 4 * 9 + 1)
    # Seeded: the same draws twice, without touching the global random state.
    a, b = _one_image(prior_samples(vae, n=4, seed=1)), _one_image(prior_samples(vae, n=4, seed=1))
    assert np.array_equal(a, b)


def test_interpolation_rows_are_pairs(
    vae: vaekit.Run, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x = test_split[0]
    img = _one_image(interpolation(vae, x[:3], x[3:6], steps=6))
    assert img.shape == (3 * 9 + 1, 8 * 9 + 1)
    with pytest.raises(ValueError, match="same number"):
        interpolation(vae, x[:3], x[3:5])


def test_training_curves_one_panel_per_term(vae: vaekit.Run) -> None:
    fig = training_curves(vae.metrics)
    terms = list(vae.metrics[0]["train"])
    assert [ax.get_title() for ax in fig.axes] == terms
    for ax in fig.axes:
        assert {line.get_label() for line in ax.lines} == {"train", "test"}
        assert all(np.isfinite(line.get_ydata()).all() for line in ax.lines)
    with pytest.raises(ValueError, match="metrics"):
        training_curves([])


def test_latent_traversal_one_row_per_dimension(
    vae: vaekit.Run, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    img = _one_image(latent_traversal(vae, test_split[0][:1], n=7))
    assert img.shape == (2 * 9 + 1, 7 * 9 + 1)
    assert [t.get_text() for t in latent_traversal(vae, dims=[1]).axes[0].get_yticklabels()] == [
        "z1"
    ]


def test_class_grid_for_conditional_models(cvae: vaekit.Run, vae: vaekit.Run) -> None:
    fig = class_grid(cvae, n=6)
    assert _one_image(fig).shape == (10 * 9 + 1, 6 * 9 + 1)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="conditional"):
        class_grid(vae)


def test_class_grid_draws_each_row_from_its_class_prior(tmp_path: Path) -> None:
    # With a prior per class, row c's codes come from p(z|c): the class means differ, so
    # the rows' codes do too (a shared z of p(z) decoded under each label did not).
    run = _train(
        tmp_path,
        "model.conditional=true",
        "model.prior={name: class-gaussian, spread: 5.0}",
        "train.epochs=1",
    )
    seen: list[torch.Tensor] = []
    real = run.generate
    run.generate = lambda z, y=None: seen.append(z) or real(z, y)  # type: ignore[method-assign]
    n = 25
    fig = class_grid(run, n=n)
    z = seen[0].reshape(10, n, -1)
    prior = run.model.prior_module
    means, stds = prior.means.detach(), prior.logvars.detach().mul(0.5).exp()
    # Each row's codes sit around its own class mean (within 4 standard errors of their
    # mean, per unit), and the rows differ: no z shared across classes.
    assert ((z.mean(1) - means).abs() < 4 * stds / n**0.5).all()
    assert not torch.equal(z[0], z[1])
    assert "p(z|class)" in fig.axes[0].get_title()


def test_compare_runs_side_by_side(
    ae: vaekit.Run, vae: vaekit.Run, test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = test_split
    fig = compare_runs(ae, vae, x[:200], y[:200], names=("AE", "VAE"))
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title().startswith("AE: autoencoder") and fig.axes[
        1
    ].get_title().startswith("VAE: VAE")
    assert len(fig.axes[0].collections) == len(np.unique(y[:200]))
    for ax in fig.axes[2:]:
        assert np.isfinite(np.asarray(ax.get_images()[0].get_array())).all()


def test_run_figures_picks_what_applies(vae: vaekit.Run, cvae: vaekit.Run, tmp_path: Path) -> None:
    figs = run_figures(vae)
    # No post-hoc sampler is fitted to this run: no samplers figure (tests/test_samplers.py).
    assert list(figs) == [
        n
        for n in FIGURES
        if n not in ("class_grid", "codes", "samplers", "ood_scores", *LAYER_FIGURES)
    ]
    assert all(isinstance(f, Figure) for f in figs.values())
    assert "class_grid" in run_figures(cvae, which=["class_grid", "samples"])
    with pytest.raises(ValueError, match="does not apply.*not a conditional model"):
        run_figures(vae, which=["class_grid"])
    with pytest.raises(ValueError, match="unknown figure"):
        run_figures(vae, which=["nope"])
    paths = save_figures({"samples": figs["samples"]}, tmp_path)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_is_one_record_of_the_catalogue(
    vae: vaekit.Run, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One record (name, caption, drawing, needs) is all a figure takes: whether it
    # applies, drawing it, the report's caption and `vaekit plot --help` come from it.
    spec = FigureSpec(
        "first_code",
        "The first test example's code.",
        lambda d: latent_scatter(d.codes[:1] if d.codes is not None else None),
        conditional=True,
        codes=True,
    )
    monkeypatch.setitem(FIGURES, spec.name, spec)
    assert applicable_figures(vae, vae.dataset())["first_code"] == "not a conditional model"
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "first_code (conditional model)" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setitem(FIGURES, spec.name, dataclasses.replace(spec, conditional=False))
    assert "first_code" in run_figures(vae)
    fig = run_figures(vae, which=["first_code"])["first_code"]
    assert len(fig.axes[0].collections[0].get_offsets()) == 1


def test_tabular_runs_get_no_image_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    x = np.clip(rng.normal(size=(300, 5)) * 0.1 + 0.3 * y[:, None] + 0.2, 0, 1).astype(np.float32)
    np.savez(tmp_path / "table.npz", x=x, y=y)
    run = _train(tmp_path / "run", f"data.name={tmp_path / 'table.npz'}", "train.epochs=1")
    reasons = applicable_figures(run, run.dataset())
    assert reasons["reconstructions"] == "the data are not images"
    assert reasons["latent_scatter"] is None and reasons["latent_histograms"] is None
    assert list(run_figures(run)) == ["training_curves", "latent_scatter", "latent_histograms"]
    with pytest.raises(ValueError, match="not images"):
        prior_samples(run)


def test_importing_plots_leaves_pyplot_alone() -> None:
    # Importing, drawing and saving never goes through pyplot (no backend switch, no
    # registry of open figures).
    code = (
        "import io, sys, numpy as np; import vaekit.plots as p; "
        "p.latent_scatter(np.zeros((3, 2))).savefig(io.BytesIO(), format='png'); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_plot_and_compare(
    vae: vaekit.Run, ae: vaekit.Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["plot", str(vae.dir), "--which", "samples", "manifold", "--out", str(tmp_path / "p")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["manifold.png", "samples.png"]
    assert main(["plot", str(vae.dir), "--which", "class_grid", "--out", str(tmp_path / "p")]) == 2
    assert "not a conditional model" in capsys.readouterr().err
    out = tmp_path / "cmp.png"
    assert main(["compare", str(ae.dir), str(vae.dir), "--out", str(out), "--n", "100"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_compare_curves_draws_minus_each_runs_own_bound() -> None:
    elbo = [{"epoch": e, "valid": {"loss": 9.0, "elbo": -100 - (e - 6) ** 2}} for e in range(1, 12)]
    iwae = [{"epoch": e, "valid": {"elbo": -95.0, "iwae": -90 - 1 / e}} for e in range(1, 5)]
    ae = [{"epoch": e, "valid": {"loss": 30.0 / e}} for e in range(1, 4)]
    from vaekit.registry import OBJECTIVES

    bound = {name: OBJECTIVES.get(name).abilities for name in ("elbo", "iwae", "ae")}
    fig = compare_curves(
        {"vae": (elbo, bound["elbo"]), "iwae": (iwae, bound["iwae"]), "ae": (ae, bound["ae"])}
    )
    ax = fig.axes[0]
    lines = ax.get_lines()  # a curve and its best-epoch marker per run
    assert list(lines[0].get_ydata()) == [100 + (e - 6) ** 2 for e in range(1, 12)]
    assert (lines[1].get_xdata()[0], lines[1].get_ydata()[0]) == (6, 100)
    assert lines[2].get_ydata()[-1] == pytest.approx(90.25)
    assert list(lines[4].get_ydata()) == [30.0, 15.0, 10.0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "vae (-ELBO): best 100.00 at epoch 6 of 11"
    assert labels[1].startswith("iwae (-IWAE bound): best 90.25 at epoch 4")
    assert ax.get_ylabel() == "-ELBO / -IWAE bound / loss on valid (nats)"
    with pytest.raises(ValueError, match="no test scores in its metrics.jsonl; it has valid"):
        compare_curves({"vae": (elbo, bound["elbo"])}, "test")


def test_compare_curves_defaults_to_a_split_every_run_has() -> None:
    # A run without a validation split (digits, the demo) scores test only: the default
    # split must be one that every run has, not valid.
    from vaekit.plots import curves_split
    from vaekit.registry import OBJECTIVES

    bound = OBJECTIVES.get("elbo").abilities
    both = [{"epoch": e, "valid": {"elbo": -9.0 - e}, "test": {"elbo": -10.0 - e}} for e in (1, 2)]
    test_only = [{"epoch": e, "test": {"elbo": -20.0 / e}} for e in (1, 2)]
    assert curves_split({"a": (both, bound)}) == "valid"
    runs = {"a": (both, bound), "b": (test_only, bound)}
    assert curves_split(runs) == "test"
    ax = compare_curves(runs).axes[0]
    assert list(ax.get_lines()[0].get_ydata()) == [11.0, 12.0] and "on test" in ax.get_ylabel()
    with pytest.raises(ValueError, match="b: test"):
        curves_split(
            {"a": ([{"epoch": 1, "valid": {"elbo": -1.0}}], bound), "b": (test_only, bound)}
        )


def test_cli_curves(
    vae: vaekit.Run,
    ae: vaekit.Run,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "c.png"
    assert main(["curves", str(vae.dir), str(ae.dir), "--split", "test", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    # As the README runs it: no --split, runs without a validation split (digits).
    monkeypatch.chdir(tmp_path)
    assert main(["curves", str(vae.dir), str(ae.dir)]) == 0
    printed = capsys.readouterr().out
    assert "drawing the test split" in printed and (tmp_path / "curves-test.png").is_file()
    assert main(["curves", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["curves", str(vae.dir), "--split", "valid", "--out", str(out)]) == 2
    assert "no valid scores" in capsys.readouterr().err
