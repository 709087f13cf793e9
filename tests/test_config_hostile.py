"""Hostile configs: files and --set values that must give a ConfigError, never a traceback.

Property tests (hypothesis) throw random structures, values and bytes at the config
loader; table tests pin the message of each kind of mistake; CLI tests check that a
rejected config writes nothing at all and an accepted one writes only its run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaekit.cli import main
from vaekit.config import Config, ConfigError, config_from_dict, config_to_dict, load_config


def _dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every setting as a dotted key (sections of dataclass type are walked into; a part's
    keys are its name and the options of the part it defaults to)."""
    from vaekit.registry import REGISTRIES

    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = f.metadata.get("part")
        if kind is not None:
            keys.append(f"{prefix}{f.name}.name")
            if f.default_factory is not dataclasses.MISSING:
                options = REGISTRIES[kind].get(f.default_factory()).options
                keys += [f"{prefix}{f.name}.{o.name}" for o in dataclasses.fields(options)]
            continue
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or (
            [tp] if dataclasses.is_dataclass(tp) else []
        )
        if inner:
            keys += _dotted_keys(inner[0], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


KEYS = _dotted_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS})


def _accept_or_config_error(fn: Any, *args: Any) -> Config | None:
    """The property: a valid Config, or a ConfigError with a short, non-empty message."""
    try:
        cfg = fn(*args)
    except ConfigError as e:
        msg = str(e)
        assert msg and len(msg) < 2000 and "Traceback" not in msg
        return None
    assert isinstance(cfg, Config)
    cfg.validate()
    # An accepted config survives the trip through config.json.
    assert config_to_dict(
        config_from_dict(json.loads(json.dumps(config_to_dict(cfg))))
    ) == config_to_dict(cfg)
    return cfg


# -- strategies ----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["", "nan", "inf", "-1", "0", "1e400", "learned", "cuda:x", "mlp", "adam", "9" * 5000]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
key_names = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=10))


