"""The snippets of the README and of every documentation page work as printed.

Every page is README.md, every ``docs/**/*.md`` and the reference pages generated at build
time (:func:`vaekit.docs_gen.pages`). Every ```python block of a page is executed, in order,
in a folder holding what the blocks refer to (``runs/demo``, ``runs/ae``, ``my_images.npy``,
the ``myparts`` module that the "Parts and data of your own" guide spells out); trainings
are cut to one epoch of a few hundred examples (a resume to one more) by a patch of the
trainer's setup, so that the blocks' own text runs. Every ``vaekit ...`` line of a ```bash
block is parsed by the real parser; a ``train`` line runs the command up to training (its
config found, every ``--set`` a known setting); a ``make`` line names a target of the
Makefile and a ``python FILE.py`` line a file of the repository.

A block that is shown but cannot run here (it needs a GPU, a download, hours) is marked by
the line ``<!-- not run: REASON -->`` just above it; every fence carries a language, so no
command escapes the checks by having none.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import train_tiny
from test_parts_user import _guide_parts

from vaekit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!-- not run:(.*?)-->")


def _generated() -> dict[str, str]:
    from vaekit.docs_gen import pages

    return pages()


def page_texts() -> dict[str, str]:
    """``{name: Markdown}`` of the README, every page under docs/ and the generated ones."""
    texts = {"README.md": README.read_text()}
    for path in sorted((ROOT / "docs").rglob("*.md")):
        texts[path.relative_to(ROOT).as_posix()] = path.read_text()
    for name, text in _generated().items():  # in place of the file that stands in for it
        texts[f"docs/{name}"] = text
    return texts


PAGES = page_texts()


def fences(text: str) -> list[tuple[int, str, str, str | None]]:
    """``(line, info string, text, reason it is not run or None)`` of every fenced block."""
    out = []
    for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, flags=re.M | re.S):
        before = text[: m.start()].rstrip("\n").rpartition("\n")[2]
        skip = SKIP.fullmatch(before.strip())
        line = text[: m.start()].count("\n") + 1
        out.append((line, m.group(1).strip(), m.group(2), skip.group(1).strip() if skip else None))
    return out


def fenced_blocks(lang: str, text: str | None = None) -> list[tuple[int, str]]:
    """``(line, text)`` of every ```lang block of a page (the README's by default) that runs."""
    return [
        (line, block)
        for line, info, block, reason in fences(README.read_text() if text is None else text)
        if info == lang and reason is None
    ]


def _with(lang: str) -> list[str]:
    return [name for name, text in PAGES.items() if fenced_blocks(lang, text)]


def vaekit_commands(block: str) -> list[list[str]]:
    """The arguments of every ``vaekit`` (or ``python -m vaekit``) command of a shell block."""
    return [words for kind, words in shell_commands(block) if kind == "vaekit"]


def shell_commands(block: str) -> list[tuple[str, list[str]]]:
    """``(kind, words)`` of every command line of a shell block: ``vaekit`` (its
    arguments), ``make`` (its targets), ``python`` (a script and its arguments)."""
    out: list[tuple[str, list[str]]] = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s(?:&&|;)\s", line):
            words = shlex.split(part, comments=True)
            while words and re.match(r"^[A-Za-z_]+=", words[0]):  # VAR=value before the command
                words.pop(0)
            if words[:1] == ["vaekit"]:
                out.append(("vaekit", words[1:]))
            elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == [
                "vaekit"
            ]:
                out.append(("vaekit", words[words.index("-m") + 2 :]))
            elif words[:1] == ["make"]:
                out.append(("make", [w for w in words[1:] if "=" not in w]))
            elif words[:1] == ["python"] and len(words) > 1 and words[1].endswith(".py"):
                out.append(("python", words[1:]))
    return out


@pytest.fixture
def myparts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "myparts.py").write_text(_guide_parts())
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("myparts", None)
    yield folder
    sys.modules.pop("myparts", None)


def test_the_snippets_are_found() -> None:
    commands = [c for _, b in fenced_blocks("bash") for c in vaekit_commands(b)]
    assert ["train", "--config", "demo", "--out", "runs/demo"] in commands
    assert ["--help"] in commands  # python -m vaekit --help
    assert fenced_blocks("python"), "the README's tour is gone"
    assert sum(len(fenced_blocks("python", t)) for t in PAGES.values()) >= 15
    assert {"docs/reference/cli.md", "docs/guides/train-and-resume.md"} <= set(PAGES)


def test_the_readme_is_a_front_page_that_links_every_guide() -> None:
    # The shape: about 150-250 lines, a link to each guide; the rest lives in docs/.
    text = README.read_text()
    assert 150 <= text.count("\n") <= 250, f"README.md has {text.count(chr(10))} lines"
    for guide in sorted((ROOT / "docs" / "guides").glob("*.md")):
        assert f"](docs/guides/{guide.name})" in text, f"README.md does not link {guide.name}"


def test_every_fence_has_a_language_and_few_are_not_run() -> None:
    bare, skipped = [], []
    for name, text in PAGES.items():
        for line, info, _, reason in fences(text):
            if not info:
                bare.append(f"{name}:{line}")
            if reason is not None:
                assert reason.strip(), f"{name}:{line}: say why the block is not run"
                skipped.append(f"{name}:{line}")
    assert not bare, f"fences without a language (bash, python, text, yaml): {bare}"
    assert len(skipped) <= 5, f"most blocks must run; not run: {skipped}"


def test_the_skip_marker_is_read() -> None:
    text = "a\n\n<!-- not run: needs a GPU -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n"
    assert [r for *_, r in fences(text)] == ["needs a GPU", None]
    assert fenced_blocks("python", text) == [(8, "y = 2\n")]


@pytest.mark.parametrize("page", _with("bash"))
def test_every_command_line_of_the_page_works(
    page: str, myparts: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vaekit.stages
    import vaekit.train

    trained: list[Any] = []
    monkeypatch.setattr(vaekit.train, "fit", lambda *a, **k: trained.append(a))
    monkeypatch.setattr(vaekit.stages, "train_prior", lambda *a, **k: trained.append(a))
    monkeypatch.chdir(ROOT)  # configs/... paths are the repository's
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    bad = []
    for line, block in fenced_blocks("bash", PAGES[page]):
        for kind, args in shell_commands(block):
            where = f"{page}:{line}: {kind} {shlex.join(args)}"
            if kind == "make":
                bad += [f"{where}: no target {t!r}" for t in args if t not in targets]
                continue
            if kind == "python":
                if not (ROOT / args[0]).is_file():
                    bad.append(f"{where}: no file {args[0]}")
                continue
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


@pytest.fixture(scope="session")
def _workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the pages' blocks refer to, made once for every page."""
    work = tmp_path_factory.mktemp("docs") / "work"
    (work / "runs").mkdir(parents=True)
    train_tiny(work / "runs" / "demo")
    train_tiny(work / "runs" / "ae", "model.posterior=point", "objective.name=ae")
    rng = np.random.default_rng(0)
    np.save(work / "my_images.npy", rng.random((300, 28, 28)).round())
    return work


@pytest.fixture
def workspace(
    tmp_path: Path,
    myparts: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_data_dir: Path,
    _workspace_template: Path,
) -> Path:
    """A folder with what the pages' blocks refer to, the trainer cut short, and the
    dSprites-like set drawn once (its test split, which evaluation scores whole, cut to
    1,000 images)."""
    from vaekit.data import limit_split, named
    from vaekit.disentangle import metrics
    from vaekit.train import loop

    work = tmp_path / "work"
    shutil.copytree(_workspace_template, work)
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


@pytest.mark.parametrize("page", _with("python"))
def test_every_python_block_of_the_page_runs(page: str, workspace: Path) -> None:
    import contextlib

    import torch

    for line, block in fenced_blocks("python", PAGES[page]):
        with contextlib.redirect_stdout(io.StringIO()), torch.random.fork_rng():
            try:
                exec(compile(block, f"{page}:{line}", "exec"), {"__name__": "docs"})
            except Exception as e:  # noqa: BLE001 - the block's own error, named by its line
                raise AssertionError(f"{page}:{line}: {type(e).__name__}: {e}") from e
