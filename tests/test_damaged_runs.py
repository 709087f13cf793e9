"""Damaged weights and results that are not numbers: a clear error that names the file
and what to load instead, never NaN reported as success; and every JSON file vaekit
writes is strict JSON (no bare NaN)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from conftest import train_tiny
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaekit.cli import main
from vaekit.rundir import (
    WEIGHTS_SHA256,
    RunError,
    load,
    metrics_line,
    read_metrics,
    write_json,
)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    # A validation split: the run keeps best.safetensors, the fallback the errors name.
    return train_tiny(tmp_path / "run", "data.valid_fraction=0.25")


def _strict(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in JSON")

    return json.loads(text, parse_constant=refuse)


def _rewrite(
    path: Path, scale: float | None = None, nan: bool = False, overflow: bool = False
) -> None:
    """Save ``path`` again as a run from before checksums (no WEIGHTS_SHA256), with its
    tensors scaled, or the first one set to NaN, or (``overflow``) the first layer of each
    network set to finite values so large that its outputs overflow to infinity, which
    the next layer's weights of both signs turn into NaN."""
    with safe_open(str(path), "pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != WEIGHTS_SHA256}
    tensors = load_file(path)
    for k, v in tensors.items():
        if scale is not None and v.is_floating_point():
            tensors[k] = v * scale
    if overflow:
        for k, v in tensors.items():
            if k.endswith((".0.weight", ".0.bias")):
                tensors[k] = v.clone().fill_(3e38)
    if nan:
        first = next(iter(tensors))
        tensors[first] = tensors[first].clone().fill_(math.nan)
    save_file(tensors, str(path), metadata=meta)


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err
    return err


def test_weights_record_their_checksum(run: Path) -> None:
    for name in ("model.safetensors", "best.safetensors"):
        raw = (run / name).read_bytes()
        with safe_open(str(run / name), "pt") as f:
            digest = (f.metadata() or {})[WEIGHTS_SHA256]
        data = raw[8 + int.from_bytes(raw[:8], "little") :]
        assert hashlib.sha256(data).hexdigest() == digest


def test_weights_are_serialised_once_with_the_same_bytes_as_twice(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save

    from vaekit.storage import save_weights

    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 2))
    meta = {"epoch": "7", "valid_elbo": "1.5"}
    data = save_weights(tmp_path / "w.safetensors", net, meta)
    # What serialising twice gives: the data, then the data with their digest in the header.
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    plain = save(tensors, metadata=meta)
    digest = hashlib.sha256(plain[8 + int.from_bytes(plain[:8], "little") :]).hexdigest()
    twice = save(tensors, metadata={**meta, WEIGHTS_SHA256: digest})

    def parts(raw: bytes) -> tuple[dict[str, object], bytes]:  # the header's order is a hash's
        end = 8 + int.from_bytes(raw[:8], "little")
        return json.loads(raw[8:end]), raw[end:]

    assert parts(data) == parts(twice) and len(data) == len(twice)
    assert (tmp_path / "w.safetensors").read_bytes() == data


def test_a_runs_weights_are_its_newest_checkpoints_bytes(run: Path) -> None:
    from vaekit.rundir import checkpoint_dirs

    newest = checkpoint_dirs(run)[-1] / "model.safetensors"
    assert (run / "model.safetensors").read_bytes() == newest.read_bytes()


def test_overwritten_weights_are_an_error_naming_the_fallback(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run / "model.safetensors"
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + 100 : start + 164] = b"\xff" * 64  # NaN bit patterns, header intact
    path.write_bytes(bytes(raw))
    err = _fails(["evaluate", str(run), "--k", "2"], capsys)
    assert f"{path}: the weights are corrupt" in err and "--weights best" in err
    assert "checkpoints/epoch-0002/model.safetensors" in err
    assert not list(run.glob("eval*.json"))
    assert load(run, weights="best").weights_file == run / "best.safetensors"


def test_old_weights_holding_nan_are_an_error(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run from before checksums: the values themselves are checked.
    _rewrite(run / "model.safetensors", nan=True)
    err = _fails(["sample", str(run), "--out", str(run / "s.png")], capsys)
    assert "model.safetensors: " in err and "holds NaN or infinite values" in err
    assert "--weights best" in err
    _rewrite(run / "best.safetensors", nan=True)
    err = _fails(["evaluate", str(run), "--k", "2", "--weights", "best"], capsys)
    assert "best.safetensors: " in err and "--weights last" in err


def test_a_result_that_is_not_a_number_is_an_error(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Finite weights so large that the bound overflows: no NaN reported as a result.
    _rewrite(run / "model.safetensors", scale=1e30)
    err = _fails(["evaluate", str(run), "--k", "2"], capsys)
    assert "of the test split is" in err and "not a number" in err
    assert f"{run / 'model.safetensors'} are damaged" in err and "--weights best" in err
    assert not list(run.glob("eval*.json"))


def test_results_and_metrics_are_strict_json(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "--k", "2", "--limit", "8", "--out", str(out)]) == 0
    assert _strict(capsys.readouterr().out) == _strict(out.read_text())
    # A figure that is not a number is never written as a bare NaN.
    with pytest.raises(RunError, match=r"classifier\.scores\[1\] is nan"):
        write_json(tmp_path / "bad.json", {"classifier": {"scores": [0.5, math.nan]}})
    assert not (tmp_path / "bad.json").exists()
    # A metrics line: a figure that was not finite is null, read back as NaN.
    line = metrics_line({"epoch": 3, "test": {"elbo": -math.inf, "kl": 1.5}})
    assert _strict(line) == {"epoch": 3, "test": {"elbo": None, "kl": 1.5}}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line)
    row = read_metrics(run)[-1]
    assert math.isnan(row["test"]["elbo"]) and row["test"]["kl"] == 1.5
    for line in (run / "metrics.jsonl").read_text().splitlines():
        _strict(line)


def test_a_run_started_from_damaged_weights_is_refused(run: Path, tmp_path: Path) -> None:
    # train.init (a second stage starts this way) reads weights through the same checks.
    _rewrite(run / "model.safetensors", nan=True)
    with pytest.raises(RunError, match="train.init: .*holds NaN or infinite values"):
        train_tiny(tmp_path / "second", f"train.init={run}")


def test_write_report_never_writes_over_a_run_file(run: Path) -> None:
    # The Python API checks as the command line does, before it evaluates anything.
    from vaekit.report import write_report

    before = (run / "config.json").read_bytes()
    with pytest.raises(RunError, match="the resolved config of the run"):
        write_report(load(run), out=run / "config.json")
    assert (run / "config.json").read_bytes() == before and not list(run.glob("eval*.json"))


def test_outputs_that_are_not_numbers_are_not_written(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Finite weights that overflow: samples, reconstructions and codes of NaN are refused.
    _rewrite(run / "model.safetensors", overflow=True)
    for cmd, what in (("sample", "samples"), ("reconstruct", "reconstructions")):
        out = tmp_path / f"{cmd}.npy"
        err = _fails([cmd, str(run), "--out", str(out)], capsys)
        assert f"the {what} hold NaN or infinite values, so nothing was written" in err
        assert "--weights best" in err and not out.exists()
    err = _fails(["encode", str(run), "--out", str(tmp_path / "z.csv")], capsys)
    assert "the latent means hold NaN or infinite values" in err
