"""Semi-supervised learning (issue 28): M2's objective against its definition, the prior per
class, data.labels, the batches that mix labels in, evaluation's error, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config
from torch.distributions import Normal

import vaekit
from vaekit.cli import main
from vaekit.config import ModelConfig, load_config
from vaekit.data import HIDDEN_LABEL, DataError, Split, hide_labels
from vaekit.errors import ConfigError
from vaekit.evaluate import classification_error, log_likelihood
from vaekit.model import build_model
from vaekit.objectives import ELBO, M2
from vaekit.train.loop import _with_labelled

C = 3
SHAPE = (1, 4, 4)
M2_DIGITS = [
    "data.name=digits",
    "data.labels=20",
    "model.latent_dim=2",
    "model.conditional=true",
    "model.encoder={name: mlp, hidden: [8]}",
    "model.classifier={name: mlp, hidden: [8]}",
    "objective=m2",
]


def _m2_model(prior: str = "normal") -> Any:
    torch.manual_seed(0)
    cfg = ModelConfig(
        latent_dim=2,
        conditional=True,
        classifier={"name": "mlp", "hidden": [8]},
        encoder={"name": "mlp", "hidden": [8]},
        prior=prior,
    )
    return build_model(cfg, SHAPE, num_classes=C)


@pytest.fixture
def at_the_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draws of a Gaussian are its mean: the batched pass and a loop then see the same z."""

    def rsample(self: Normal, sample_shape: Any = ()) -> torch.Tensor:
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    monkeypatch.setattr(Normal, "rsample", rsample)


