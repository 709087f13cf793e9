"""The README's snippets work as printed.

Every ```python block is executed, in order, in a folder holding what the blocks refer to
(``runs/demo``, ``runs/ae``, ``my_images.npy``, the ``myparts`` module that the "parts of
your own" blocks spell out); trainings are cut to one epoch of a few hundred examples (a
resume to one more) by a patch of the trainer's setup, so that the blocks' own text runs.
Every ``vaekit ...`` line of a ```bash block is parsed by the real parser; a ``train``
line runs the command up to training (its config found, every ``--set`` a known setting).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import train_tiny
from test_parts_user import _readme_parts

from vaekit.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def fenced_blocks(lang: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every ```lang block of the README."""
    text = README.read_text()
    out = []
    for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S):
        out.append((text[: m.start()].count("\n") + 1, m.group(1)))
    return out


def vaekit_commands(block: str) -> list[list[str]]:
    """The arguments of every ``vaekit`` (or ``python -m vaekit``) command of a shell block."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Za-z_]+=", words[0]):  # VAR=value before the command
            words.pop(0)
        if words[:1] == ["vaekit"]:
            out.append(words[1:])
        elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["vaekit"]:
            out.append(words[words.index("-m") + 2 :])
    return out


@pytest.fixture
def myparts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "myparts.py").write_text(_readme_parts())
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("myparts", None)
    yield folder
    sys.modules.pop("myparts", None)


def test_the_readmes_snippets_are_found() -> None:
    assert len(fenced_blocks("python")) >= 10
    commands = [c for _, b in fenced_blocks("bash") for c in vaekit_commands(b)]
    assert ["train", "--config", "demo", "--out", "runs/demo"] in commands
    assert ["--help"] in commands  # python -m vaekit --help


def test_every_vaekit_line_of_the_readme_parses(
    myparts: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vaekit.stages
    import vaekit.train

    trained: list[Any] = []
    monkeypatch.setattr(vaekit.train, "fit", lambda *a, **k: trained.append(a))
    monkeypatch.setattr(vaekit.stages, "train_prior", lambda *a, **k: trained.append(a))
    monkeypatch.chdir(README.parent)  # configs/... paths are the repository's
    bad = []
    for line, block in fenced_blocks("bash"):
        for args in vaekit_commands(block):
            where = f"README.md:{line}: vaekit {shlex.join(args)}"
            try:
                build_parser().parse_args(args)
            except SystemExit as e:
                if e.code != 0:  # --help exits 0
                    bad.append(f"{where}: {capsys.readouterr().err.strip().splitlines()[-1]}")
                continue
            if args[0] == "train" and main(args) != 0:
                # The config resolved and every --set a known setting, or the message.
                bad.append(f"{where}: {capsys.readouterr().err.strip()}")
    assert not bad, "\n".join(bad)
    assert trained, "no train line reached training"


# -- the python blocks ---------------------------------------------------------------------


def _quick_setup(setup: Any) -> Any:
    """The trainer's setup with the run cut short: one epoch (two on resume) of at most 256
    examples, each scored on 64."""

    def quick(given: Any, run_dir: Path, resume: bool, *args: Any) -> Any:
        s = setup(given, run_dir, resume, *args)
        s.cfg.train.epochs = 2 if resume else 1
        s.cfg.train.patience = 0
        s.cfg.train.score_limit = 64
        s.cfg.data.limit = min(s.cfg.data.limit or 256, 256)
        return s

    return quick


@pytest.fixture
def workspace(
    tmp_path: Path, myparts: Path, monkeypatch: pytest.MonkeyPatch, shared_data_dir: Path
) -> Path:
    """A folder with what the README's blocks refer to, the trainer cut short, and the
    dSprites-like set drawn once (its test split, which evaluation scores whole, cut to
    1,000 images)."""
    from vaekit.data import limit_split, named
    from vaekit.disentangle import metrics
    from vaekit.train import loop

    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    train_tiny(work / "runs" / "demo")
    train_tiny(work / "runs" / "ae", "model.posterior=point", "objective.name=ae")
    rng = np.random.default_rng(0)
    np.save(work / "my_images.npy", rng.random((300, 28, 28)).round())
    monkeypatch.chdir(work)
    monkeypatch.setattr(loop, "setup", _quick_setup(loop.setup))
    drawn = named.NAMED["dsprites-synthetic"]
    cache: dict[str, Any] = {}

    def once(*args: Any) -> Any:  # drawn, not read: nothing of its fingerprint is lost
        if "ds" not in cache:
            cache["ds"] = drawn(*args)
            cache["ds"].test = limit_split(cache["ds"].test, 1000, 0)  # scored whole
        return copy.copy(cache["ds"])

    monkeypatch.setitem(named.NAMED, "dsprites-synthetic", once)
    quick = metrics.Protocol.quick(0.01)

    class QuickProtocol(metrics.Protocol):  # the default protocol's counts, a hundredth
        def __init__(self, **counts: Any) -> None:
            super().__init__(**{**dataclasses.asdict(quick), **counts})

    monkeypatch.setattr(metrics, "Protocol", QuickProtocol)
    return work


def test_every_python_block_of_the_readme_runs(workspace: Path) -> None:
    import contextlib

    import torch

    for line, block in fenced_blocks("python"):
        with contextlib.redirect_stdout(io.StringIO()), torch.random.fork_rng():
            try:
                exec(compile(block, f"README.md:{line}", "exec"), {"__name__": "readme"})
            except Exception as e:  # noqa: BLE001 - the block's own error, named by its line
                raise AssertionError(f"README.md:{line}: {type(e).__name__}: {e}") from e
