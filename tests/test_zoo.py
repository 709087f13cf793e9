"""The model zoo (issue 27): packaging a run, loading it by name, checksums, re-measuring
it, and the tables generated from its manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import vaekit
from tests.conftest import train_tiny
from vaekit import zoo, zoo_store
from vaekit.cli import main
from vaekit.errors import UsageError
from vaekit.evaluate import evaluate_run
from vaekit.rundir import eval_file_name, write_json

REPO = Path(__file__).resolve().parents[1]


def _evaluate(run_dir: Path, weights: str, k: int = 10) -> None:
    """``vaekit evaluate RUN --weights W --k K``: the saved evaluation zoo add packages."""
    run = vaekit.load(run_dir, weights=weights)
    result = evaluate_run(run, k=k, classifier=False, progress=False)
    write_json(run.dir / eval_file_name(run, k=k), result)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo holding ``tiny`` (a tiny run's best weights): its folder."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("zoo")
    run = train_tiny(base / "run", "data.valid_fraction=0.2")
    _evaluate(run, "best")
    zoo.new_zoo(base / "zoo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEKIT_ZOO", str(base / "zoo"))
        mp.setenv("VAEKIT_CACHE_DIR", str(base / "cache"))
        zoo.add_run(run, "tiny", weights="best")
    return base / "zoo"


@pytest.fixture
def zoo_env(packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the packaged zoo of this test's own, with a cache of its own, run from
    another directory: its folder."""
    root = tmp_path / "zoo"
    shutil.copytree(packaged, root)
    monkeypatch.setenv("VAEKIT_ZOO", str(root))
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def test_add_writes_the_run_files_and_a_manifest_entry(packaged: Path) -> None:
    manifest = json.loads((packaged / "manifest.json").read_text())
    (entry,) = manifest["models"]
    files = {f["path"]: f for f in entry["files"]}
    assert set(files) == {
        "config.json",
        "model.json",
        "metrics.jsonl.gz",
        "best.safetensors",
        "eval-best-k10.json",
    }
    for path, item in files.items():
        data = (packaged / "tiny" / path).read_bytes()
        assert item["sha256"] == hashlib.sha256(data).hexdigest() and item["bytes"] == len(data)
    saved = json.loads((packaged / "tiny" / "eval-best-k10.json").read_text())
    figure = entry["figure"]
    assert (figure["nll"], figure["k"], figure["split"], figure["weights"]) == (
        saved["nll"],
        10,
        "test",
        "best",
    )
    assert figure["epoch"] == saved["epoch"] and figure["nll_se"] == saved["nll_se"]
    model = json.loads((packaged / "tiny" / "model.json").read_text())
    assert entry["data"] == {"name": "digits", "fingerprint": model["data"]["fingerprint"]}
    assert entry["quick"]["k"] == zoo.QUICK["k"] and entry["quick"]["nll"] > 0
    assert entry["evaluate_command"].startswith("vaekit evaluate zoo:tiny --k 10 --weights best")
    assert entry["train_command"] == "vaekit train --config zoo/tiny/config.json --out runs/tiny"
    # The zoo's folder is marked read-only for every command's --out.
    assert (packaged / ".vaekit-read-only").is_file()


def test_load_by_name_from_another_directory(zoo_env: Path, tmp_path: Path) -> None:
    before = _snapshot(zoo_env)
    run = vaekit.load("zoo:tiny")
    entry = zoo.find_entry("tiny", zoo.read_manifest())
    assert run.zoo == "zoo:tiny" and run.dir == tmp_path / "cache" / "zoo" / "tiny"
    assert (run.weights, run.weights_epoch) == ("best", entry["figure"]["epoch"])
    assert run.encode(torch.rand(3, 64)).mean.shape == (3, 2)
    # The history, kept gzipped in the zoo, is the run's own in the cache.
    source = Path(zoo.find_entry("tiny", zoo.read_manifest())["packaged"]["from"])
    assert (run.dir / "metrics.jsonl").read_bytes() == (source / "metrics.jsonl").read_bytes()
    assert len(run.metrics) == 2
    assert _snapshot(zoo_env) == before


