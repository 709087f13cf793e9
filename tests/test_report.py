"""The HTML report: self-contained (no external requests), with metrics, figures and,
for published settings, the literature's numbers."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import train_tiny

import vaekit
from vaekit.cli import main
from vaekit.config import config_to_dict
from vaekit.plots import FIGURES, LAYER_FIGURES
from vaekit.report import (
    REFERENCES,
    load_or_evaluate,
    matching_references,
    render_report,
    write_report,
)


def _train(tmp: Path, *overrides: str, data_dir: Path | None = None) -> vaekit.Run:
    return vaekit.load(train_tiny(tmp, *overrides, data_dir=data_dir))


@pytest.fixture(scope="module")
def vae(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    torch.set_num_threads(1)
    return _train(tmp_path_factory.mktemp("vae"))


def _assert_self_contained(text: str) -> None:
    # Nothing that a browser would fetch: no remote or local src/href, scripts, styles, fonts.
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text):
        assert attr.startswith("data:image/png;base64,"), attr[:80]
    assert not re.search(r"<script|<link|<iframe|@import|url\(", text, re.IGNORECASE)
    assert "http://" not in text and "https://" not in text


def test_report_is_self_contained_with_metrics_and_figures(vae: vaekit.Run) -> None:
    path = write_report(vae, k=5, threads=1)
    assert path == vae.dir / "report.html"
    text = path.read_text()
    _assert_self_contained(text)
    results = json.loads((vae.dir / "eval-k5.json").read_text())
    assert results["k"] == 5
    # The metrics table holds our numbers as shown.
    assert (
        "test NLL" in text
        and f"{results['nll']:,.2f} &plusmn; {results['nll_se']:,.2f} nats" in text
    )
    assert f"{results['elbo']:,.2f}" in text and "active units" in text and "5-NN" in text
    # One embedded PNG per figure that applies (all but the conditional class grid).
    images = re.findall(r'<img alt="([a-z_]+)" src="data:image/png;base64,', text)
    # The figures of several stochastic layers do not apply to one.
    assert images == [
        n
        for n in FIGURES
        if n not in ("class_grid", "codes", "samplers", "ood_scores", *LAYER_FIGURES)
    ]
    assert "class_grid: not a conditional model" in text
    assert "samplers: no post-hoc sampler fitted yet" in text
    # digits is not a published setting: no reference table.
    assert "Published numbers" not in text
    assert "latent_dim: 2" in text  # the config
    # Bernoulli on grey digits: the NLL row says it is a cross-entropy, even for an
    # evaluation saved without the note.
    assert "Caveat: a cross-entropy, not a likelihood" in text
    (vae.dir / "eval-k5.json").write_text(json.dumps({**results, "nll_note": None}))
    assert "Caveat: a cross-entropy" in write_report(vae, threads=1).read_text()


def test_report_reuses_the_most_thorough_saved_evaluation(vae: vaekit.Run) -> None:
    # Its own k = 5 evaluation: the test must not lean on what an earlier test wrote.
    for path in vae.dir.glob("eval*.json"):
        path.unlink()
    k5 = load_or_evaluate(vae, k=5, threads=1)
    assert json.loads((vae.dir / "eval-k5.json").read_text()) == k5
    (vae.dir / "eval-k5.json").write_text(json.dumps({**k5, "nll": 12345.678}))
    assert load_or_evaluate(vae)["nll"] == 12345.678
    # A new k evaluates anew, beside the saved one; the highest k is the one reused.
    assert load_or_evaluate(vae, k=7, threads=1)["nll"] != 12345.678
    assert json.loads((vae.dir / "eval-k5.json").read_text())["nll"] == 12345.678
    assert load_or_evaluate(vae)["k"] == 7
    # Files it cannot trust are passed over: no k, another split, an earlier epoch.
    for path in vae.dir.glob("eval*.json"):
        path.unlink()
    (vae.dir / "eval.json").write_text(json.dumps({"elbo": -1.0}))
    (vae.dir / "eval-k9.json").write_text(json.dumps({**k5, "k": 9, "split": "valid"}))
    (vae.dir / "eval-k8.json").write_text(json.dumps({**k5, "k": 8, "epoch": 1}))
    assert load_or_evaluate(vae, threads=1, default_k=2)["k"] == 2


def test_saved_evaluations_are_run_files(tmp_path: Path) -> None:
    # Which eval*.json a run directory holds, and which of them a reader trusts, is about
    # the run directory's files: rundir says so, beside the other run files.
    from vaekit.rundir import eval_file_name, saved_evaluation

    class Best:
        weights = "best"

    assert eval_file_name(Best(), split="train", k=7, limit=3) == "eval-best-train-n3-k7.json"
    base = {"split": "test", "weights": "last", "epoch": 2, "nll": 90.0}
    for name, k, extra in [
        ("eval-k10.json", 10, {}),
        ("eval.json", 5000, {"split": "valid"}),  # another split
        ("eval-k50.json", 50, {"epoch": 1}),  # earlier weights
        ("eval-n5-k99.json", 99, {}),  # part of the split
        ("eval-best-k80.json", 80, {"weights": "best"}),
    ]:
        (tmp_path / name).write_text(json.dumps({**base, "k": k, **extra}))
    (tmp_path / "eval-k20.json").write_text("{not json")
    assert saved_evaluation(tmp_path, "last", 2)["k"] == 10
    assert saved_evaluation(tmp_path, "best", 2)["k"] == 80
    assert saved_evaluation(tmp_path, "last", 3) is None


def test_evaluations_with_other_settings_never_replace_each_other(
    vae: vaekit.Run, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(vae.dir)
    assert main(["evaluate", run, "--k", "6", "--threads", "1"]) == 0
    first = (vae.dir / "eval-k6.json").read_text()
    assert main(["evaluate", run, "--k", "3", "--limit", "40", "--threads", "1"]) == 0
    assert main(["evaluate", run, "--k", "3", "--split", "train", "--limit", "40"]) == 0
    capsys.readouterr()
    assert (vae.dir / "eval-k6.json").read_text() == first
    assert json.loads((vae.dir / "eval-n40-k3.json").read_text())["n"] == 40
    assert json.loads((vae.dir / "eval-train-n40-k3.json").read_text())["split"] == "train"


def test_published_numbers_appear_for_binarized_mnist(vae: vaekit.Run) -> None:
    run = copy.copy(vae)
    run.config = copy.deepcopy(vae.config)
    run.config.data.name = "binarized-mnist"
    results = {
        "k": 5000,
        "n": 10000,
        "nll": 90.0,
        "nll_se": 0.1,
        "elbo": -95.0,
        "elbo_se": 0.1,
        "recon": 70.0,
        "kl": 25.0,
    }
    text = render_report(run, results, {})
    _assert_self_contained(text)
    assert "Published numbers for this setting" in text
    for ref in REFERENCES:
        if ref.when == {"data.name": "binarized-mnist"}:
            assert f"{ref.value:.2f}" in text and ref.model in text
    assert "+1.29" in text  # ours 90.00 against Burda et al.'s VAE 88.71
    # Tutorial 002's number needs its architecture as well.
    assert "97.75" not in text
    cfg = config_to_dict(run.config)
    cfg["model"].update(latent_dim=20, encoder={"hidden": [500, 500], "activation": "softplus"})
    tut = [r for r, _ in matching_references(cfg) if r.source == "Tutorial 002"]
    assert len(tut) == 1 and tut[0].metric == "neg_elbo"


def test_matching_references_highlights_the_same_model() -> None:
    vamp = {
        "data": {"name": "binarized-mnist"},
        "model": {"prior": {"name": "vamp"}, "flow": None, "posterior": {"name": "gaussian"}},
        "objective": {"name": "elbo"},
    }
    same = {r.model for r, s in matching_references(vamp) if s}
    assert same == {"VAE, VampPrior", "VAE, diagonal Gaussian posterior"}
    assert matching_references({"data": {"name": "digits"}, "model": {}, "objective": {}}) == []


def test_autoencoder_report_says_nll_is_undefined(tmp_path: Path) -> None:
    run = _train(tmp_path / "ae", "model.posterior=point", "objective.name=ae", "train.epochs=1")
    text = write_report(run, k=3, threads=1).read_text()
    _assert_self_contained(text)
    assert "undefined" in text and "reconstruction" in text


def test_cli_report(vae: vaekit.Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(vae.dir), "--k", "2", "--threads", "1", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _assert_self_contained(out.read_text())
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_of_a_binarized_mnist_run(tmp_path: Path, shared_data_dir: Path) -> None:
    run = _train(
        tmp_path / "bmnist",
        "data.name=binarized-mnist",
        "data.limit=500",
        "train.epochs=1",
        "train.eval_batch_size=2000",
        data_dir=shared_data_dir,
    )
    text = write_report(run, k=2, data_dir=str(shared_data_dir), threads=1).read_text()
    _assert_self_contained(text)
    assert "Burda et al. 2016" in text and "88.71" in text
    assert "Caveat" not in text  # binary data: a likelihood
    # Not labelled: no histograms; 2-D latent on images: the manifold is there.
    assert 'alt="latent_histograms"' not in text and 'alt="manifold"' in text
