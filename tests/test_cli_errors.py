"""Every command, given bad numbers, wrong files or Ctrl-C, says what to do instead of
printing a traceback; --out's extension chooses the format that is written; and the
smaller things a new user meets: readable image grids, a summary that skips strays,
help for every command and option."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import train_tiny
from PIL import Image

from vaekit.cli import build_parser, main


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    vectors = root / "vectors.npy"  # data that are not images
    np.save(vectors, np.random.default_rng(0).random((64, 6)).astype(np.float32))
    return {
        "plain": train_tiny(root / "plain"),
        "cvae": train_tiny(root / "cvae", "model.conditional=true"),
        "vectors": train_tiny(
            root / "vectors", f"data.name={vectors}", "model.likelihood=gaussian", "data.limit=0"
        ),
    }


def _fails(args: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    """Run the command line in-process; it must exit with ``code`` and no traceback."""
    try:
        status = main(args)
    except SystemExit as e:  # argparse's usage errors
        status = e.code
    err = capsys.readouterr().err
    assert status == code, err
    assert "Traceback" not in err and "error:" in err, err
    return err


BAD_NUMBERS = [
    (["sample", "{plain}", "--n", "0"], "--n: must be at least 1, got 0"),
    (["sample", "{plain}", "--n", "-3"], "--n: must be at least 1"),
    (["sample", "{plain}", "--seed", str(2**70)], "--seed: must be in 0..4294967295"),
    (["sample", "{cvae}", "--label", "12"], "--label must be a class of this model, 0..9"),
    (["sample", "{cvae}", "--label", "-1"], "--label must be a class of this model, 0..9"),
    (["reconstruct", "{plain}", "--n", "0"], "--n: must be at least 1"),
    (["reconstruct", "{plain}", "--n", "-2"], "--n: must be at least 1"),
    (["compare", "{plain}", "{cvae}", "--n", "0"], "--n: must be at least 1"),
    (["compare", "{plain}", "{cvae}", "--n", "-1"], "--n: must be at least 1"),
    (["plot", "{plain}", "--dpi", "0"], "--dpi: must be in 1..1000"),
    (["plot", "{plain}", "--dpi", "100000"], "--dpi: must be in 1..1000"),
    (["curves", "{plain}", "--dpi", "-1"], "--dpi: must be in 1..1000"),
    (["evaluate", "{plain}", "--threads", "100000"], "--threads: must be in 1..4096"),
    (["evaluate", "{plain}", "--threads", "0"], "--threads: must be in 1..4096"),
    (["report", "{plain}", "--k", "0"], "--k: must be at least 1"),
    (["report", "{plain}", "--threads", "-1"], "--threads: must be in 1..4096"),
    (["explore", "{plain}", "--threads", "-1"], "--threads: must be in 0..4096"),
    (["sample", "{plain}", "--n", "lots"], "--n: expected an integer, got 'lots'"),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS]
)
def test_bad_numbers_are_usage_errors(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert message in _fails([a.format(**runs) for a in args], capsys)


def test_wrong_files_and_folders(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = str(runs["plain"])
    err = _fails(["sample", str(runs["plain"] / "metrics.jsonl")], capsys)
    assert "is a file, not a run directory" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        (broken / name).write_bytes((runs["plain"] / name).read_bytes())
    (broken / "model.json").write_text('{"data": 1}')
    assert "no valid data.shape" in _fails(["sample", str(broken)], capsys)
    # --out a folder where a file is meant (and the reverse for plot).
    for args in (
        ["sample", plain, "--out", str(tmp_path)],
        ["summary", plain, "--out", str(tmp_path)],
        ["report", plain, "--out", str(tmp_path)],
        ["evaluate", plain, "--k", "2", "--out", str(tmp_path)],
    ):
        assert f"--out {tmp_path} is a folder; name a file in it" in _fails(args, capsys)
    (tmp_path / "notes.txt").write_text("mine")
    err = _fails(["plot", plain, "--out", str(tmp_path / "notes.txt")], capsys)
    assert "plot writes one PNG per figure into a folder" in err
    # A file where a folder is needed: the operating system's message, no traceback.
    inside_a_file = str(tmp_path / "notes.txt" / "x.md")
    assert "notes.txt: " in _fails(["summary", plain, "--out", inside_a_file], capsys, 1)


def test_running_out_of_memory_is_a_message(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10^12 samples: torch's allocator refuses at once.
    err = _fails(["sample", str(runs["plain"]), "--n", str(10**12), "--out", "x.npy"], capsys, 1)
    assert "out of memory" in err and "a smaller --n" in err


def test_one_usage_error_class_said_once_by_main(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The library raises a VaekitError where a user's request is at fault, and main() says
    # it once, with exit status 2; no command catches ValueError on its own any more.
    import vaekit
    from vaekit.cli import CommandError
    from vaekit.errors import UsageError
    from vaekit.evaluate import evaluate_run
    from vaekit.parts import ObjectiveAbilities
    from vaekit.plots import compare_curves, run_figures

    run = vaekit.load(runs["plain"])
    assert issubclass(CommandError, UsageError)
    with pytest.raises(UsageError, match="must be >= 1"):
        evaluate_run(run, k=0)
    with pytest.raises(UsageError, match="unknown figure"):
        run_figures(run, which=["nope"])
    with pytest.raises(UsageError, match="not a conditional model"):
        run_figures(run, which=["class_grid"])
    with pytest.raises(UsageError, match="no valid scores"):
        compare_curves({"a": (run.metrics, ObjectiveAbilities())}, "valid")
    plain = str(runs["plain"])
    assert "unknown figure(s) ['nope']" in _fails(["plot", plain, "--which", "nope"], capsys)
    assert "has no valid scores" in _fails(["curves", plain, "--split", "valid"], capsys)
    err = _fails(["train", "--resume", plain, "--seed", "3"], capsys)
    assert "only --epochs, --patience, --threads and --device may change" in err
    assert "--port must be in 0..65535" in _fails(["explore", plain, "--port", "70000"], capsys)

    # A ValueError that is no user's mistake is a bug: it is not passed off as one.
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr("vaekit.plots.run_figures", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["plot", plain])


def test_importing_the_command_line_does_not_load_torch() -> None:
    # torch loads inside the commands, where main() handles a Ctrl-C.
    code = "import sys, vaekit.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# `python -m vaekit ARGS` with a pause inside `import torch`: the first torch submodule
# imported once libtorch (torch._C) is loaded waits, having said so on stdout, for the
# test's SIGINT. Polling /proc/PID/maps for libtorch and then signalling raced the child:
# when the test process was held up for seconds the signal landed after the import (in
# training, which stops gracefully and says so on stdout), so the test failed now and then.
_PAUSE_IN_TORCH_IMPORT = """
import os, runpy, sys, time
class PauseInTorch:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torch.") and "torch._C" in sys.modules:
            sys.meta_path.remove(self)
            os.write(1, b"inside import torch\\n")
            time.sleep(30)  # the SIGINT ends this with a KeyboardInterrupt
        return None
