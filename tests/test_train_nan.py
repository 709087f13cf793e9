"""Numerical faults: NaN injected into a batch and into a weight, under each train.nan_policy.

Data readers reject NaN at load, so the NaN is injected through the public API: the
training data are loaded as training would load them (vaekit.data.training_data), poisoned
and handed to fit(data=...); a weight is poisoned by an objective object handed to
fit(objective=...) that wraps the real one.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file
from test_train_resume import quiet_fit
from torch import Tensor, nn

from vaekit.config import Config
from vaekit.data import Dataset, Split, training_data
from vaekit.objectives import Objective, ObjectiveOutput, build_objective
from vaekit.rundir import read_metrics
from vaekit.train import TrainingError

NAN_ROW = 17  # one training example; it lands in exactly one batch of every epoch


def _poisoned(cfg: Config, rows: slice | int) -> Dataset:
    """The training data of ``cfg`` with NaN in the given training rows."""
    ds = training_data(cfg.data, cfg.train.seed)
    x = ds.train.x.clone()
    x[rows] = float("nan")
    ds.train = Split(x, ds.train.y)
    return ds


class _PoisonWeight(Objective):
    """Delegates to the real objective; on training call ``at`` sets a decoder weight to NaN."""

    def __init__(self, inner: Objective, at: int) -> None:
        super().__init__()
        self.inner = inner
        self.at = at
        self.calls = 0

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def forward(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        if torch.is_grad_enabled():  # training steps only, not evaluation or the start-up probe
            self.calls += 1
            if self.calls == self.at:
                with torch.no_grad():
                    next(model.decoder.parameters()).view(-1)[0] = float("nan")
        out: ObjectiveOutput = self.inner(model, x, y)
        return out


def _poison_weight(cfg: Config, at: int) -> Objective:
    return _PoisonWeight(build_objective(cfg.objective), at)


def _finite_weights(run: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(run / "model.safetensors").values())


def test_nan_batch_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config("train.epochs=3")
    rows = quiet_fit(cfg, tmp_path / "run", data=_poisoned(cfg, NAN_ROW))
    assert [r["nonfinite"] for r in rows] == [{"bad_steps": 1, "rollbacks": 0, "lr": 1e-3}] * 3
    # 4 batches an epoch, one skipped in each: 3 updates per epoch.
    assert [r["step"] for r in rows] == [3, 6, 9]
    assert all(math.isfinite(v) for r in rows for v in r["train"].values())
    assert _finite_weights(tmp_path / "run")
    err = capsys.readouterr().err
    assert err.count("non-finite loss or gradient; skipped the update") == 3
    # The warning names the example: the same row in every epoch is the data, not the run.
    assert err.count(f"non-finite at training example(s) {NAN_ROW})") == 3


def test_nan_batch_with_rollback_policy_halves_lr(tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=3", "train.nan_policy=rollback")
    rows = quiet_fit(cfg, tmp_path / "run", data=_poisoned(cfg, NAN_ROW))
    assert [r["nonfinite"]["rollbacks"] for r in rows] == [1, 1, 1]
    assert [r["nonfinite"]["lr"] for r in rows] == [5e-4, 2.5e-4, 1.25e-4]
    assert _finite_weights(tmp_path / "run")
    state = torch.load(
        tmp_path / "run" / "checkpoints" / "epoch-0003" / "trainer_state.pt", weights_only=True
    )
    assert state["lr_scale"] == 0.125 and state["bad_steps_total"] == 3


def test_nan_batch_with_stop_policy_stops_with_a_clear_message(tmp_path: Path) -> None:
    cfg = tiny_config("train.nan_policy=stop")
    with pytest.raises(
        TrainingError,
        match=r"non-finite loss or gradient at epoch 1 batch \d/4 \(train.nan_policy=stop\)",
    ):
        quiet_fit(cfg, tmp_path / "run", data=_poisoned(cfg, NAN_ROW))
    assert read_metrics(tmp_path / "run") == []


def test_recurring_nan_stops_training(tmp_path: Path) -> None:
    cfg = tiny_config("train.max_bad_steps=3", "train.batch_size=16")
    data = _poisoned(cfg, slice(None, None, 7))  # every batch has one
    with pytest.raises(
        TrainingError,
        match=r"4 non-finite steps in epoch 1 \(train.max_bad_steps=3\): training diverged",
    ):
        quiet_fit(cfg, tmp_path / "run", data=data)


@pytest.mark.parametrize("policy", ["skip", "rollback"])
def test_nan_weight_is_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str
) -> None:
    cfg = tiny_config("train.epochs=3", f"train.nan_policy={policy}")
    rows = quiet_fit(cfg, tmp_path / "run", objective=_poison_weight(cfg, at=6))  # epoch 2, batch 2
    assert "nonfinite" not in rows[0] and "nonfinite" not in rows[2]
    assert rows[1]["nonfinite"] == {"bad_steps": 1, "rollbacks": 1, "lr": 5e-4}
    assert _finite_weights(tmp_path / "run")
    assert (
        "weights became non-finite: rolled back to the start of the epoch"
        in capsys.readouterr().err
    )


class _NanGradient(Objective):
    """The real objective; on training call ``at`` its loss gains sqrt(|w - w|) of a
    decoder weight, which adds 0 to the loss and NaN to the gradient (|.|'(0) sqrt'(0)
    = 0 inf): a finite loss whose gradient is not. ``scale`` multiplies the loss instead
    (a finite gradient whose square overflows float32)."""

    def __init__(self, inner: Objective, at: int, scale: float | None = None) -> None:
        super().__init__()
        self.inner, self.at, self.scale, self.calls = inner, at, scale, 0

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def forward(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> ObjectiveOutput:
        out: ObjectiveOutput = self.inner(model, x, y)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                if self.scale is not None:
                    return ObjectiveOutput(out.loss * self.scale, out.terms)
                w = next(model.decoder.parameters()).view(-1)[0]
                return ObjectiveOutput(out.loss + (w - w.detach()).abs().sqrt(), out.terms)
        return out


@pytest.mark.parametrize("scale", [None, 1e25])
def test_a_finite_loss_with_a_non_finite_gradient_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scale: float | None
) -> None:
    # The guard reads the gradient, not the loss alone: NaN in one weight's gradient, or
    # gradients whose squared norm overflows (Adam's second moment would), skip the step.
    cfg = tiny_config("train.epochs=2")
    objective = _NanGradient(build_objective(cfg.objective), at=3, scale=scale)
    rows = quiet_fit(cfg, tmp_path / "run", objective=objective)
    assert rows[0]["nonfinite"] == {"bad_steps": 1, "rollbacks": 0, "lr": 1e-3}
    assert "nonfinite" not in rows[1] and [r["step"] for r in rows] == [3, 7]
    assert _finite_weights(tmp_path / "run")
    assert "every term finite, the gradient not" in capsys.readouterr().err


def test_clean_run_has_no_nonfinite_entries(tmp_path: Path) -> None:
    rows = quiet_fit(tiny_config(), tmp_path / "run")
    assert all("nonfinite" not in r for r in rows)


def test_a_rollback_restores_the_weights_average_with_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.ema: the moving average goes back to the start of the epoch with the weights
    (else it would keep the updates of the steps that were rolled back)."""
    import vaekit.train.loop as loop

    real = loop.guard
    checked: list[bool] = []

    def guard(s: object, data: object, parts: loop.Parts, prog: loop.Progress, *a: object) -> None:
        real(s, data, parts, prog, *a)  # type: ignore[arg-type]
        assert parts.ema is not None
        saved, now = prog.good["ema"], parts.ema.module.state_dict()
        checked.append(all(torch.equal(saved[k], now[k]) for k in saved))

    monkeypatch.setattr(loop, "guard", guard)
    cfg = tiny_config("train.epochs=2", "train.nan_policy=rollback", "train.ema=0.5")
    rows = quiet_fit(cfg, tmp_path / "run", objective=_poison_weight(cfg, at=7))  # epoch 2, batch 3
    assert rows[1]["nonfinite"]["rollbacks"] == 1
    assert checked == [True]
    assert _finite_weights(tmp_path / "run")