def _loop_bound(model: Any, x: torch.Tensor, kl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """-ELBO(x, y) for each class by the plain ELBO objective, one class at a time (C, B),
    and log q(y|x) (B, C)."""
    per = []
    for c in range(C):
        y = torch.full((len(x),), c)
        per.append(-ELBO(kl=kl)(model, x, y).terms["elbo"] + math.log(C))  # log p(y) = -log C
    return torch.stack(per), torch.log_softmax(model.classify(x).logits, -1)


@pytest.mark.parametrize("prior", ["normal", "class-gaussian"])
def test_the_unlabelled_term_is_the_sum_over_classes(prior: str, at_the_mean: None) -> None:
    model = _m2_model(prior)
    x = torch.rand(5, *SHAPE).round()
    neg_elbo, log_qy = _loop_bound(model, x)
    qy = log_qy.exp()
    want = (qy.T * neg_elbo).sum(0) + (qy * log_qy).sum(-1)  # sum q (-ELBO) - H(q)
    out = M2()(model, x, torch.full((5,), HIDDEN_LABEL))
    torch.testing.assert_close(out.terms["loss"], want)
    torch.testing.assert_close(out.terms["elbo"], -want)
    torch.testing.assert_close(out.terms["recon"] + out.terms["kl"], want)
    torch.testing.assert_close(out.loss, want.mean())


def test_the_labelled_term_adds_the_weighted_cross_entropy(at_the_mean: None) -> None:
    model = _m2_model()
    x = torch.rand(4, *SHAPE).round()
    y = torch.tensor([0, 2, HIDDEN_LABEL, 1])
    neg_elbo, log_qy = _loop_bound(model, x)
    objective = M2(alpha=0.1)
    objective.set_dataset_size(1000)
    objective.set_labelled_size(50)  # the cross-entropy weighs 0.1 * 1000 / 50 = 2
    out = objective(model, x, y)
    known = torch.tensor([0, 1, 3])
    labelled = neg_elbo[y[known], known] - 2.0 * log_qy[known, y[known]]
    torch.testing.assert_close(out.terms["loss"][known], labelled)
    assert "error" not in out.terms  # a batch with hidden labels reports no error
    full = objective(model, x, torch.tensor([0, 2, 1, 1]))
    wrong = (log_qy.argmax(-1) != torch.tensor([0, 2, 1, 1])).float()
    torch.testing.assert_close(full.terms["error"], wrong)


def test_the_batch_loss_weighs_each_kind_by_its_share_of_the_data(at_the_mean: None) -> None:
    # The paper's J^alpha sums over the data set: 50 labelled terms beside 950 unlabelled
    # ones. A batch with 3 of one and 1 of the other estimates J^alpha / N with the means
    # weighed 50/1000 and 950/1000. Adding the two means (the defect this pins) weighed
    # the labelled term, cross-entropy included, 19 times too much.
    model = _m2_model()
    x = torch.rand(4, *SHAPE).round()
    y = torch.tensor([0, 2, HIDDEN_LABEL, 1])
    objective = M2(alpha=0.1)
    objective.set_dataset_size(1000)
    objective.set_labelled_size(50)
    out = objective(model, x, y)
    per, known = out.terms["loss"], y >= 0
    torch.testing.assert_close(out.loss, 0.05 * per[known].mean() + 0.95 * per[~known].mean())
    # Without the sizes (outside the trainer) the batch stands for the data: its mean.
    torch.testing.assert_close(M2()(model, x, y).loss, M2()(model, x, y).terms["loss"].mean())
    # weighting=batch (not the paper's): the two means weigh 1 each, sizes or not.
    batch = M2(alpha=0.1, weighting="batch")
    batch.set_dataset_size(1000)
    batch.set_labelled_size(50)
    out = batch(model, x, y)
    torch.testing.assert_close(out.loss, per[known].mean() + per[~known].mean())


def test_the_unlabelled_term_trains_the_classifier() -> None:
    # U(x) reaches q(y|x) through its weights q(y|x) and its entropy (the paper's gradient
    # of U with respect to the classifier): an unlabelled batch alone moves the classifier.
    model = _m2_model()
    M2()(model, torch.rand(5, *SHAPE).round(), torch.full((5,), HIDDEN_LABEL)).loss.backward()
    grads = [p.grad for p in model.classifier.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_labels_beyond_the_classes_are_refused() -> None:
    with pytest.raises(DataError, match=r"class indices 0\.\.2"):
        M2()(_m2_model(), torch.rand(2, *SHAPE), torch.tensor([0, 3]))


def test_the_prior_per_class() -> None:
    model = _m2_model("class-gaussian")
    prior = model.prior_module
    p = model.prior_given(torch.tensor([2, 0]))
    assert p.batch_shape == (2,) and p.event_shape == (2,)
    torch.testing.assert_close(p.mean, prior.means[[2, 0]])
    # p(z) is the uniform mixture of the classes' Gaussians.
    z = torch.randn(7, 2)
    each = torch.stack([model.prior_given(torch.full((7,), c)).log_prob(z) for c in range(C)])
    torch.testing.assert_close(
        model.prior.log_prob(z), torch.logsumexp(each, 0) - math.log(C), atol=1e-4, rtol=0
    )


def test_sampling_a_class_draws_from_its_prior() -> None:
    model = _m2_model("class-gaussian")
    with torch.no_grad():
        model.prior_module.means[1] = 50.0
        model.prior_module.logvars.fill_(-10.0)
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    model.decoder.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    model.sample(4, y=1)
    assert torch.allclose(seen[0], torch.full((4, 2), 50.0), atol=0.1)


def test_the_marginal_likelihood_sums_the_labels_out(at_the_mean: None) -> None:
    model = _m2_model()
    x = torch.rand(3, *SHAPE).round()
    model.eval()
    with torch.no_grad():
        neg_elbo, _ = _loop_bound(model, x, kl="mc")  # log q - log p at the draw, as log w
        ll = log_likelihood(model, x, torch.zeros(3, dtype=torch.long), k=1)
    # One draw at the mean: log p(x|y) is log w at it; the labels given are not used.
    want = torch.logsumexp(-neg_elbo.double(), 0)
    torch.testing.assert_close(ll, want, atol=1e-4, rtol=0)


# -- data.labels ------------------------------------------------------------------------------


def test_hide_labels_keeps_as_many_of_each_class_seeded() -> None:
    y = torch.arange(60) % 3
    split = Split(torch.zeros(60, 1), y)
    a = hide_labels(split, 6, 3, seed=0).y
    assert a is not None
    kept = a[a >= 0]
    assert torch.bincount(kept, minlength=3).tolist() == [2, 2, 2]
    assert torch.equal(kept, y[a >= 0])  # the labels kept are the true ones
    b = hide_labels(split, 6, 3, seed=0).y
    c = hide_labels(split, 6, 3, seed=1).y
    assert b is not None and c is not None
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    ("n", "y", "message"),
    [
        (7, torch.arange(30) % 3, "multiple of 3: use data.labels=6 or 9"),
        (33, torch.arange(30) % 3, "more than the 30 labelled"),
        (6, None, "these data have none"),
        (6, torch.arange(30) % 4, "beyond the 3 classes"),
        (12, torch.tensor([0] * 25 + [1, 1, 2, 2, 2]), "class 1 has 2"),
    ],
)
def test_hide_labels_says_what_to_do(n: int, y: torch.Tensor | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        hide_labels(Split(torch.zeros(30, 1), y), n, 3, seed=0)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.labels=100"], "only a semi-supervised objective"),
        (["objective=m2", "model.conditional=true"], "model.classifier=mlp"),
        (["model.classifier=mlp"], "model.conditional=true"),
        (["model.prior=class-gaussian"], "model.conditional=true"),
        (
            ["model.prior=class-gaussian", "model.conditional=true", "objective=avb"],
            "one prior per class",
        ),
    ],
)
def test_configs_that_cannot_work_are_refused(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)