def test_outputs_go_to_the_cache_never_into_the_zoo(zoo_env: Path, tmp_path, capsys) -> None:
    before = _snapshot(zoo_env)
    cache = tmp_path / "cache" / "zoo" / "tiny"
    assert main(["sample", "zoo:tiny", "--n", "4"]) == 0
    out, err = capsys.readouterr()
    assert f"wrote {cache / 'samples.png'}" in out and "never into the zoo" in err
    assert main(["evaluate", "zoo:tiny", "--k", "3", "--limit", "20", "--threads", "1"]) == 0
    assert (cache / "eval-best-n20-k3.json").is_file()
    assert main(["plot", "zoo:tiny", "--which", "samples"]) == 0
    assert (cache / "plots").is_dir()
    assert main(["summary", "zoo:tiny"]) == 0
    assert "| tiny | digits |" in capsys.readouterr().out
    # --out naming the zoo (or anything in it) is refused before anything is written.
    for args in (
        ["sample", "zoo:tiny", "--out", str(zoo_env / "tiny" / "s.png")],
        ["evaluate", "zoo:tiny", "--k", "2", "--out", str(zoo_env / "e.json")],
        ["plot", "zoo:tiny", "--out", str(zoo_env)],
    ):
        assert main(args) == 2
        assert "read-only" in capsys.readouterr().err
    # A path into the zoo is the zoo's model too: loaded from the cache, written there.
    assert main(["sample", str(zoo_env / "tiny"), "--n", "3", "--draw"]) == 0
    assert f"wrote {cache / 'samples.png'}" in capsys.readouterr().out
    assert vaekit.load(zoo_env / "tiny").zoo == "zoo:tiny"
    assert _snapshot(zoo_env) == before
    # The cache's own evaluations survive the next load (only the run's files are synced).
    (cache / "eval-best-k10.json").write_text('{"mine": 1}')
    vaekit.load("zoo:tiny")
    assert json.loads((cache / "eval-best-k10.json").read_text()) == {"mine": 1}


@pytest.mark.parametrize("name", ["best.safetensors", "config.json"])
def test_a_file_whose_checksum_differs_is_refused(zoo_env: Path, capsys, name: str) -> None:
    vaekit.load("zoo:tiny")  # a good copy in the cache first: the zoo's file still decides
    path = zoo_env / "tiny" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="restore it from git") as e:
        vaekit.load("zoo:tiny")
    assert str(path) in str(e.value) and "SHA-256" in str(e.value)
    assert main(["sample", "zoo:tiny", "--n", "2"]) == 2
    assert "changed or is damaged" in capsys.readouterr().err
    path.unlink()
    with pytest.raises(zoo.ZooError, match="is missing"):
        vaekit.load("zoo:tiny")


def test_a_manifest_naming_files_outside_the_model_is_refused(zoo_env: Path, tmp_path) -> None:
    manifest = json.loads((zoo_env / "manifest.json").read_text())
    manifest["models"][0]["files"][0]["path"] = "../../elsewhere/config.json"
    (zoo_env / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(zoo.ZooError, match="not a file of its folder"):
        vaekit.load("zoo:tiny")
    assert not (tmp_path / "elsewhere" / "config.json").exists()


def test_a_changed_cache_copy_is_replaced_from_the_zoo(zoo_env: Path, tmp_path) -> None:
    first = vaekit.load("zoo:tiny")
    state = {k: v.clone() for k, v in first.model.state_dict().items()}
    weights = tmp_path / "cache" / "zoo" / "tiny" / "best.safetensors"
    shutil.copy(zoo_env / "tiny" / "config.json", weights)  # anything else
    again = vaekit.load("zoo:tiny")
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in state.items())


def test_unknown_names_get_did_you_mean(zoo_env: Path, capsys) -> None:
    with pytest.raises(UsageError, match="did you mean zoo:tiny"):
        vaekit.load("zoo:tinny")
    assert main(["evaluate", "zoo:tyni", "--k", "2"]) == 2
    assert "did you mean zoo:tiny" in capsys.readouterr().err
    assert main(["zoo", "check", "nothing-like-it"]) == 2
    assert "Its models: tiny" in capsys.readouterr().err
    assert main(["train", "--resume", "zoo:tiny", "--epochs", "3"]) == 2
    assert "vaekit train --config zoo/tiny/config.json" in capsys.readouterr().err


def test_no_zoo_names_both_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VAEKIT_ZOO", raising=False)
    monkeypatch.setattr(zoo_store, "_checkout_zoo", lambda: (tmp_path / "zoo", tmp_path / "pkg"))
    with pytest.raises(zoo.ZooError) as e:
        vaekit.load("zoo:bmnist_vamp")
    text = str(e.value)
    assert "$VAEKIT_ZOO is not set" in text and str(tmp_path / "zoo" / "manifest.json") in text
    assert "wheel" in text
    monkeypatch.setenv("VAEKIT_ZOO", str(tmp_path))
    with pytest.raises(zoo.ZooError, match="holds no manifest.json"):
        zoo.zoo_dir()