@st.composite
def config_data(draw: st.DrawFn) -> Any:
    """A default config with some settings replaced by hostile values, or any structure at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(values)
    data = config_to_dict(Config())
    for _ in range(draw(st.integers(1, 4))):
        key = draw(key_names).split(".")
        node = data
        for part in key[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[key[-1]] = draw(values)
    return data


def _write(data: Any, fmt: str, path: Path) -> Path | None:
    try:
        if fmt == "yaml":
            text = yaml.safe_dump(data)
        elif fmt == "json":
            text = json.dumps(data)  # NaN and Infinity as JavaScript literals, as json reads them
        else:
            import tomllib  # noqa: F401  (TOML is read by tomllib; written by hand here)

            if not isinstance(data, dict):
                return None
            text = "".join(
                f"{k} = {json.dumps(v)}\n" for k, v in data.items() if not isinstance(v, dict)
            )
            text += "".join(
                f"[{k}]\n" + "".join(f"{kk} = {json.dumps(vv)}\n" for kk, vv in v.items())
                for k, v in data.items()
                if isinstance(v, dict)
            )
    except (yaml.YAMLError, TypeError, ValueError):
        return None
    path = path.with_suffix("." + fmt)
    path.write_text(text)
    return path


HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- properties ----------------------------------------------------------------------------


@HYPO
@given(data=config_data(), fmt=st.sampled_from(["yaml", "json", "toml"]))
def test_any_config_file_is_accepted_or_rejected_cleanly(data: Any, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = _write(data, fmt, Path(d) / "cfg")
        if path is not None:
            _accept_or_config_error(load_config, path)


@HYPO
@given(raw=st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".json", ".toml", ".txt"]))
def test_any_bytes_as_a_config_file_are_accepted_or_rejected_cleanly(
    raw: bytes, suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cfg{suffix}"
        path.write_bytes(raw)
        _accept_or_config_error(load_config, path)


@HYPO
@given(
    key=key_names,
    text=st.one_of(
        st.text(max_size=20),
        st.sampled_from(
            [
                "[1, -2]",
                "{a: 1}",
                "!!binary aGk=",
                "2020-01-01",
                ".nan",
                "-.inf",
                "&a 1",
                "*a",
                "[[1]]",
                "1e999",
                "9" * 5000,
            ]
        ),
        st.integers().map(str),
        st.floats().map(repr),
    ),
)
def test_any_set_override_is_accepted_or_rejected_cleanly(key: str, text: str) -> None:
    _accept_or_config_error(load_config, None, [f"{key}={text}"])


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(KEYS), data=st.data())
def test_typo_in_a_key_is_unknown_with_a_suggestion(key: str, data: st.DataObject) -> None:
    *section, name = key.split(".")
    if len(name) < 5:
        return
    i = data.draw(st.integers(0, len(name) - 1))
    typo = name[:i] + name[i + 1 :]  # one letter dropped
    with pytest.raises(ConfigError) as info:
        load_config(None, [".".join([*section, typo]) + "=1"])
    msg = str(info.value)
    assert "unknown setting" in msg
    # difflib's suggestion is the setting itself, unless a sibling is a closer match.
    assert "Did you mean" in msg


def _part_choices() -> dict[str, list[str]]:
    from vaekit.registry import LIKELIHOODS, OBJECTIVES, POSTERIORS, PRIORS

    return {
        "model.posterior": POSTERIORS.names(),
        "model.prior": PRIORS.names(),
        "model.likelihood": LIKELIHOODS.names(),
        "objective.name": OBJECTIVES.names(),
        "model.encoder.name": ["mlp", "conv"],
        "model.encoder.channels": ["[4]", "[4, 4, 4, 4, 4]"],
        "model.encoder.hidden": ["[]", "[8]"],
        "data.binarize": ["none", "static", "dynamic", "threshold"],
        "model.conditional": ["true", "false"],
        "model.num_classes": ["0", "3", "12"],
        "objective.samples": ["1", "3"],
        "objective.kl": ["auto", "analytic", "mc"],
        "train.optimizer": ["adam", "sgd", "rmsprop", "adagrad", "adamw"],
        "model.latent_dim": ["1", "3"],
        "data.valid_fraction": ["0", "0.3"],
    }


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_accepted_combination_trains_or_fails_cleanly(data: st.DataObject) -> None:
    """Configs that pass validation but do not fit the data must fail before writing anything."""
    from vaekit.data import DataError
    from vaekit.rundir import RunError
    from vaekit.train import TrainingError, fit

    choices = _part_choices()
    keys = data.draw(
        st.lists(st.sampled_from(sorted(choices)), min_size=1, max_size=6, unique=True)
    )
    overrides = [f"{k}={data.draw(st.sampled_from(choices[k]))}" for k in keys]
    base = ["data.limit=64", "train.epochs=1", "train.batch_size=32", "model.encoder.hidden=[8]"]
    try:
        cfg = load_config(None, base + overrides)
    except ConfigError:
        return
    with tempfile.TemporaryDirectory() as d, open(os.devnull, "w") as devnull:
        run = Path(d) / "run"
        try:
            fit(cfg, run, progress=False, log=devnull)
        except (ConfigError, DataError) as e:
            assert str(e) and not run.exists(), f"{overrides}: rejected after writing {run}"
        except (RunError, TrainingError) as e:
            assert str(e)


# -- each kind of mistake, with its message ------------------------------------------------

SET_CASES = {
    "train.epochs=-3": "train.epochs must be a positive number, got -3",
    "train.batch_size=0": "train.batch_size must be a positive number",
    "model.latent_dim=-1": "model.latent_dim must be a positive number",
    "model.encoder.hidden=[64, -8]": r"model.encoder.hidden\[1\] must be a positive number",
    "data.limit=-5": "data.limit must be >= 0",
    "train.lr=.nan": "train.lr must be a finite number, got nan",
    "train.lr=.inf": "train.lr must be a finite number, got inf",
    "train.lr=1e999": "train.lr must be a finite number",
    "objective.beta=-.inf": "objective.beta must be a finite number",
    "train.lr=" + "1" * 400: "train.lr must be a finite number",
    "train.epochs=" + "9" * 5000: "train.epochs must be an integer, got '9999",
    "model.latent_dim=1e20": "model.latent_dim is too large",
    "train.epochs=2.5": "train.epochs must be an integer, got 2.5",
    "train.epochs=ten": "train.epochs must be an integer, got 'ten'",
    "train.lr=fast": "train.lr must be a number",
    "train.lr=2020-01-01": "train.lr must be a number, got datetime.date",
    "model.conditional=maybe": "model.conditional must be true or false",
    "train.optimizer=adma": "did you mean 'adam'",
    "train.optimizer=7": "train.optimizer must be a string, got the number 7",
    "model.encoder.activation=rleu": "did you mean 'relu'",
    "train.nan_policy=ignore": "train.nan_policy must be one of skip, rollback, stop",
    "train.seed=-1": r"train.seed must be an integer in \[0, 2\*\*32\)",
    "train.threads=100000": "train.threads must be at most 4096",
    "train.device=cuda:x": "train.device must be auto, cpu, cuda, cuda:N or mps",
    "data.name=": "data.name is empty",
    "data.binarize=dynamc": "did you mean 'dynamic'",
    "data.valid_fraction=1.5": r"data.valid_fraction must be in \[0, 1\)",
    "model.likelihood.sigma=-1": "Options of the likelihood 'bernoulli': \\(none\\)",
    "model.prior=vampp": "did you mean 'vamp'",
    "model.prior=": "model.prior.name must be a prior name",
    "model.prior=[1]": "model.prior must be a prior name or a mapping",
    # An import path with a half missing or misspelt says so (issue 25, item 8).
    "model.flow=pkg:": "model.flow: 'pkg:' names nothing after the colon: write pkg:Class",
    "model.prior=mod:": "model.prior: 'mod:' names nothing after the colon: write mod:Class",
    "model.prior=:MyPrior": "model.prior: ':MyPrior' names no module before the colon",
    "model.prior=my-parts:MyPrior": "'my-parts' is not a Python module name",
    "model.prior=myparts:My:Prior": "'My:Prior' is not a Python name",
    "objective=mod: Class": "objective: 'mod: Class' has a space in it",
    "trian.lr=0.1": "unknown setting 'trian'. Did you mean 'train'",
    "train.learning_rate=0.1": "unknown setting 'train.learning_rate'",
    "train.ephocs=3": "Did you mean 'epochs'",
    "train=5": "train must be a mapping of settings",
    "train.lr.x=1": r"train.lr must be a number, got \{'x': 1\}",
    "=3": "--set expects key=value",
    "train.lr": "--set expects key=value",
    "model.encoder.hidden=[[1]]": r"model.encoder.hidden\[0\] must be an integer",
    "description=[1]": "description must be a string",
}


@pytest.mark.parametrize("override", list(SET_CASES), ids=lambda s: s[:40])
def test_bad_set_value_message(override: str) -> None:
    with pytest.raises(ConfigError, match=SET_CASES[override]):
        load_config(None, [override])


FILE_CASES: dict[str, tuple[str | bytes, str]] = {
    "empty.yaml": ("", "is empty"),
    "comments.yaml": ("# nothing here\n", "is empty"),
    "empty.json": ("", "could not parse config file"),
    "list.yaml": ("- 1\n- 2\n", "must hold a mapping of sections"),
    "scalar.yaml": ("42\n", "must hold a mapping of sections"),
    "list.json": ("[1, 2]", "must hold a mapping of sections"),
    "tabs.yaml": ("train:\n\tlr: 1\n", "could not parse config file"),
    "two-docs.yaml": ("train: {lr: 1}\n---\ntrain: {lr: 2}\n", "expected a single document"),
    "python-tag.yaml": (
        "train: !!python/object/apply:os.system ['true']\n",
        "could not parse config file",
    ),
    "bad.toml": ("[train\nlr = 1\n", "could not parse config file"),
    "inf.toml": ("[train]\nlr = inf\n", "train.lr must be a finite number, got inf"),
    "nan.json": ('{"train": {"lr": NaN}}', "train.lr must be a finite number, got nan"),
    "trailing-comma.json": ('{"train": {"lr": 1,}}', "could not parse config file"),
    "huge-int.json": ('{"train": {"epochs": ' + "9" * 5000 + "}}", "could not parse config file"),
    "huge-int.yaml": ("train: {epochs: " + "9" * 5000 + "}\n", "could not parse config file"),
    "date.yaml": ("train: {lr: 2020-01-01}\n", "train.lr must be a number, got datetime.date"),
    "set.yaml": (
        "model: {encoder: {hidden: !!set {a, b}}}\n",
        "model.encoder.hidden must be a list",
    ),
    "alias-loop.yaml": (
        "model: {encoder: {hidden: &x [*x]}}\n",
        r"model.encoder.hidden\[0\] must be an integer",
    ),
    "not-utf8.yaml": (b"train: {lr: \xff\xfe}\n", "is not UTF-8 text"),
    "section-list.yaml": ("train: [1, 2]\n", "train must be a mapping of settings"),
    "negative.yaml": ("model: {latent_dim: -2}\n", "model.latent_dim must be a positive number"),
    "typo.yaml": ("modle: {latent_dim: 2}\n", "Did you mean 'model'"),
    "wrong-type.json": (
        '{"train": {"epochs": "many"}}',
        "train.epochs must be an integer, got 'many'",
    ),
}


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_bad_config_file_message(tmp_path: Path, name: str) -> None:
    content, expected = FILE_CASES[name]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert len(str(info.value)) < 1000


def test_set_into_a_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--set train.lr.x: 'lr' is a value, not a section"):
        load_config(None, ["train.lr=0.1", "train.lr.x=1"])


def test_missing_and_directory_config_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


# -- the CLI: a rejected config writes nothing; an accepted one only its run directory -----


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd, HOME, caches and the temp dir all inside tmp_path/sandbox, to see every write."""
    box = tmp_path / "sandbox"
    for sub in ("cwd", "home", "cache", "tmp"):
        (box / sub).mkdir(parents=True)
    monkeypatch.chdir(box / "cwd")
    monkeypatch.setenv("HOME", str(box / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(box / "cache"))
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(box / "cache" / "vaekit"))
    monkeypatch.setattr(tempfile, "tempdir", str(box / "tmp"))
    return box


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


