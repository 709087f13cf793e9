"""The generated reference names everything a reader looks up: every command and argument
of the parser, every config key, every registered part with every option, every named
dataset and bundled config; and the site's nav takes up a new guide by itself."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from vaekit import docs_gen

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return docs_gen.pages()


def _rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    ]


def test_every_command_and_argument_is_in_the_cli_page(pages: dict[str, str]) -> None:
    from vaekit.cli import build_parser

    text = pages["reference/cli.md"]
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 15
    for name, command in sub.choices.items():
        assert name in sections, f"no section for `vaekit {name}`"
        cells = [r[0] for r in _rows(sections[name])]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            # An option by its first string, a positional by its metavar (as --help shows it).
            shown = action.option_strings[0] if action.option_strings else action.dest
            if not action.option_strings and isinstance(action.metavar, str):
                shown = action.metavar
            assert any(shown in c for c in cells), f"vaekit {name}: {shown} is not listed"
            if action.help:
                assert any(action.help.split()[0] in r[-1] for r in _rows(sections[name]))


def test_every_config_key_is_in_the_config_page(pages: dict[str, str]) -> None:
    from vaekit import config

    keys = {r[0].strip("`"): r for r in _rows(pages["reference/config.md"])}
    for section, cls in [
        ("data", config.DataConfig),
        ("model", config.ModelConfig),
        ("train", config.TrainConfig),
    ]:
        for f in dataclasses.fields(cls):
            row = keys.get(f"{section}.{f.name}")
            assert row is not None, f"{section}.{f.name} is not in the config reference"
            assert row[-1] != "—", f"{section}.{f.name} says nothing of what it means"
    assert "objective" in keys and "description" in keys


def test_every_part_and_option_is_in_the_parts_page(pages: dict[str, str]) -> None:
    from vaekit.catalog import describe_json

    text = pages["reference/parts.md"]
    infos = describe_json()
    assert len(infos) >= 30
    for info in infos:
        heading = f"### {info['name']} {{#{info['kind']}-{info['name']}}}"
        assert heading in text, f"the {info['kind']} {info['name']} has no entry"
        entry = text.split(heading, 1)[1].split("\n### ", 1)[0]
        for option in info["options"]:
            row = next(
                (r for r in _rows(entry) if r[0] == f"`{info['key']}.{option['name']}`"), None
            )
            assert row is not None, f"{info['name']}: option {option['name']} is missing"
            assert row[-1] != "—", f"{info['kind']} {info['name']}: {option['name']} means nothing"
        assert "Abilities:" in entry


def test_every_dataset_and_bundled_config_is_listed(pages: dict[str, str]) -> None:
    from vaekit.config import bundled_configs
    from vaekit.data import NAMED

    datasets = {r[0].strip("`"): r[1] for r in _rows(pages["reference/datasets.md"])}
    for name in NAMED:
        assert datasets.get(name, "—") != "—", f"dataset {name} is missing or says nothing"
    configs = {r[0].strip("`") for r in _rows(pages["reference/configs.md"])}
    assert set(bundled_configs()) <= configs


def test_every_generated_page_has_a_file_that_stands_in_for_it(pages: dict[str, str]) -> None:
    # So that the README's links to the reference lead somewhere where Markdown is read as
    # it is (GitHub); the build replaces each with the generated page.
    for name in pages:
        stub = ROOT / "docs" / name
        assert stub.is_file(), f"docs/{name} is missing"
        assert "generated from the code" in stub.read_text()


def test_the_front_page_is_the_readme_with_site_links() -> None:
    text = docs_gen.front_page(ROOT / "README.md")
    assert "](guides/train-and-resume.md)" in text and "](docs/" not in text


def test_a_new_guide_joins_the_nav_by_itself(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    guides = tmp_path / "docs" / "guides"
    guides.mkdir(parents=True)
    for name in ("listed.md", "zoo.md"):
        (guides / name).write_text("# x\n")
    hooks.ROOT = tmp_path
    nav = [{"Home": "index.md"}, {"Guides": ["guides/listed.md"]}]
    hooks.on_config(SimpleNamespace(nav=nav))
    assert nav[1] == {"Guides": ["guides/listed.md", "guides/zoo.md"]}
