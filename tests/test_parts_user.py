"""A prior of the user's, written outside the package, trained, evaluated, plotted and
reported from the command line (issue 14's demonstration of user parts)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vaekit.cli import main
from vaekit.config import ConfigError, config_from_dict, load_config
from vaekit.data import load_dataset
from vaekit.testing import check_part

# The whole part, as a user writes it: a class, its options as keyword arguments.
USER_PRIOR = '''
"""A heavy-tailed prior with a learned location and scale per latent dimension."""

import torch
from torch import nn
from torch.distributions import Independent, StudentT


class MyPrior(nn.Module):
    """p(z) = prod_d StudentT(df; mu_d, sigma_d), mu and sigma learned."""

    def __init__(self, latent_dim: int, df: float = 5.0) -> None:
        super().__init__()
        self.df = df
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, encoder=None):
        scale = self.log_scale.exp()
        return Independent(StudentT(self.df, self.loc, scale), 1)
'''

TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "2",
    "--set",
    "data.limit=256",
    "--set",
    "model.encoder.hidden=[16]",
    "--set",
    "train.batch_size=64",
]


def test_a_prior_of_yours_trains_evaluates_plots_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = tmp_path / "mine"
    parts.mkdir()
    (parts / "userparts.py").write_text(USER_PRIOR)
    assert len(USER_PRIOR.strip().splitlines()) < 40
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(parts), *sys.path])}
    train = [sys.executable, "-m", "vaekit", "train", *TINY, "--out", str(run)]
    prior = ["--set", "model.prior=userparts:MyPrior", "--set", "model.prior.df=3"]
    subprocess.run([*train, *prior], env=env, check=True, capture_output=True, timeout=300)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["prior"] == {"name": "userparts:MyPrior", "df": 3.0}
    # evaluate, plot and report in one interpreter (torch loads once; each command rebuilds
    # the prior from config.json). The report draws every figure that applies.
    commands = [
        ["evaluate", str(run), "--k", "20"],
        ["plot", str(run), "--which", "samples", "latent_scatter"],
        ["report", str(run)],
    ]
    code = f"import sys; from vaekit.cli import main; sys.exit(max(main(a) for a in {commands}))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    evaluation = json.loads((run / "eval-k20.json").read_text())
    assert evaluation["nll"] > 0 and evaluation["kl_per_dim_method"] == "monte carlo"
    assert (run / "plots" / "samples.png").is_file() and (run / "report.html").is_file()
    assert "userparts:MyPrior" in (run / "report.html").read_text()

    # Without the module on the path: a message that says what to do, no traceback.
    assert main(["evaluate", str(run), "--k", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot import module 'userparts' for the prior 'userparts:MyPrior'" in err
    assert "holds userparts.py on PYTHONPATH" in err and "Traceback" not in err

    # vaekit.testing checks the part the way the project's own parts are checked.
    monkeypatch.syspath_prepend(str(parts))
    try:
        report = check_part("prior", "userparts:MyPrior", {"df": 3.0})
    finally:
        sys.modules.pop("userparts", None)
    assert report["shapes"] == "ok" and "->" in report["training"]


DOCS = Path(__file__).resolve().parents[1] / "docs" / "guides"


def _guide_parts() -> str:
    """The Python blocks of the guide "Parts and data of your own", as one module."""
    text = (DOCS / "parts-of-your-own.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    # The last block uses the module (check_part); the others are its parts.
    return "\n\n".join(b for b in blocks if "check_part(" not in b)


def test_the_guides_config_of_parts_is_valid() -> None:
    section = (DOCS / "composing.md").read_text()
    layout = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S)[1])
    cfg = config_from_dict(layout)
    assert cfg.model.flow is not None and cfg.objective.options.samples == 5


def test_the_guides_parts_meet_their_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every minimal contract the guide shows, as a user would copy it into myparts.py,
    # passes vaekit.testing's checks; the dataset loads.
    (tmp_path / "myparts.py").write_text(_guide_parts())
    monkeypatch.syspath_prepend(str(tmp_path))
    decoder = {"model.decoder": "myparts:MyDecoder"}
    try:
        for kind, name, options, others in [
            ("prior", "MyPrior", {"scale": 2.0}, None),
            ("network", "MyEncoder", {"width": 16}, decoder),
            ("posterior", "MyPosterior", {}, None),
            ("likelihood", "MyLikelihood", {}, None),
            ("flow", "MyFlow", {}, None),
            ("objective", "MyObjective", {"beta": 0.5}, None),
        ]:
            report = check_part(kind, f"myparts:{name}", options, others=others, training=False)
            assert report["bounds"] == "ok", (kind, report)
        ds = load_dataset("myparts:my_data", options={"n": 100})
        assert (len(ds.train), len(ds.test), ds.shape, ds.num_classes) == (80, 20, (8,), 3)
        # A network class of the user's names its decoder: it cannot mirror itself.
        with pytest.raises(ConfigError, match="cannot mirror itself as the decoder"):
            load_config(None, ["model.encoder=myparts:MyEncoder"])
    finally:
        sys.modules.pop("myparts", None)


def test_a_second_stage_objective_is_checked_as_a_second_stage_starts() -> None:
    # check_part picks a prior with something to learn, and check_training spreads the
    # frozen encoder's codes and moves the fitted prior away from them (start_second_stage).
    done = check_part("objective", "prior-fit")
    before, after = (float(v) for v in done["training"].split(" -> "))
    assert after < before - 0.05, done


# -- an import path that names no part class ---------------------------------------------------

NOT_PARTS = """
from torch import nn