def test_each_batch_takes_labelled_examples_in_turn() -> None:
    labelled = torch.tensor([3, 7, 11])
    chosen = iter([torch.tensor([0, 1]), torch.tensor([2, 4]), torch.tensor([5, 6])])
    batches = list(_with_labelled(chosen, labelled, 2, seed=0, epoch=1, first=0))
    extra = torch.cat([b[2:] for b in batches])
    assert [len(b) for b in batches] == [4, 4, 4]
    # Every labelled example once in each pass over them.
    assert sorted(extra[:3].tolist()) == [3, 7, 11] and sorted(extra[3:6].tolist()) == [3, 7, 11]
    # A resumed epoch (from batch 2) takes the same ones.
    again = list(_with_labelled(iter([torch.tensor([5, 6])]), labelled, 2, 0, 1, first=2))
    assert torch.equal(again[0], batches[2])


def test_the_epoch_means_leave_the_added_labelled_rows_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each batch adds the labelled rows beside its share of the training split; the epoch's
    # reported terms are means over the training split, where the labels are 20 of 1,437
    # (counting the added rows weighed them about half of every mean).
    forward = M2.forward

    def marked(self: M2, model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        out = forward(self, model, x, y)
        out.terms["labelled"] = (y >= 0).float() if y is not None else out.terms["elbo"] * 0
        return out

    monkeypatch.setattr(M2, "forward", marked)
    cfg = load_config(None, [*M2_DIGITS, "train.epochs=1", "train.batch_size=100"])
    vaekit.fit(cfg, tmp_path / "run", progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    n = len(vaekit.load(tmp_path / "run").dataset().train)
    assert row["train"]["labelled"] == pytest.approx(20 / n)


def test_classification_error_and_its_standard_error() -> None:
    model = _m2_model()
    x, y = torch.rand(40, *SHAPE), torch.arange(40) % C
    with torch.no_grad():
        wrong = (model.classify(x).logits.argmax(-1) != y).float().mean().item()
    got = classification_error(model, Split(x, y), batch_size=7)
    assert got["n"] == 40 and got["error"] == pytest.approx(wrong)
    assert got["error_se"] == pytest.approx(math.sqrt(wrong * (1 - wrong) / 40))
    with pytest.raises(Exception, match="hidden"):
        classification_error(model, Split(x, torch.full((40,), HIDDEN_LABEL)))


# -- end to end -------------------------------------------------------------------------------


def test_m2_and_m1_m2_from_the_command_line(tmp_path: Path) -> None:
    tiny = [
        "data.name=digits",
        "data.limit=200",
        "model.latent_dim=2",
        "model.encoder={name: mlp, hidden: [16]}",
        "train.epochs=1",
        "train.batch_size=50",
    ]
    sets = [*tiny, "data.labels=20", "objective=m2", "model.conditional=true"]
    sets += ["model.classifier={name: mlp, hidden: [16]}", "model.prior=class-gaussian"]
    run = tmp_path / "m2"
    args = ["train", "--out", str(run), "--no-progress"]
    assert main([*args, *[f"--set={s}" for s in sets]]) == 0
    assert main(["evaluate", str(run), "--k", "2", "--limit", "60"]) == 0
    result = json.loads(next(run.glob("eval*.json")).read_text())
    assert 0 <= result["error"] <= 1 and result["error_se"] > 0 and math.isfinite(result["nll"])
    # The training split, most of whose labels are hidden, is refused with what to do.
    assert main(["evaluate", str(run), "--k", "2", "--split", "train"]) == 2
    # M1+M2: a VAE's codes as a dataset, and M2 on them.
    m1 = tmp_path / "m1"
    assert main(["train", "--out", str(m1), "--no-progress", *[f"--set={s}" for s in tiny]]) == 0
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(m1), "--out", str(codes)]) == 0
    with np.load(codes) as f:
        assert f["train"].shape == (200, 2) and len(f["y_test"]) == len(f["test"])
    on_codes = [f"--set={s}" for s in [*sets, f"data.name={codes}", "model.likelihood=gaussian"]]
    assert main(["train", "--out", str(tmp_path / "m1m2"), "--no-progress", *on_codes]) == 0


def test_data_labels_in_a_config_with_too_many_labels(tmp_path: Path) -> None:
    cfg = tiny_config(
        "data.labels=300", "objective=m2", "model.conditional=true", "model.classifier=mlp"
    )
    from vaekit.train import fit

    with pytest.raises(DataError, match="more than the 256 labelled"):
        fit(cfg, tmp_path / "run", progress=False)
