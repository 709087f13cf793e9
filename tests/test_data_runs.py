"""A run's data: the limited subset, the fingerprint, moved paths, and messages about them."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

import vaekit
from vaekit.cli import main
from vaekit.data import DataError, Dataset, Split, limit_split, load_dataset, training_data
from vaekit.serve import Explorer
from vaekit.summary import summarize_run
from vaekit.train import fit, loop

TABLE = ["height", "weight", "age"]


def sorted_table(path: Path, n: int = 300, classes: int = 3) -> Path:
    """A CSV sorted by class, as many exported files are; the first column is the row number."""
    rng = np.random.default_rng(0)
    lines = [",".join(TABLE + ["label"])]
    for i in range(n):
        c = i * classes // n
        lines.append(f"{i},{rng.normal() + c:.4f},{rng.normal():.4f},{c}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def sorted_images(folder: Path, per_class: int = 20) -> Path:
    for c in range(3):
        for i in range(per_class):
            a = np.full((4, 4), 40 * c + i, np.uint8)
            (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(folder / f"class{c}" / f"{i:02d}.png")
    return folder


def train_on(path: Path | str, out: Path, *overrides: str) -> Path:
    cfg = tiny_config(
        f"data.name={path}",
        "model.likelihood=gaussian",
        "train.epochs=1",
        "train.batch_size=32",
        *overrides,
    )
    fit(cfg, out, progress=False, log=io.StringIO())
    return out


def counts(split: Split) -> list[int]:
    assert split.y is not None
    return split.y.bincount().tolist()


# -- data.limit --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "image folder"])
def test_limit_keeps_every_class_of_a_class_sorted_source(tmp_path: Path, kind: str) -> None:
    path = sorted_table(tmp_path / "t.csv") if kind == "csv" else sorted_images(tmp_path / "img")
    cfg = tiny_config(f"data.name={path}", "data.limit=30")
    ds = training_data(cfg.data, cfg.train.seed)
    full = load_dataset(str(path)).train
    # The first 30 rows leave the last class out; the limit keeps each class's share instead.
    assert len(counts(full.take(30))) < 3
    share = [30 * c / len(full) for c in counts(full)]
    assert len(ds.train) == 30 and all(
        abs(k - s) < 1 for k, s in zip(counts(ds.train), share, strict=True)
    )
    # Seeded: the same subset every time, another one for another seed; in the file's order.
    again = training_data(cfg.data, cfg.train.seed)
    assert torch.equal(ds.train.x, again.train.x)
    assert not torch.equal(ds.train.x, training_data(cfg.data, 1).train.x)
    if kind == "csv":
        rows = ds.train.x[:, 0]
        assert bool((rows[1:] > rows[:-1]).all())


def test_limit_split_shares_by_largest_remainder() -> None:
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    split = Split(torch.arange(10.0)[:, None], y)
    # Shares 2.5, 1.5 and 1.0 of 5: the tie of remainders goes to the lower label.
    assert counts(limit_split(split, 5, seed=0)) == [3, 1, 1]
    assert limit_split(split, 10, seed=0) is split
    plain = limit_split(Split(torch.arange(10.0)[:, None]), 4, seed=3)
    assert len(plain) == 4 and bool((plain.x[1:, 0] > plain.x[:-1, 0]).all())


def test_run_dataset_gives_the_examples_training_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[Dataset] = []
    original = loop.training_data

    def keep(*args: Any, **kwargs: Any) -> Dataset:
        used.append(original(*args, **kwargs))
        return used[-1]

    # The trainer's data come from the public vaekit.data.training_data: watch it.
    monkeypatch.setattr(loop, "training_data", keep)
    run = train_on(sorted_table(tmp_path / "t.csv"), tmp_path / "run", "data.limit=50")
    ds = vaekit.load(run).dataset()
    assert len(ds.train) == 50
    assert torch.equal(ds.train.x, used[0].train.x) and torch.equal(ds.test.x, used[0].test.x)


# -- changed data --------------------------------------------------------------------------


def test_changed_data_are_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = sorted_table(tmp_path / "t.csv")
    run = train_on(table, tmp_path / "run", "train.checkpoint_every=1")
    # The same bytes written again (a new modification time) are the same data.
    table.write_bytes(table.read_bytes())
    assert len(vaekit.load(run).dataset().test) == 60
    size = table.stat().st_size
    with table.open("a") as f:
        f.write("".join(f"{300 + i},0.5,0.5,2\n" for i in range(20)))
    said = (
        f"{table} has {table.stat().st_size:,} bytes now, {size:,} bytes when it was trained",
        "320 examples (train 256 + test 64) now, 300 examples (train 240 + test 60) then",
        "--allow-changed-data",
    )
    with pytest.raises(DataError) as info:
        vaekit.load(run).dataset()
    assert all(s in str(info.value) for s in said)
    with pytest.raises(DataError, match="changed since it was trained"):
        fit(None, run, resume=True, epochs=2, log=io.StringIO())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "2"]) == 2
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count(said[0]) == 2 and "Traceback" not in err
    assert len(vaekit.load(run).metrics) == 1  # the refused resume trained nothing

    assert len(vaekit.load(run).dataset(allow_changed=True).test) == 64
    assert main(["evaluate", str(run), "--k", "2", "--allow-changed-data"]) == 0
    assert json.loads((run / "eval-k2.json").read_text())["n"] == 64
    # A resume that goes on with the new data records them: later commands accept them.
    assert main(["train", "--resume", str(run), "--epochs", "2", "--allow-changed-data"]) == 0
    assert "training goes on with changed data" in capsys.readouterr().err
    assert len(vaekit.load(run).metrics) == 2 and len(vaekit.load(run).dataset().test) == 64


def test_the_fingerprint_is_taken_from_the_cache_only_for_unchanged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import vaekit.data.fingerprint as fp

    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    hashed: list[int] = []
    real = fp.data_fingerprint
    monkeypatch.setattr(
        fp, "data_fingerprint", lambda ds, reads=(): hashed.append(1) or real(ds, reads)
    )
    table = sorted_table(tmp_path / "t.csv")
    cfg = tiny_config(f"data.name={table}")

    def load() -> dict[str, Any]:
        fingerprint = training_data(cfg.data, cfg.train.seed).fingerprint
        assert fingerprint is not None
        return fingerprint

    # A file written in the last seconds is hashed every time, and never remembered.
    first = load()
    assert load() == first and len(hashed) == 2
    assert not (tmp_path / "cache" / "fingerprints.json").exists()
    monkeypatch.setattr(fp, "RECENT_SECONDS", 0.0)
    assert load() == first and len(hashed) == 3
    assert load() == first and len(hashed) == 3  # unchanged: from the cache
    # The same size and modification time, other values: the status-change time tells.
    before = table.stat()
    table.write_text(table.read_text().replace("0.", "1.", 1))
    os.utime(table, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert table.stat().st_size == before.st_size
    changed = load()
    assert len(hashed) == 4 and changed["sha256"] != first["sha256"]
    assert load() == changed and len(hashed) == 4
    # Another request for the same file (a data.limit is applied after the load: the same).
    cfg = tiny_config(f"data.name={table}", "data.limit=30")
    assert load() == changed and len(hashed) == 4
    # A torn or foreign cache file is ignored and rewritten.
    (tmp_path / "cache" / "fingerprints.json").write_text("{not json")
    assert load() == changed and len(hashed) == 5 and load() == changed and len(hashed) == 5


def test_runs_without_a_fingerprint_still_load(tmp_path: Path) -> None:
    run = train_on(sorted_table(tmp_path / "t.csv"), tmp_path / "run", "data.limit=50")
    info = json.loads((run / "model.json").read_text())
    del info["data"]["fingerprint"]
    (run / "model.json").write_text(json.dumps(info))
    with (tmp_path / "t.csv").open("a") as f:
        f.write("300,0.5,0.5,2\n")
    # No fingerprint, no check; such runs trained on the first data.limit examples.
    ds = vaekit.load(run).dataset()
    assert len(ds.train) == 50 and counts(ds.train) == [50]


# -- paths -----------------------------------------------------------------------------------


def test_a_run_finds_its_data_from_any_directory_and_moved_data_by_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    sorted_table(tmp_path / "data" / "table.csv")
    args = ["--dataset", "data/table.csv", "--epochs", "1", "--set", "model.likelihood=gaussian"]
    assert main(["train", *args, "--set", "model.encoder.hidden=[8]", "--out", "run"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["name"] == str(tmp_path / "data" / "table.csv")
    assert summarize_run(tmp_path / "run")["dataset"] == "table.csv"
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = "../run"
    assert len(vaekit.load(run).dataset().test) == 60
    assert main(["evaluate", run, "--k", "2"]) == 0
    assert main(["encode", run]) == 0

    shutil.move(tmp_path / "data", tmp_path / "moved")
    capsys.readouterr()
    assert main(["evaluate", run, "--k", "2"]) == 2
    assert "pass where they are now with --dataset PATH" in capsys.readouterr().err
    moved = "../moved/table.csv"
    assert main(["evaluate", run, "--k", "2", "--dataset", moved]) == 0
    assert main(["reconstruct", run, "--dataset", moved]) == 0
    assert main(["plot", run, "--which", "latent_scatter", "--dataset", moved]) == 0
    assert len(Explorer.from_run_dir(run, data_path=moved).codes) == 60
    # Moved and changed: the fingerprint still applies.
    with (tmp_path / "moved" / "table.csv").open("a") as f:
        f.write("300,0.5,0.5,2\n")
    capsys.readouterr()
    assert main(["encode", run, "--dataset", moved]) == 2
    assert "changed since it was trained" in capsys.readouterr().err


# -- a user's function ------------------------------------------------------------------------

USER_DATA = """
import numpy as np
import torch

