"""A run directory written by vaekit 0.1 (commit 42147d3, before parts carried their own
options) still loads, evaluates to the same numbers, and resumes.

``tests/fixtures/run-0.1`` was trained by that release: digits, a planar flow (flat
``flow_length``), a mixture prior (flat ``prior_components``) and a Gaussian likelihood with
a learned scale (flat ``sigma``), 3 epochs; ``expected.json`` holds that release's ELBO and
k = 50 log-likelihood of 20 test examples under fixed seeds.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch

import vaekit
from vaekit.evaluate import log_likelihood
from vaekit.train import fit

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1"


def test_an_old_run_loads_its_parts_with_their_options(tmp_path: Path) -> None:
    run = vaekit.load(FIXTURE)
    m = run.config.model
    assert (m.flow.name, m.flow.options.length) == ("planar", 2)
    assert (m.prior.name, m.prior.options.components) == ("mog", 3)
    assert (m.likelihood.name, m.likelihood.options.sigma) == ("gaussian", "learned")
    assert run.config.objective.name == "elbo"


def test_an_old_run_evaluates_to_the_numbers_it_gave() -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    run = vaekit.load(FIXTURE)
    x = run.dataset().test.x[: expected["n"]]
    torch.manual_seed(0)
    elbo = run.elbo(x)["elbo"]
    torch.manual_seed(0)
    ll = log_likelihood(run, x, k=50)
    torch.testing.assert_close(elbo, torch.tensor(expected["elbo"]), rtol=0, atol=1e-4)
    torch.testing.assert_close(
        ll, torch.tensor(expected["log_likelihood_k50"], dtype=torch.float64), rtol=0, atol=1e-4
    )


def test_an_old_run_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-0.1"
    shutil.copytree(FIXTURE, run_dir)
    rows = fit(None, run_dir, resume=True, epochs=4, progress=False, log=io.StringIO())
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # config.json is rewritten in the new layout (the epochs changed), and loads again.
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["prior"] == {"name": "mog", "components": 3}
    assert vaekit.load(run_dir).config.train.epochs == 4
