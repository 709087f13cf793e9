"""Settings of the new parts: validation with clear messages, the shipped configs, conv nets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaekit.config import ConfigError, load_config
from vaekit.model import build_model
from vaekit.nn import ConvDecoderNet, ConvEncoderNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NEW_CONFIGS = sorted(
    p
    for p in CONFIGS.glob("*.yaml")
    if p.name.startswith(("bmnist_", "fashion_mnist_", "tabular_"))
)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.flow=plnar"], "did you mean 'planar'"),
        (["model.prior=vampp"], "did you mean 'vamp'"),
        (["model.likelihood=discretised-logistic"], "did you mean 'discretized-logistic'"),
        (["objective.name=iwea"], "did you mean 'iwae'"),
        (["model.posterior=implicitt", "objective.name=avb"], "did you mean 'implicit'"),
        (["model.posterior=implicit"], "use objective.name=avb"),
        (["model.posterior=implicit", "objective.name=iwae"], "no density"),
        (["model.posterior=point", "objective.name=iwae"], "objective.name=ae"),
        (["model.posterior=point", "objective.name=avb"], "objective.name=ae"),
        (
            ["model.posterior=implicit", "model.flow=iaf", "objective.name=avb"],
            "set model.posterior=gaussian",
        ),
        (["model.prior=vamp", "model.flow=planar"], "model.flow=none"),
        (["model.prior=vamp", "model.conditional=true"], "cannot be conditional"),
        # The IWAE bound has no separate KL term, so it has no options that weigh one.
        (["objective.name=iwae", "objective.beta=2"], "unknown setting 'objective.beta'"),
        (["objective.name=iwae", "objective.warmup_epochs=5"], "Options of the objective 'iwae'"),
        (
            ["objective.name=avb", "model.posterior=implicit", "objective.free_bits=0.5"],
            "unknown setting 'objective.free_bits'",
        ),
        (["model.likelihood=categorical", "model.likelihood.levels=1"], "at least 2"),
        (
            ["model.likelihood=student-t", "model.likelihood.df=-1"],
            "model.likelihood.df must be a positive number",
        ),
        (
            ["model.likelihood=student-t", "model.likelihood.df=lots"],
            "model.likelihood.df must be a positive number",
        ),
        (["model.flow=planar", "model.flow.length=0"], "model.flow.length must be a positive"),
        (["model.prior=mog", "model.prior.components=0"], "model.prior.components must be"),
        (
            ["model.likelihood=discretized-logistic", "model.likelihood.components=0"],
            "model.likelihood.components",
        ),
        (["objective.free_bits=-1"], "objective.free_bits must be >= 0"),
        (["objective.warmup_epochs=-2"], "objective.warmup_epochs must be >= 0"),
        (["objective.name=avb", "objective.discriminator=[0]"], "objective.discriminator[0]"),
        (["model.encoder.name=conv", "model.encoder.blocks=-1"], "model.encoder.blocks must be"),
        (["model.flow=planar", "model.flow.lenght=3"], "Did you mean 'length'"),
        (["objective.freebits=0.1"], "Did you mean 'free_bits'"),
        (["model.prior.components=5"], "Options of the prior 'normal': (none)"),
        (["model.flow.length=5"], "model.flow needs a name"),
        (["model.encoder.blocks=1"], "Options of the network 'mlp'"),
        (["model.prior=userparts_nowhere:Prior"], "put the folder that holds"),
        (["train.trackers=[tensorbord]"], "did you mean 'tensorboard'"),
        # 0.1's flat settings are converted, and still checked.
        (["model.flow=planar", "model.flow_length=0"], "model.flow.length must be a positive"),
        (["model.prior=mog", "model.prior_components=0"], "model.prior.components must be"),
    ],
)
def test_bad_settings_are_explained(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value), str(err.value)


def test_good_combinations_validate() -> None:
    for overrides in (
        ["model.flow=planar", "model.flow.length=10", "objective.name=iwae", "objective.samples=5"],
        [
            "model.flow=iaf",
            "model.prior=mog",
            "objective.free_bits=0.25",
            "objective.warmup_epochs=3",
        ],
        ["model.posterior=implicit", "objective.name=avb", "model.prior=mog"],
        ["model.prior=vamp", "model.prior.components=50", "objective.kl=mc"],
        ["model.likelihood=student-t", "model.likelihood.sigma=learned", "model.likelihood.df=4"],
        [
            "model.likelihood=discretized-logistic",
            "model.likelihood.components=10",
            "model.likelihood.levels=17",
        ],
        # kl=analytic is accepted wherever torch has the closed form; checked when built.
        ["objective.kl=analytic", "model.prior=mog"],
    ):
        load_config(None, overrides)


def test_legacy_flat_settings_move_to_their_parts() -> None:
    cfg = load_config(
        None,
        [
            "model.flow=iaf",
            "model.flow_length=3",
            "model.flow_hidden=16",
            "model.prior=mog",
            "model.prior_components=7",
            "model.likelihood=discretized-logistic",
            "model.likelihood_components=2",
            "model.levels=17",
            "model.sigma=learned",  # the likelihood has no sigma: 0.1 ignored it too
            "model.encoder.type=conv",
        ],
    )
    m = cfg.model
    assert (m.flow.name, m.flow.options.length, m.flow.options.hidden) == ("iaf", 3, 16)
    assert (m.prior.name, m.prior.options.components) == ("mog", 7)
    assert (m.likelihood.options.components, m.likelihood.options.levels) == (2, 17)
    assert m.encoder.name == "conv"


def test_kl_analytic_asks_torch_when_the_model_is_built() -> None:
    from vaekit.objectives import build_objective

    for overrides, ok in (
        (["objective.kl=analytic"], True),
        (["objective.kl=analytic", "model.prior=mog"], False),
        (["objective.kl=analytic", "model.flow=iaf"], False),
    ):
        cfg = load_config(None, overrides)
        model = build_model(cfg.model, (1, 8, 8))
        objective = build_objective(cfg.objective)
        if ok:
            objective.param_groups(model)
        else:
            with pytest.raises(ConfigError, match="objective.kl=auto"):
                objective.param_groups(model)


def test_there_is_a_config_for_every_row_of_the_table() -> None:
    names = {p.stem for p in NEW_CONFIGS}
    assert {
        "bmnist_vae",
        "bmnist_iwae_k5",
        "bmnist_iwae_k50",
        "bmnist_planar_k10",
        "bmnist_planar_k80",
        "bmnist_vamp",
        "bmnist_conv",
        "fashion_mnist_dlogistic",
    } <= names


@pytest.mark.parametrize("path", NEW_CONFIGS, ids=[p.stem for p in NEW_CONFIGS])
def test_shipped_configs_build_their_model(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.description
    shape = (13,) if cfg.data.name.endswith(".csv") else (1, 28, 28)
    model = build_model(cfg.model, shape)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        q = model.encode(x)
        z = q.rsample((2,))
        assert model.decode(z).batch_shape == (2, 2)
        assert torch.isfinite(model.prior.log_prob(z)).all()


SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 7, 7), (3, 5, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("blocks", [0, 1])
def test_conv_nets_fit_any_image_size(shape: tuple[int, int, int], blocks: int) -> None:
    torch.manual_seed(0)
    enc = ConvEncoderNet(shape, [8, 16], [32], 10, "elu", context=3, blocks=blocks)
    dec = ConvDecoderNet(4, shape, [16, 8], [32], 2, "elu", context=3, blocks=blocks)
    x, ctx = torch.randn(5, *shape), torch.eye(3)[[0, 1, 2, 0, 1]]
    assert enc(x, ctx).shape == (5, 10)
    out = dec(torch.randn(5, 4), ctx)
    assert out.shape == (5, 2 * shape[0] * shape[1] * shape[2])
    (enc(x, ctx).sum() + out.sum()).backward()
    assert all(p.grad is not None for p in [*enc.parameters(), *dec.parameters()])


def test_conv_encoder_rejects_images_too_small_for_its_stages() -> None:
    with pytest.raises(ValueError, match="use fewer model.encoder.channels"):
        ConvEncoderNet((1, 7, 7), [8, 16, 32], [], 4)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_conv_vae_reconstructs_images_of_its_shape(shape: tuple[int, int, int]) -> None:
    cfg = load_config(
        None,
        [
            "model.encoder.name=conv",
            "model.encoder.channels=[8, 16]",
            "model.latent_dim=4",
            "model.encoder.blocks=1",
        ],
    )
    model = build_model(cfg.model, shape)
    assert model.reconstruct(torch.rand(3, *shape)).shape == (3, *shape)
    assert model.sample(2).shape == (2, *shape)


def test_the_configs_ship_inside_the_package() -> None:
    # pyproject's package data must match files (it listed configs/*.yaml while they lay
    # outside src/vaekit, so a pip-installed vaekit had none); configs/ at the top of the
    # repository is a link to them, so the README's paths still work there.
    import tomllib

    root = Path(__file__).resolve().parents[1]
    package = root / "src" / "vaekit"
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pattern in data["package-data"]["vaekit"]:
        assert list(package.glob(pattern)), f"package data {pattern!r} matches no file"
    assert {p.name for p in (package / "configs").glob("*.yaml")} == {
        p.name for p in CONFIGS.glob("*.yaml")
    }
    assert CONFIGS.resolve() == (package / "configs").resolve()


def test_a_bundled_config_is_found_by_name_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.cli import main
    from vaekit.config import BUNDLED_CONFIGS, config_to_dict

    monkeypatch.chdir(tmp_path)  # no configs/ here
    want = config_to_dict(load_config(BUNDLED_CONFIGS / "003_vae.yaml"))
    for name in ("003_vae", "003_vae.yaml", "configs/003_vae.yaml"):  # the last: the README's
        assert config_to_dict(load_config(name)) == want, name
    with pytest.raises(ConfigError, match=r"Did you mean '003_vae'\?.*demo, .*tabular_student_t"):
        load_config("003_vea")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("elsewhere/003_vae.yaml")  # a path elsewhere is not a bundled name
    # A file in the working directory wins over the bundled config of the same name.
    (tmp_path / "demo").write_text("train: {epochs: 7}\n")
    assert load_config("demo").train.epochs == 7
    run = tmp_path / "run"
    args = ["train", "-c", "demo.yaml", "--out", str(run), "--epochs", "1"]
    assert main([*args, "--set", "data.limit=64"]) == 0
    assert (run / "model.safetensors").is_file()
