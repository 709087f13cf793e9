"""Settings of the new parts: validation with clear messages, the shipped configs, conv nets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from vaekit.cli import main
from vaekit.config import ConfigError, config_to_dict, load_config
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


# -- one grammar for every part: the choice first, then its options, whatever the order ----

# For each kind of part (and the objective's own divergence): a part other than the
# default, one of its options and a value.
ONE_PER_KIND = {
    "network": ("model.encoder", "conv", "channels", [8]),
    "decoder": ("model.decoder", "mlp", "hidden", [8]),
    "posterior": ("model.posterior", "hierarchical", "layers", 3),
    "flow": ("model.flow", "iaf", "hidden", 16),
    "prior": ("model.prior", "mog", "components", 5),
    "likelihood": ("model.likelihood", "student-t", "df", 4.0),
    "objective": ("objective", "iwae", "samples", 5),
    "divergence": ("objective.divergence", "mmd", "kernel", "imq"),
}


def _option(cfg: Any, slot: str) -> Any:
    node = cfg
    for key in slot.split("."):
        node = getattr(node.options if hasattr(node, "options") else node, key)
    return node


def test_the_table_covers_every_kind_of_part() -> None:
    from vaekit.registry import REGISTRIES

    assert {kind for kind in ONE_PER_KIND if kind != "decoder"} == set(REGISTRIES)


@pytest.mark.parametrize("kind", list(ONE_PER_KIND))
@pytest.mark.parametrize("spelling", ["{slot}={name}", "{slot}.name={name}"])
def test_an_option_lands_on_its_part_in_either_order(kind: str, spelling: str) -> None:
    slot, name, option, value = ONE_PER_KIND[kind]
    choose = spelling.format(slot=slot, name=name)
    setting = f"{slot}.{option}={json.dumps(value)}"
    base = ["model.latent_dim=4"]
    results = []
    for overrides in ([choose, setting], [setting, choose]):
        pc = _option(load_config(None, [*base, *overrides]), slot)
        assert (pc.name, getattr(pc.options, option)) == (name, value), overrides
        results.append(config_to_dict(load_config(None, [*base, *overrides])))
    assert results[0] == results[1]
    # A misspelt option is refused in either position, with a did-you-mean.
    typo = f"{slot}.{option}{option[-1]}={json.dumps(value)}"
    for overrides in ([choose, typo], [typo, choose]):
        with pytest.raises(ConfigError, match=f"Did you mean '{option}'"):
            load_config(None, [*base, *overrides])


def test_the_objective_is_switched_as_every_part_is(capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 25, item 10: the demo's objective is {name: elbo, beta: 1.0, samples: 1}.
    cfg = load_config("demo", ["objective.samples=5", "objective=iwae"])
    assert (cfg.objective.name, cfg.objective.options.samples) == ("iwae", 5)
    assert "dropped beta=1.0, which iwae does not take" in capsys.readouterr().err
    # bmnist_hvae warms up over 100 epochs, which the IWAE bound has no option for.
    cfg = load_config("bmnist_hvae", ["objective.name=iwae"])
    assert (cfg.objective.name, cfg.objective.options.samples) == ("iwae", 1)
    err = capsys.readouterr().err
    assert "objective=iwae replaces elbo: kept samples=1" in err
    assert "dropped warmup_epochs=100" in err
    # The note leaves out what --set gives anyway.
    cfg = load_config("bmnist_hvae", ["objective.name=iwae", "objective.samples=2"])
    assert cfg.objective.options.samples == 2
    err = capsys.readouterr().err
    assert "kept" not in err and "dropped warmup_epochs=100" in err
    # An option typed for the part replaced is the user's mistake, not a note.
    with pytest.raises(ConfigError, match="unknown setting 'objective.warmup_epochs'"):
        load_config("bmnist_hvae", ["objective.warmup_epochs=5", "objective=iwae"])


# A config file's part with its options, the part that replaces it, and what the file's
# options become: kept where the new part takes them, dropped (with a note) where not.
SWITCHES = [
    ("model.prior", {"name": "vamp", "components": 50}, "mog", {"components": 50}, ""),
    ("model.prior", {"name": "vamp", "components": 50}, "normal", {}, "components=50"),
    (
        "model.encoder",
        {"name": "conv", "channels": [8], "blocks": 1},
        "mlp",
        {},
        "blocks=1, channels=[8]",
    ),
    ("model.decoder", {"name": "conv", "channels": [8]}, "mlp", {}, "channels=[8]"),
    ("model.posterior", {"name": "hierarchical", "layers": 3}, "gaussian", {}, "layers=3"),
    (
        "model.flow",
        {"name": "iaf", "length": 2, "hidden": 16},
        "planar",
        {"length": 2},
        "hidden=16",
    ),
    ("model.likelihood", {"name": "student-t", "df": 4}, "gaussian", {}, "df=4"),
    (
        "objective",
        {"name": "elbo", "samples": 2, "warmup_epochs": 3},
        "iwae",
        {"samples": 2},
        "warmup_epochs=3",
    ),
    ("objective.divergence", {"name": "mmd", "kernel": "imq"}, "kl", {}, "kernel=imq"),
]


@pytest.mark.parametrize(
    ("slot", "given", "name", "kept", "dropped"), SWITCHES, ids=lambda v: str(v)[:24]
)
def test_a_part_switched_from_the_file_keeps_the_options_it_takes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    slot: str,
    given: dict[str, Any],
    name: str,
    kept: dict[str, Any],
    dropped: str,
) -> None:
    data: dict[str, Any] = {"model": {"latent_dim": 4}}
    *section, last = slot.split(".")
    node = data
    for key in section:
        node = node.setdefault(key, {})
    node[last] = given
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    pc = _option(load_config(path, [f"{slot}={name}"]), slot)
    assert pc.name == name
    for option, value in kept.items():
        assert getattr(pc.options, option) == value
    err = capsys.readouterr().err
    if dropped:
        assert f"dropped {dropped}, which {name} does not take" in err, err
    assert ("replaces" in err) == bool(kept or dropped)
    # Choosing the file's own part again changes nothing.
    same = _option(load_config(path, [f"{slot}={given['name']}"]), slot)
    assert same == _option(load_config(path), slot)
    # A mapping replaces the part whole: its defaults, nothing carried over.
    fresh = _option(load_config(path, [f"{slot}={{name: {name}}}"]), slot)
    assert fresh == _option(load_config(None, ["model.latent_dim=4", f"{slot}={name}"]), slot)


def test_the_order_of_set_does_not_change_a_training_run(tmp_path: Path) -> None:
    # Issue 25, item 1, as the user met it.
    run = tmp_path / "run"
    args = ["train", "-c", "demo", "--out", str(run), "--epochs", "1", "--set", "data.limit=64"]
    assert main([*args, "--set", "model.prior.components=5", "--set", "model.prior=mog"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["prior"] == {"name": "mog", "components": 5}


# -- settings that change nothing with the parts chosen --------------------------------------

GUMBEL = ["model.posterior=gumbel", "model.prior=categorical", "model.latent_dim=20"]
IGNORED = [
    (
        ["model.posterior=hierarchical-conv", "model.encoder.hidden=[64]"],
        "model.encoder",
        "brings its own encoder and decoder networks",
    ),
    (["objective.kl_balance=true"], "objective.kl_balance", "model.posterior=gaussian has one"),
    (
        ["model.posterior=hierarchical", "objective.kl_balance=true"],
        "objective.kl_balance",
        "during the KL warm-up only",
    ),
    (["model.num_classes=10"], "model.num_classes", "only a conditional model reads labels"),
    (
        ["model.encoder=conv", "model.encoder.grid=true", "model.encoder.hidden=[64]"],
        "model.encoder.hidden",
        "no dense layers for hidden to size",
    ),
    (
        [*GUMBEL, "model.posterior.temperature=0.3"],
        "model.posterior.temperature",
        "never goes below min_temperature=0.5",
    ),
    (
        [*GUMBEL, "model.posterior.min_temperature=0.1"],
        "model.posterior.min_temperature",
        "model.posterior.anneal=0 keeps it constant",
    ),
    (["train.workers=2"], "train.workers", "is read into memory"),
    (
        ["model.posterior=vq", "model.prior=categorical", "objective.samples=4"],
        "objective.samples",
        "would all be the same code",
    ),
    (
        [
            "model.posterior=vq",
            "model.prior=categorical",
            "objective=prior-fit",
            "objective.samples=4",
        ],
        "objective.samples",
        "would all be the same code",
    ),
]


@pytest.mark.parametrize(("overrides", "key", "message"), IGNORED, ids=lambda v: str(v)[:40])
def test_a_setting_that_changes_nothing_is_refused_or_noted(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    key: str,
    message: str,
) -> None:
    from vaekit.config import apply_overrides

    # Typed on the command line: refused, with what to do.
    with pytest.raises(ConfigError, match=f"{key}=.* changes nothing: .*{message}"):
        load_config(None, overrides)
    # Held by a config file (a bundled one, say, with another part chosen): a note.
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(apply_overrides({}, overrides)))
    load_config(path)
    err = capsys.readouterr().err
    assert f"note: {key}=" in err and message in err, err
    # Without the setting that does nothing, no word.
    loose = [o for o in overrides if not o.startswith(key)]
    load_config(None, loose)
    assert "changes nothing" not in capsys.readouterr().err


def test_settings_that_take_effect_are_not_noted(capsys: pytest.CaptureFixture[str]) -> None:
    load_config(
        None,
        ["model.posterior=hierarchical", "objective.kl_balance=true", "objective.warmup_epochs=2"],
    )
    load_config(None, ["model.conditional=true", "model.num_classes=10"])
    # hierarchical-conv without an encoder, KL balancing with a warm-up:
    load_config("bmnist_topdown")
    load_config("bmnist_vqvae")  # a grid encoder without dense widths
    load_config(
        None, [*GUMBEL, "model.posterior.min_temperature=0.1", "model.posterior.anneal=0.1"]
    )
    assert capsys.readouterr().err == ""


def test_a_python_config_s_settings_that_change_nothing_are_noted_once_as_a_run_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only load_config looked: vaekit.fit(Config(...)) built in Python had no word.
    import dataclasses
    import io

    from conftest import tiny_config

    import vaekit

    cfg = tiny_config("train.epochs=1")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=10))
    capsys.readouterr()
    vaekit.fit(cfg, tmp_path / "py", progress=False, log=io.StringIO())
    assert capsys.readouterr().err.count("note: model.num_classes=10 changes nothing") == 1
    # A file's setting: load_config says it, and the trainer does not say it again.
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["train", "-c", str(path), "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().err.count("note: model.num_classes=10 changes nothing") == 1
    # Resuming says nothing more.
    vaekit.fit(None, tmp_path / "py", resume=True, epochs=2, progress=False, log=io.StringIO())
    assert "changes nothing" not in capsys.readouterr().err


@pytest.mark.parametrize("kind", list(ONE_PER_KIND))
def test_an_option_of_a_part_the_file_names_alone(tmp_path: Path, kind: str) -> None:
    # `objective: iwae` in a file, then --set objective.samples=5: the option goes beside
    # the name, at the top level as in the model section.
    slot, name, option, value = ONE_PER_KIND[kind]
    data: dict[str, Any] = {"model": {"latent_dim": 4}}
    *section, last = slot.split(".")
    node = data
    for key in section:
        node = node.setdefault(key, {})
    node[last] = name
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    pc = _option(load_config(path, [f"{slot}.{option}={json.dumps(value)}"]), slot)
    assert (pc.name, getattr(pc.options, option)) == (name, value)
