"""The command line parses and prints; the library does the work: each command a module of
vaekit.commands that is imported only when it runs, --out defined once, and what the
commands wrote by hand now library functions (Run.encode_split, the reconstruction grid,
vaekit.export) that give the same files."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_tiny
from PIL import Image

import vaekit
from vaekit import export
from vaekit.cli import build_parser, main
from vaekit.commands import COMMANDS
from vaekit.data import limit_split
from vaekit.errors import UsageError
from vaekit.evaluate import posterior_moments
from vaekit.images import display_scale, reconstruction_grid, save_image
from vaekit.rundir import RunError

SRC = Path(vaekit.__file__).parent


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    return vaekit.load(train_tiny(tmp_path_factory.mktemp("run") / "r", "train.epochs=1"))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# -- the parser ------------------------------------------------------------------------------


def test_out_is_defined_once() -> None:
    # One definition (vaekit.commands.args.add_out) that every command's --out comes from.
    defined = {
        str(p.relative_to(SRC)): len(re.findall(r'add_argument\(\s*"--out"', p.read_text()))
        for p in SRC.rglob("*.py")
    }
    assert {k: v for k, v in defined.items() if v} == {"commands/args.py": 1}
    writers = {
        name: next(a for a in p._actions if "--out" in a.option_strings)
        for name, p in _subcommands(build_parser()).items()
        if any("--out" in a.option_strings for a in p._actions)
    }
    assert set(writers) == set(COMMANDS) - {"explore", "parts", "fit-sampler", "zoo"}
    for name, action in writers.items():
        assert action.default is None and action.dest == "out", name
        assert re.fullmatch(r".+ \(default: .+\)", action.help or "", re.S), (name, action.help)


def test_every_command_has_its_module_and_the_full_parser_every_argument() -> None:
    commands = _subcommands(build_parser())
    assert list(commands) == list(COMMANDS)
    for name, parser in commands.items():
        assert parser.description, name
        assert "-h" in parser._option_string_actions, name
    # The help lists come from the registries, filled in when the parser is built.
    train_help = commands["train"].format_help()
    assert "binarized-mnist" in train_help and "{datasets}" not in train_help
    assert "gmm:" in commands["fit-sampler"].format_help()


def _modules_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_command_imports_its_own_module_alone() -> None:
    listing = _modules_after(
        "import contextlib, io, json, sys\nfrom vaekit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    assert "torch" not in listing
    assert [m for m in listing if m.startswith("vaekit.commands.")] == ["vaekit.commands.args"]
    train = _modules_after(
        "import contextlib, io, json, sys\nfrom vaekit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['train', '--help'])"
    )
    assert "vaekit.commands.train" in train
    assert not [m for m in train if m.startswith(("matplotlib", "sklearn", "vaekit.plots"))]
    assert "vaekit.commands.plot" not in train


# -- Run.encode_split and the export module --------------------------------------------------


def test_encode_split_is_what_vaekit_encode_writes(run: vaekit.Run, tmp_path: Path) -> None:
    ds = run.dataset()
    enc = run.encode_split("test")
    assert list(enc) == ["mean", "var", "labels"]  # no codes: a continuous model
    moments = posterior_moments(run.model, ds.test.x)
    assert np.array_equal(enc["mean"], moments.mean.numpy())
    assert np.array_equal(enc["var"], moments.variance.numpy())
    assert np.array_equal(enc["labels"], ds.test.y.numpy())
    # Batches change the float sums, not the numbers.
    assert np.allclose(run.encode_split("test", batch_size=7)["mean"], enc["mean"], atol=1e-6)
    before = torch.get_num_threads()
    assert main(["encode", str(run.dir), "--out", str(tmp_path / "cli"), "--threads", "2"]) == 0
    assert torch.get_num_threads() == before  # --threads holds for the command only
    files = export.write_encoding(tmp_path / "lib", enc, "npy")
    assert [f.name for f in files] == ["lib_mean.npy", "lib_var.npy", "lib_labels.npy"]
    for key in enc:
        assert np.array_equal(
            np.load(tmp_path / f"cli_{key}.npy"), np.load(f"{tmp_path}/lib_{key}.npy")
        )
    (csv,) = export.write_encoding(tmp_path / "lib", enc, "csv")
    assert csv.read_text().splitlines()[0] == "mean_0,mean_1,var_0,var_1,label"
    with pytest.raises(UsageError, match="split must be train, valid or test"):
        run.encode_split("all")


def test_export_checks_the_path_before_writing(run: vaekit.Run, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="never writes over a run's own files"):
        export.write_array(run.dir / "model.safetensors", np.zeros(3), "npy")
    with pytest.raises(UsageError, match="is a folder; name a file in it"):
        export.write_text(tmp_path, "x")
    with pytest.raises(UsageError, match="unknown extension .txt"):
        export.examples_file(tmp_path / "s.txt", run, "samples")
    with pytest.raises(UsageError, match="is a .csv file but fmt is npy"):
        export.encoding_prefix(tmp_path / "z.csv", "npy")
    with pytest.raises(RunError, match="NaN or infinite"):
        export.check_finite(run, torch.tensor([0.0, float("nan")]), "samples")
    x = run.sample(3)
    out = export.write_examples(tmp_path / "s.csv", run, x)
    rows = out.read_text().splitlines()
    assert rows[0].startswith("x0,x1,") and len(rows) == 4
    assert export.write_examples(tmp_path / "s.png", run, x).read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left beside


# -- reconstructions -------------------------------------------------------------------------


def test_reconstruct_draws_seeded_examples_of_every_class(run: vaekit.Run, tmp_path: Path) -> None:
    test = run.dataset().test
    order = torch.argsort(test.y, stable=True)  # as a class-sorted file would hold them
    assert main(["reconstruct", str(run.dir), "--n", "10", "--out", str(tmp_path / "r.npy")]) == 0
    drawn = np.load(tmp_path / "r.npy")
    assert drawn.shape == (2, 10, *run.data_shape)
    assert np.array_equal(drawn[0], limit_split(test, 10, 0).x.numpy())
    assert len(set(limit_split(test, 10, 0).y.tolist())) > 1
    assert len(set(test.y[order][:10].tolist())) == 1  # what the first 10 of sorted data hold
    args = ["reconstruct", str(run.dir), "--n", "10", "--first", "--out", str(tmp_path / "f.npy")]
    assert main(args) == 0
    assert np.array_equal(np.load(tmp_path / "f.npy")[0], test.x[:10].numpy())
    args = [
        "reconstruct",
        str(run.dir),
        "--n",
        "10",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "s.npy"),
    ]
    assert main(args) == 0
    assert np.array_equal(np.load(tmp_path / "s.npy")[0], limit_split(test, 10, 3).x.numpy())


def test_vaekit_reconstruct_writes_the_shared_grid(run: vaekit.Run, tmp_path: Path) -> None:
    x = run.dataset().test.x[:20]
    xr = run.reconstruct(x)
    grid, labels = reconstruction_grid(x, xr, run.data_shape)
    assert labels == ["original", "reconstruction"] * 2  # 16 a row: 20 examples, two pairs
    h, w = run.data_shape[-2:]
    assert grid.shape == (4 * (h + 1) + 1, 16 * (w + 1) + 1)
    assert np.all(grid[2 * (h + 1) + 1 :, 4 * (w + 1) + 1 :] == 1.0)  # the last pair padded white
    args = ["reconstruct", str(run.dir), "--n", "20", "--first", "--out", str(tmp_path / "r.png")]
    assert main(args) == 0
    save_image(grid, tmp_path / "lib.png", scale=display_scale(run.data_shape), row_labels=labels)
    cli, lib = (np.asarray(Image.open(tmp_path / n)) for n in ("r.png", "lib.png"))
    assert np.array_equal(cli, lib)