CLI_REJECTS: dict[str, tuple[str, list[str]]] = {
    "unknown key": ("train: {epochz: 2}\n", []),
    "negative size": ("model: {latent_dim: -2}\n", []),
    "nan": ('{"train": {"lr": NaN}}', []),
    "bad --set": ("train: {epochs: 1}\n", ["--set", "train.batch_size=-1"]),
    "unknown dataset": ("data: {name: no-such-data}\n", []),
    "conv on tabular data": ("model: {encoder: {type: conv}}\n", []),
    "too few classes": ("model: {conditional: true, num_classes: 3}\n", []),
    "empty file": ("", []),
}


@pytest.mark.parametrize("case", list(CLI_REJECTS))
def test_rejected_config_writes_nothing(
    sandbox: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, extra = CLI_REJECTS[case]
    cwd = sandbox / "cwd"
    if case == "conv on tabular data":
        np.savez(cwd / "table.npz", x=np.random.default_rng(0).random((50, 6)).astype(np.float32))
        text = "data: {name: table.npz}\n" + text
    cfg = cwd / ("cfg.json" if text.startswith("{") else "cfg.yaml")
    cfg.write_text(text)
    before = _all_files(sandbox)
    assert main(["train", "--config", str(cfg), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert _all_files(sandbox) == before, (
        f"files written for a rejected config: {_all_files(sandbox) - before}"
    )


def test_corrupt_run_config_on_resume_is_a_clear_error(
    sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = sandbox / "cwd" / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {"epochs": -1}}')
    assert main(["train", "--resume", str(run)]) == 2
    assert "config.json: train.epochs must be a positive number" in capsys.readouterr().err
    (run / "config.json").write_text('{"train": ')
    assert main(["train", "--resume", str(run)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_accepted_config_writes_only_its_run_directory(sandbox: Path) -> None:
    cwd = sandbox / "cwd"
    cfg = cwd / "tiny.yaml"
    cfg.write_text(
        "data: {name: digits, limit: 128}\nmodel: {encoder: {hidden: [8]}}\ntrain: {epochs: 1, batch_size: 64}\n"
    )
    before = _all_files(sandbox)
    assert main(["train", "--config", str(cfg), "--progress"]) == 0
    new = _all_files(sandbox) - before
    # torch.optim imports torch._dynamo, which creates its (empty) cache folder in the temp dir.
    torch_cache = {p for p in new if p.startswith("tmp/torchinductor_")}
    assert not [p for p in torch_cache if (sandbox / p).is_file()]
    stray = {p for p in new - torch_cache if p != "cwd/runs" and not p.startswith("cwd/runs/tiny")}
    assert new and not stray, stray
    # No stray temporary files inside the run either.
    assert not [p for p in new if Path(p).name.startswith(".")]
    metrics = [
        json.loads(line)
        for line in (cwd / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    ]
    assert math.isfinite(metrics[-1]["test"]["loss"])
    assert os.listdir(sandbox / "home") == [] and os.listdir(sandbox / "cache") == []