sys.meta_path.insert(0, PauseInTorch())
runpy.run_module("vaekit", run_name="__main__", alter_sys=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_ctrl_c_while_torch_loads_is_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSE_IN_TORCH_IMPORT, "train", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal starts it: a suite run in the background (`make test &`, a CI
        # runner) inherits SIGINT ignored, and Python then installs no Ctrl-C handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    started = time.monotonic()
    said = proc.stdout.readline()  # the child is now asleep inside `import torch`
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a swallowed interrupt would go on to train: leave nothing behind
    assert said == "inside import torch\n", (said, out, err)
    assert time.monotonic() - started < 25, "the SIGINT did not end the pause"
    assert "Traceback" not in err and "interrupted" in err, err
    assert proc.returncode == 130
    assert not (tmp_path / "run").exists()


# -- --out: the extension chooses the format ------------------------------------------------


def test_sample_and_reconstruct_write_the_format_of_the_extension(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = str(runs["plain"])
    out = tmp_path / "out"
    for cmd in ("sample", "reconstruct"):
        n = "8"
        assert main([cmd, plain, "--n", n, "--out", str(out / f"{cmd}.jpg")]) == 0
        assert (out / f"{cmd}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not CSV text
        assert main([cmd, plain, "--n", n, "--out", str(out / f"{cmd}.png")]) == 0
        assert (out / f"{cmd}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert main([cmd, plain, "--n", n, "--out", str(out / f"{cmd}.npy")]) == 0
        assert main([cmd, plain, "--n", n, "--out", str(out / f"{cmd}.csv")]) == 0
        err = _fails([cmd, plain, "--out", str(out / f"{cmd}.xyz")], capsys)
        assert "unknown extension .xyz" in err and ".png, .jpg, .jpeg, .npy, .csv" in err
        assert not (out / f"{cmd}.xyz").exists()
        # Data that are not images cannot be written as one.
        err = _fails([cmd, str(runs["vectors"]), "--out", str(out / "v.png")], capsys)
        assert "not images" in err
    assert np.load(out / "sample.npy").shape == (8, 1, 8, 8)
    assert np.load(out / "reconstruct.npy").shape == (2, 8, 1, 8, 8)  # originals, reconstructions
    assert (out / "sample.csv").read_text().startswith("x0,x1,")
    assert (out / "reconstruct.csv").read_text().splitlines()[0].endswith(",recon63")
    capsys.readouterr()


def test_encode_takes_its_format_from_the_extension(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = str(runs["plain"])
    assert main(["encode", plain, "--out", str(tmp_path / "z.csv")]) == 0
    assert (tmp_path / "z.csv").read_text().startswith("mean_0,mean_1,var_0,var_1,label")
    assert main(["encode", plain, "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z_mean.npy").shape == (359, 2)
    assert main(["encode", plain, "--out", str(tmp_path / "p"), "--format", "csv"]) == 0
    assert (tmp_path / "p.csv").is_file()
    err = _fails(["encode", plain, "--out", str(tmp_path / "z.csv"), "--format", "npy"], capsys)
    assert "is a .csv file but --format is npy" in err
    assert "unknown extension .txt" in _fails(["encode", plain, "--out", "z.txt"], capsys)
    assert not any(p.name.startswith("z.csv_") or p.suffix == ".txt" for p in tmp_path.iterdir())


def test_figures_refuse_an_extension_matplotlib_cannot_write(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = str(runs["plain"])
    for args in (["compare", plain, plain], ["curves", plain, "--split", "test"]):
        err = _fails([*args, "--out", str(tmp_path / "f.xyz")], capsys)
        assert "unknown extension .xyz" in err and ".svg" in err
    assert main(["curves", plain, "--split", "test", "--out", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob("*.xyz"))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_no_out_writes_over_a_run_s_own_files(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command that takes --out refuses one that names a file (or folder) the run
    directory owns, however it is spelt, before it writes anything."""
    plain, cvae = runs["plain"], runs["cvae"]
    link = tmp_path / "link.json"
    link.symlink_to(plain / "model.json")
    relative = os.path.relpath(plain / "metrics.jsonl")
    cases = [
        ["evaluate", plain, "--k", "2", "--out", plain / "model.json"],
        ["evaluate", plain, "--k", "2", "--out", f"{plain}/./metrics.jsonl"],
        ["evaluate", plain, "--k", "2", "--out", relative],
        ["evaluate", plain, "--k", "2", "--out", link],
        ["evaluate", plain, "--disentanglement", "--out", plain / "config.json"],
        ["sample", plain, "--out", plain / "model.safetensors"],
        ["sample", plain, "--out", plain / "checkpoints" / "epoch-0002" / "x.png"],
        ["reconstruct", plain, "--out", plain / "best.safetensors"],
        ["encode", plain, "--out", plain / "checkpoints" / "z"],
        ["encode", plain, "--out", plain / "samplers" / "z.csv"],
        ["score", plain, "digits", "--out", plain / "checkpoints" / "s"],
        ["plot", plain, "--out", plain / "checkpoints"],
        ["report", plain, "--out", plain / ".lock"],
        ["summary", plain, "--out", cvae / "model.json"],
        ["compare", plain, cvae, "--out", cvae / "metrics.jsonl"],
        ["curves", plain, "--split", "test", "--out", f"{plain}/../{plain.name}/metrics.jsonl"],
        ["traversals", plain, "--out", plain / "prior"],
        ["quality", plain, "--out", plain / "config.json"],
        ["train", "--out", plain / "checkpoints" / "new"],
    ]
    before = {r: _digests(r) for r in (plain, cvae)}
    for args in cases:
        err = _fails([str(a) for a in args], capsys)
        assert "vaekit never writes over a run's own files" in err, (args, err)
        assert " of the run " in err, (args, err)
    assert {r: _digests(r) for r in (plain, cvae)} == before
    assert not (plain / "checkpoints" / "new").exists()
    # Every command that takes --out is among the cases above (a new one must join them).
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    takes_out = {
        name
        for name, p in sub.choices.items()
        if any("--out" in a.option_strings for a in p._actions)
    }
    assert takes_out == {str(args[0]) for args in cases}
    # Results of the run's own kind beside its files are fine, and a run's second stage is a
    # run of its own whose free names are free.
    assert (
        main(
            ["evaluate", str(plain), "--k", "2", "--limit", "8", "--out", str(plain / "mine.json")]
        )
        == 0
    )
    capsys.readouterr()


def test_the_python_api_writes_over_no_run_s_own_files(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the command line's --out was checked: vaekit.fit(cfg, "RUN/checkpoints") started
    # a run inside RUN's checkpoints, save_figures and save_image wrote into any folder.
    from conftest import tiny_config

    import vaekit
    from vaekit.images import save_image
    from vaekit.plots import save_figures

    plain = runs["plain"]
    before = _digests(plain)
    cfg = tiny_config("train.epochs=1")
    for target in (plain / "checkpoints" / "new", plain / "model.json", plain / "prior"):
        with pytest.raises(vaekit.RunError, match="never writes over a run's own files"):
            vaekit.fit(cfg, target, progress=False, log=io.StringIO())
    with pytest.raises(vaekit.RunError, match="never writes over a run's own files"):
        save_figures({}, plain / "samplers" / "figures")
    with pytest.raises(vaekit.RunError, match="never writes over a run's own files"):
        save_image(np.zeros((8, 8)), plain / "checkpoints" / "x.png")
    assert _digests(plain) == before
    assert not (plain / "checkpoints" / "new").exists() and not (plain / "prior").exists()
    assert not (plain / "samplers").exists()
    assert save_figures({}, plain / "plots") == []  # the run's plots/ folder is free


def test_resume_of_a_missing_run_says_how_to_make_one_from_where_it_was_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # fit(None, DIR, resume=True) on nothing suggested `vaekit train --out DIR`.
    import vaekit

    missing = tmp_path / "missing"
    with pytest.raises(vaekit.RunError, match="does not exist") as e:
        vaekit.fit(None, missing, resume=True)
    assert f"`vaekit.fit(config_or_model, {str(missing)!r})`" in str(e.value)
    assert "vaekit train" not in str(e.value)
    err = _fails(["train", "--resume", str(missing)], capsys)
    assert f"`vaekit train --out {missing}`" in err and "vaekit.fit" not in err
    assert not missing.exists()


def test_evaluate_needs_two_examples_and_says_so_first(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # --limit 1 failed inside the active units' count (and its standard errors were NaN).
    plain = runs["plain"]
    err = _fails(["evaluate", str(plain), "--k", "2", "--limit", "1"], capsys)
    assert "limit=1 keeps 1 example(s); an evaluation needs 2 or more" in err
    assert not (plain / "eval-n1-k2.json").exists()


def test_train_out_naming_a_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    somefile = tmp_path / "somefile"
    somefile.write_text("mine")
    err = _fails(["train", "-c", "demo", "--out", str(somefile)], capsys)
    assert f"cannot use {somefile} as a run directory: {somefile} is a file, not a folder" in err
    assert "cannot lock" not in err
    err = _fails(["train", "-c", "demo", "--out", str(somefile / "run")], capsys)
    assert f"{somefile}, above it, is a file" in err
    assert somefile.read_text() == "mine"


# -- the smaller things ------------------------------------------------------------------


def test_a_missing_split_is_a_usage_error(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # It was SystemExit with a string: exit status 1.
    for cmd in ("encode", "reconstruct"):
        err = _fails([cmd, str(runs["plain"]), "--split", "valid"], capsys)
        assert "dataset digits has no 'valid' split" in err and "use train or test" in err


def test_summary_skips_what_is_not_a_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray, empty = tmp_path / "summary.md", tmp_path / "empty"
    stray.write_text("an earlier table")
    empty.mkdir()
    assert main(["summary", str(runs["plain"]), str(stray), str(empty), str(runs["cvae"])]) == 0
    out, err = capsys.readouterr()
    assert "| plain |" in out and "| cvae |" in out
    assert f"warning: skipped {stray}" in err and f"warning: skipped {empty}" in err
    err = _fails(["summary", str(stray), str(empty)], capsys)
    assert "none of the 2 arguments is a run directory" in err
    assert "is a file, not a run directory" in _fails(["summary", str(stray)], capsys)


def test_image_grids_are_readable(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = str(runs["plain"])
    # 8x8 digits were written 2x: 16 samples in 146 px. Now each is at least 56 px.
    assert main(["sample", plain, "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as im:
        assert im.size[0] >= 4 * 56 and im.size[1] >= 4 * 56
    # Reconstructions: a left margin labels the rows of originals and of reconstructions.
    assert main(["reconstruct", plain, "--n", "8", "--out", str(tmp_path / "r.png")]) == 0
    with Image.open(tmp_path / "r.png") as im:
        pixels = np.asarray(im.convert("L"))
    grid_width = 8 * (8 + 1) * 7 + 7  # 8 images of 8 px and 1 px gaps, all 7x
    margin = pixels[:, : pixels.shape[1] - grid_width]
    assert margin.shape[1] >= 40
    half = pixels.shape[0] // 2
    # Text in each band: "original" on the top row, "reconstruction" (wider) below it.
    top_ink = np.nonzero((margin[:half] < 128).any(axis=0))[0]
    bottom_ink = np.nonzero((margin[half:] < 128).any(axis=0))[0]
    assert len(top_ink) and len(bottom_ink) and bottom_ink.max() > top_ink.max()
    capsys.readouterr()


def test_every_command_and_option_is_described() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in [("vaekit", parser), *sub.choices.items()]:
        if not command.description:
            missing.append(f"{name}: no description")
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{what}: no help")
            # A default that is a value must be shown, e.g. "(default: 64)".
            elif action.default not in (None, False, []) and "default" not in action.help:
                missing.append(f"{what}: help does not show its default {action.default!r}")
    assert not missing, "\n".join(missing)


def test_the_names_a_run_directory_owns_are_one_list() -> None:
    # What --out may not name: every name the trainer, the second stage and the samplers
    # write into a run directory is in rundir.RUN_OWNED.
    from vaekit.rundir import LOCK_FILE, RUN_OWNED
    from vaekit.samplers import SAMPLERS_DIR
    from vaekit.stages import PRIOR_STAGE
    from vaekit.train.checkpoint import TRAINER_FILES

    assert {SAMPLERS_DIR, PRIOR_STAGE, LOCK_FILE, "checkpoints", *TRAINER_FILES} <= set(RUN_OWNED)


def _command(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_help_lists_come_from_the_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hand-kept lists fall behind: train --help named 5 of the 7 datasets.
    from vaekit.data import NAMED
    from vaekit.quality import FEATURES
    from vaekit.samplers import SAMPLERS

    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no word is broken

    def text(name: str) -> str:
        return _command(name).format_help()

    assert all(name in text("train") for name in NAMED), text("train")
    assert "dsprites-synthetic" in text("train")
    fitted = [n for n, s in SAMPLERS.items() if s.needs_fit]
    for name, names in (("sample", list(SAMPLERS)), ("fit-sampler", fitted)):
        assert all(f"{n}: {SAMPLERS[n].summary}" in text(name) for n in names), text(name)
        action = next(a for a in _command(name)._actions if "--sampler" in a.option_strings)
        assert list(action.choices or []) == names
    assert all(f"{n}: {s.summary}" in text("quality") for n, s in SAMPLERS.items())
    assert all(name in text("quality") for name in FEATURES)
    with pytest.raises(SystemExit):  # the prior is not fitted
        build_parser().parse_args(["fit-sampler", "RUN", "--sampler", "prior"])


def test_report_says_every_file_it_writes(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # report saved RUN/eval-k2.json beside the report without a word.
    plain, out = runs["plain"], tmp_path / "r.html"
    assert main(["report", str(plain), "--k", "2", "--out", str(out)]) == 0
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert wrote == [f"wrote {plain / 'eval-k2.json'}", f"wrote {out}"]