class NotAModule:
    def __init__(self, latent_dim):
        self.latent_dim = latent_dim


class AModule(nn.Module):
    def __init__(self, latent_dim=2):
        super().__init__()


instance = NotAModule(2)


def a_function(latent_dim):
    return nn.Identity()
"""


@pytest.mark.parametrize(
    ("key", "name", "message"),
    [
        (
            "model.prior",
            "NotAModule",
            "the class NotAModule, which does not subclass torch.nn.Module",
        ),
        ("model.prior", "instance", "an object of type NotAModule, not a class"),
        ("model.prior", "a_function", "the function a_function, not a class"),
        ("model.posterior", "instance", "a posterior of yours is a class"),
        ("model.likelihood", "NotAModule", "built as Class(data_shape, **options)"),
        ("model.encoder", "NotAModule", "or a class with the staticmethods encoder"),
        ("model.flow", "AModule", "does not subclass vaekit.distributions.flows.Flow"),
        ("objective", "AModule", "does not subclass vaekit.objectives.Objective"),
        ("objective.divergence", "a_function", "a divergence of yours is a class"),
    ],
)
def test_an_import_path_must_name_a_class_of_the_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, name: str, message: str
) -> None:
    (tmp_path / "notparts25.py").write_text(NOT_PARTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "notparts25", raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=notparts25:{name}"])
    assert message in str(info.value)
    assert str(info.value).startswith(f"{key}: 'notparts25:{name}' names ")


def test_a_prior_that_is_no_module_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 25, item 6: this ended in a TypeError traceback once training began.
    (tmp_path / "notparts25.py").write_text(NOT_PARTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "notparts25", raising=False)
    run = tmp_path / "run"
    args = ["train", *TINY, "--out", str(run), "--set", "model.prior=notparts25:NotAModule"]
    assert main(args) == 2
    assert "does not subclass torch.nn.Module" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("myparts:", "'myparts:' names nothing after the colon: write myparts:function"),
        (":my_data", "names no module before the colon"),
        ("my-parts:my_data", "'my-parts' is not a Python module name"),
    ],
)
def test_a_malformed_dataset_import_path_says_what_is_wrong(name: str, message: str) -> None:
    from vaekit.data import DataError

    with pytest.raises(DataError, match=f"unknown dataset .*no such file or folder.*{message}"):
        load_dataset(name)


WRONG_PRIORS = """
import torch
from torch import nn
from torch.distributions import Independent, Normal


class OneTooMany(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(latent_dim + 1))

    def forward(self, encoder=None):
        return Independent(Normal(self.loc, 1.0), 1)


class Scalar(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, encoder=None):
        return Normal(self.loc, 1.0)  # event shape (), not (latent_dim,)
"""


@pytest.mark.parametrize(("name", "shape"), [("OneTooMany", r"\(3,\)"), ("Scalar", r"\(\)")])
def test_a_prior_of_the_wrong_event_shape_is_named_not_the_data(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    shape: str,
) -> None:
    # Issue 25: the first was blamed on the data ("cannot process digits examples of
    # shape (1, 8, 8)"); the second passed the two-example probe (2 broadcasts with
    # latent_dim 2) and ended in a traceback in training.
    (tmp_path / "wrongpriors.py").write_text(WRONG_PRIORS)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    try:
        code = main(["train", *TINY, "--out", str(run), "--set", f"model.prior=wrongpriors:{name}"])
    finally:
        sys.modules.pop("wrongpriors", None)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(
        rf"model.prior=wrongpriors:{name} gives p\(z\) of event shape {shape}, but z has 2 units",
        err,
    ), err
    assert "cannot process digits" not in err and not run.exists()