def test_check_quick_passes_then_fails_on_an_edited_figure(zoo_env: Path, capsys) -> None:
    assert main(["zoo", "check", "--quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok zoo:tiny (k=100") and "manifest" in out
    # The full form re-measures the stored figure at its own k.
    assert main(["zoo", "check", "tiny"]) == 0
    assert "ok zoo:tiny (k=10, test split" in capsys.readouterr().out
    manifest = json.loads((zoo_env / "manifest.json").read_text())
    manifest["models"][0]["quick"]["nll"] += 1.0
    (zoo_env / "manifest.json").write_text(json.dumps(manifest))
    assert main(["zoo", "check", "--quick", "tiny"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH zoo:tiny" in out and "-1.00" in out


def test_add_refuses_an_existing_entry_without_force(zoo_env: Path, tmp_path, capsys) -> None:
    run = Path(json.loads((zoo_env / "manifest.json").read_text())["models"][0]["packaged"]["from"])
    assert main(["zoo", "add", str(run), "tiny", "--weights", "last"]) == 2
    assert "--force" in capsys.readouterr().err
    _evaluate(run, "last")
    assert main(["zoo", "add", str(run), "tiny", "--weights", "last", "--force"]) == 0
    entry = zoo.find_entry("tiny", zoo.read_manifest())
    assert entry["figure"]["weights"] == "last"
    assert {f["path"] for f in entry["files"]} >= {"model.safetensors", "eval-k10.json"}
    assert not (zoo_env / "tiny" / "best.safetensors").exists()
    # One set of weights: the last ones, so asking for the best is refused.
    with pytest.raises(zoo.ZooError, match="drop --weights best"):
        vaekit.load("zoo:tiny", weights="best")
    assert vaekit.load("zoo:tiny").weights == "last"
    # A figure must be of the whole test split with the weights shipped.
    (run / "eval-n20.json").write_text(json.dumps({"nll": 1.0, "split": "test", "n": 20}))
    assert main(["zoo", "add", str(run), "other", "--eval", str(run / "eval-n20.json")]) == 2
    assert "cannot give the zoo's figure" in capsys.readouterr().err


@pytest.mark.parametrize("weights", ["last", "best"])
def test_a_run_with_a_prior_stage_ships_both_stages(tmp_path, monkeypatch, weights) -> None:
    """Either weights of the prior stage ship; with the best ones the stage has no
    model.safetensors, and the zoo's copy must still count as a run with a prior stage."""
    from vaekit.stages import train_prior

    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    zoo.new_zoo(tmp_path / "zoo")
    monkeypatch.setenv("VAEKIT_ZOO", str(tmp_path / "zoo"))
    run = train_tiny(
        tmp_path / "vq",
        "model.latent_dim=8",
        "model.encoder={name: conv, channels: [8, 8], grid: true}",
        "model.posterior={name: vq, codes: 8, code_dim: 2}",
        "model.prior=categorical",
        "train.epochs=1",
        "data.valid_fraction=0.2",  # so that the prior stage keeps best weights
    )
    train_prior(
        run,
        epochs=1,
        overrides=["model.prior.hidden=8", "model.prior.layers=2"],
        progress=False,
        log=open(os.devnull, "w"),  # noqa: SIM115
    )
    _evaluate(run / "prior", weights, k=1)
    entry = zoo.add_run(run, "vq", weights=weights)
    paths = {f["path"] for f in entry["files"]}
    shipped = "prior/model.safetensors" if weights == "last" else "prior/best.safetensors"
    assert {"model.safetensors", shipped, "prior/stage.json"} <= paths
    assert entry["figure"]["stage"] == "prior"
    assert "--stage prior --epochs 1" in entry["train_command"]
    assert "--set model.prior.layers=2" in entry["train_command"]
    loaded = vaekit.load("zoo:vq")
    assert loaded.stage == "prior" and loaded.zoo == "zoo:vq"
    assert loaded.dir == tmp_path / "cache" / "zoo" / "vq" / "prior"
    assert vaekit.load("zoo:vq", stage="model").stage == "model"


def _tables_root(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "docs" / "guides").mkdir(parents=True)
    (root / "README.md").write_text(
        "# x\n\n<!-- zoo-table:digits:begin -->\nold\n<!-- zoo-table:digits:end -->\nafter\n"
    )
    (root / "docs" / "guides" / "page.md").write_text(
        "intro\n<!-- zoo-table:all:begin -->\n<!-- zoo-table:all:end -->\n"
        "<!-- zoo-table:fashion-mnist:begin -->\n<!-- zoo-table:fashion-mnist:end -->\n"
    )
    return root


def test_tables_are_generated_from_the_manifest(zoo_env: Path, tmp_path, capsys) -> None:
    root = _tables_root(tmp_path)
    assert main(["zoo", "table", "--check", "--root", str(root)]) == 1
    assert "stale" in capsys.readouterr().out
    assert main(["zoo", "table", "--root", str(root)]) == 0
    readme = (root / "README.md").read_text()
    figure = zoo.find_entry("tiny", zoo.read_manifest())["figure"]
    row = next(line for line in readme.splitlines() if "`zoo:tiny`" in line)
    assert f"{figure['nll']:.2f} ± {figure['nll_se']:.2f}" in row and "best, epoch" in row
    assert readme.endswith("<!-- zoo-table:digits:end -->\nafter\n") and "old" not in readme
    page = (root / "docs" / "guides" / "page.md").read_text()
    assert "`zoo:tiny`" in page and "(no models of this table in the zoo yet)" in page
    assert main(["zoo", "table", "--check", "--root", str(root)]) == 0
    # A figure that changes makes the tables stale: they cannot drift from the manifest.
    manifest = json.loads((zoo_env / "manifest.json").read_text())
    manifest["models"][0]["figure"]["nll"] += 0.5
    (zoo_env / "manifest.json").write_text(json.dumps(manifest))
    assert main(["zoo", "table", "--check", "--root", str(root)]) == 1
    assert zoo.update_tables(root, check=True) == [root / "README.md", root / "docs/guides/page.md"]


def test_the_repositorys_tables_are_in_sync_with_its_manifest() -> None:
    manifest = zoo.read_manifest(REPO / "zoo")
    assert zoo.update_tables(REPO, check=True, manifest=manifest) == [], (
        "a zoo table in README.md or docs/ is stale: run `vaekit zoo table`"
    )
    assert (REPO / "zoo" / ".vaekit-read-only").is_file()


def test_the_repositorys_zoo_files_match_their_checksums_and_budget() -> None:
    manifest = zoo.read_manifest(REPO / "zoo")
    for entry in manifest["models"]:
        for item in entry["files"]:
            zoo_store._verified(REPO / "zoo", entry["name"], item)  # a ZooError names the file
    size = sum(p.stat().st_size for p in (REPO / "zoo").rglob("*") if p.is_file())
    assert size <= zoo.SIZE_BUDGET, f"the zoo holds {size / 2**20:.1f} MB: it lives in git"


def test_the_published_figure_is_the_most_specific_reference() -> None:
    from vaekit.config import load_config

    # The VampPrior VAE matches "a VAE with a diagonal Gaussian posterior" too (Rezende &
    # Mohamed's 89.9), which is not its row.
    assert [p["value"] for p in zoo._published(load_config("bmnist_vamp", []))] == [85.57]
    dreg = load_config("bmnist_iwae_k5_tomczak", ["objective.gradient=dreg"])
    assert [(p["value"], p["source"]) for p in zoo._published(dreg)] == [
        (87.63, "Burda et al. 2016")
    ]
    assert zoo._published(load_config("bmnist_gumbel", [])) == []


SHIPPED = ("bmnist_vae_tomczak", "bmnist_gumbel")


def test_shipped_models_re_measure_their_quick_figure(
    shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    """CI's quick check of two small shipped models (k = 100 on 1,000 test examples)."""
    names = [e["name"] for e in zoo.read_manifest(REPO / "zoo")["models"]]
    shipped = [n for n in SHIPPED if n in names]
    if not shipped:
        pytest.skip(f"zoo/manifest.json holds none of {', '.join(SHIPPED)} yet")
    monkeypatch.setenv("VAEKIT_ZOO", str(REPO / "zoo"))
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["zoo", "check", "--quick", *shipped]) == 0, capsys.readouterr().out


def test_every_zoo_command_and_option_is_described() -> None:
    import argparse

    from vaekit.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    missing = []
    for name, command in subcommands(subcommands(build_parser())["zoo"]).items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"zoo {name} {action.dest}: no help")
            elif action.default not in (None, False, []) and "default" not in action.help:
                missing.append(f"zoo {name} {action.dest}: help does not show its default")
    assert not missing, "\n".join(missing)
