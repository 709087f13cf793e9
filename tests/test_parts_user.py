"""A prior of the user's, written outside the package, trained, evaluated, plotted and
reported from the command line (issue 14's demonstration of user parts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaekit.cli import main
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