from vaekit.data import make_dataset


def blobs(n=200, shift=0.0):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = np.clip(rng.normal(size=(n, 5)) * 0.1 + 0.25 * y[:, None] + 0.2 + shift, 0, 1)
    k = n * 3 // 4  # a tensor for the test split: tensors are taken as arrays are
    return x[:k].astype(np.float32), y[:k], torch.from_numpy(x[k:]).float(), y[k:]


def splits():
    x = np.random.default_rng(1).random((90, 4))
    return {"train": x[:60], "valid": (x[60:70], None), "test": x[70:]}


def dataset():
    x = np.random.default_rng(2).random((30, 4, 4))
    return make_dataset("mine", (x[:20], None), (x[20:], None), class_names=None)


def nothing():
    return 42
"""


def test_a_dataset_of_yours_by_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # data.name=module:function calls the function with data.options; every command that
    # rebuilds a run's data from config.json calls it again, and the fingerprint applies.
    (tmp_path / "userdata_i14.py").write_text(USER_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = load_dataset("userdata_i14:blobs", options={"n": 60})
    assert (len(ds.train), len(ds.test), ds.shape, ds.num_classes) == (45, 15, (5,), 3)
    splits = load_dataset("userdata_i14:splits")
    assert (len(splits.train), len(splits.valid or []), len(splits.test)) == (60, 10, 20)
    assert load_dataset("userdata_i14:dataset").name == "mine"
    with pytest.raises(DataError, match="returned int; it must return a vaekit Dataset"):
        load_dataset("userdata_i14:nothing")
    with pytest.raises(DataError, match="cannot take data.options.*unexpected keyword"):
        load_dataset("userdata_i14:blobs", options={"size": 3})
    with pytest.raises(DataError, match="'digits' takes none"):
        load_dataset("digits", options={"n": 3})

    run = train_on("userdata_i14:blobs", tmp_path / "run", "data.options.shift=0.1")
    config = json.loads((run / "config.json").read_text())["data"]
    assert config["name"] == "userdata_i14:blobs" and config["options"] == {"shift": 0.1}
    assert json.loads((run / "model.json").read_text())["data"]["fingerprint"]["sha256"]
    assert len(vaekit.load(run).dataset().test) == 50
    assert main(["evaluate", str(run), "--k", "2"]) == 0
    assert main(["plot", str(run), "--which", "latent_scatter"]) == 0
    assert main(["report", str(run), "--k", "2"]) == 0
    assert len(Explorer.from_run_dir(run).codes) == 50
    # Other data from the same function: the run's fingerprint says so.
    module = __import__("userdata_i14")
    original = module.blobs
    monkeypatch.setattr(module, "blobs", lambda n=200, shift=0.0: original(n, shift + 0.01))
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "2"]) == 2
    assert "changed since it was trained" in capsys.readouterr().err
    # Where the module cannot be imported, the message says to put it on PYTHONPATH.
    monkeypatch.delitem(sys.modules, "userdata_i14")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    for args in (
        ["evaluate", str(run), "--k", "2"],
        ["train", "--dataset", "userdata_i14:blobs", "--out", str(tmp_path / "b")],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "cannot import module 'userdata_i14' for the dataset 'userdata_i14:blobs'" in err
        assert "holds userdata_i14.py on PYTHONPATH" in err and "Traceback" not in err


# -- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_nan_is_named_by_the_row_of_the_file(tmp_path: Path, suffix: str) -> None:
    x = np.random.default_rng(0).normal(size=(20, 4))
    x[5, 3] = np.nan
    path = tmp_path / f"t{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        np.savez(path, x=x)
    with pytest.raises(DataError, match=r"first at row 5, column 3, counting from 0"):
        load_dataset(str(path))


def test_a_text_column_not_named_label_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_text("a,b,species\n1,2,setosa\n3,4,virginica\n")
    with pytest.raises(DataError, match="rename the column to 'label' or 'y'"):
        load_dataset(str(path))


def test_missing_split_names_the_splits_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_on(sorted_table(tmp_path / "t.csv"), tmp_path / "run")
    with pytest.raises(DataError, match="has no 'valid' split .*; use train or test$"):
        vaekit.load(run).dataset().split("valid")
    for command in ("evaluate", "encode"):
        assert main([command, str(run), "--split", "valid"]) == 2
        err = capsys.readouterr().err
        assert "use train or test" in err and "valid or" not in err


def test_sample_and_reconstruct_keep_the_columns_names(tmp_path: Path) -> None:
    run = train_on(sorted_table(tmp_path / "t.csv"), tmp_path / "run")
    assert json.loads((run / "model.json").read_text())["data"]["columns"] == TABLE
    assert main(["sample", str(run), "--n", "3"]) == 0
    assert (run / "samples.csv").read_text().splitlines()[0] == "height,weight,age"
    assert main(["reconstruct", str(run), "--n", "2"]) == 0
    header = (run / "reconstructions.csv").read_text().splitlines()[0]
    assert header == "height,weight,age,recon_height,recon_weight,recon_age"


def test_a_file_is_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = train_on(sorted_table(tmp_path / "t.csv"), tmp_path / "run")
    assert main(["evaluate", str(run / "config.json")]) == 2
    assert "is a file, not a run directory" in capsys.readouterr().err


def test_model_view_is_one_seeded_draw_for_dynamic_binarization_only() -> None:
    from vaekit.data import model_view

    grey = Split(torch.rand(50, 1, 4, 4), torch.arange(50))
    assert model_view(grey, "none", 0) is grey
    drawn = model_view(grey, "dynamic", 3)
    assert set(drawn.x.unique().tolist()) == {0.0, 1.0} and drawn.y is grey.y
    assert torch.equal(model_view(grey, "dynamic", 3).x, drawn.x)
    assert not torch.equal(model_view(grey, "dynamic", 4).x, drawn.x)
