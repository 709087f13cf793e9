"""The reference pages of the documentation site, written from the code.

``mkdocs build`` (``docs/hooks.py``) calls :func:`pages` and :func:`front_page`, so the
reference never falls behind what it describes: every command and argument comes from the
argparse parser (:func:`vaekit.cli.build_parser`), every config key from the config
dataclasses with the comment written above it, every part with its options and abilities
from the registries (:func:`vaekit.catalog.describe_json`, what ``vaekit parts`` prints),
the datasets from :data:`vaekit.data.NAMED` and the bundled configs from the package.

Example:
    >>> text = pages()["reference/parts.md"]
    >>> "### vamp" in text and "components" in text
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from pathlib import Path
from typing import Any

from vaekit import config
from vaekit.catalog import KEYS, describe_json, field_comments
from vaekit.cli import build_parser
from vaekit.config import bundled_configs, read_config_file
from vaekit.data import NAMED
from vaekit.registry import REGISTRIES

__all__ = ["PAGES", "pages", "front_page", "cli_page", "config_page", "parts_page"]

ROOT = Path(__file__).resolve().parents[2]


def _cell(text: Any) -> str:
    """Text for one cell of a Markdown table: one line, ``|`` escaped, no raw HTML."""
    s = " ".join(str(text).split())
    return s.replace("|", "\\|").replace("<", "&lt;") or "—"


def _code(value: Any) -> str:
    """A value as ``--set`` (YAML) takes it, in a code span."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{text}`" if text != "" else '`""`'


def _rst(text: str) -> str:
    """Docstring text as Markdown: ``code`` -> `code`, :func:`x` -> `x`."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


# -- the command line ------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, Any]]:
    """``{name: (help, subparser)}`` of the parser's commands, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (helps.get(name, ""), p) for name, p in action.choices.items()}
    return {}


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            # A command with commands of its own (`vaekit zoo list|check|...`): one row
            # naming them; each gets its own section below.
            names = ", ".join(f"`{n}`" for n in action.choices)
            what = f"{action.help or 'a subcommand'}: {names}"
            rows.append(
                f"| `{_cell(str(action.metavar or action.dest))}` | (required) | {_cell(what)} |"
            )
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                metavar = formatter._format_args(action, action.dest.upper())
                name += f" {metavar}"
        else:
            name = formatter._format_args(action, action.dest)
        help_text = formatter._expand_help(action) if action.help else ""
        if action.choices is not None and not isinstance(action.choices, dict):
            choices = ", ".join(map(str, action.choices))
            if choices and choices not in help_text:
                help_text += f" (one of: {choices})"
        if action.required:
            default = "(required)"
        elif action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            default = ""
        else:
            default = _code(action.default)
        rows.append(f"| `{_cell(name)}` | {default or '—'} | {_cell(help_text)} |")
    return rows


def cli_page(parser: argparse.ArgumentParser | None = None) -> str:
    """Every ``vaekit`` command with its usage and arguments, read off the parser."""
    if parser is None:
        parser = build_parser()
    commands = _subcommands(parser)
    lines = [
        "# Command line",
        "",
        "Generated from the argparse parser (`vaekit COMMAND --help` prints the same). "
        "`python -m vaekit` is the same program.",
        "",
        "| command | what |",
        "|---|---|",
    ]
    lines += [f"| [`{name}`](#{name}) | {_cell(text)} |" for name, (text, _) in commands.items()]
    lines += ["", "## vaekit", "", *_argument_rows(parser)]
    for name, (text, sub) in commands.items():
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        lines += ["", f"## {name}", ""]
        lines += [_rst(sub.description or text), "", "```text", usage, "```", ""]
        lines += _argument_rows(sub)
        for inner, (inner_text, inner_sub) in _subcommands(sub).items():
            usage = " ".join(inner_sub.format_usage().split()).removeprefix("usage: ")
            lines += ["", f"### {name} {inner}", ""]
            lines += [_rst(inner_sub.description or inner_text), "", "```text", usage, "```", ""]
            lines += _argument_rows(inner_sub)
    return "\n".join(lines) + "\n"


# -- the config ------------------------------------------------------------------------------


def _type_text(tp: Any) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return text.replace("PartConfig", "part")


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_page() -> str:
    """Every config section and key, with its type, default and the comment above it."""

    sections = [
        ("data", config.DataConfig),
        ("model", config.ModelConfig),
        ("train", config.TrainConfig),
    ]
    lines = [
        "# Config",
        "",
        _rst(inspect.getdoc(config) or "").split("\n\n")[0],
        "",
        "A config file (YAML, TOML or JSON) holds these sections; every key can be set from "
        "the command line as `--set SECTION.KEY=VALUE` and in Python as "
        '`load_config(path, ["SECTION.KEY=VALUE"])`. Keys that name a *part* take a name, '
        "or a mapping of a name and the part's options (see [Parts](parts.md)).",
        "",
        "## Top level",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    top = field_comments(config.Config)
    for f in dataclasses.fields(config.Config):
        if f.name in {s for s, _ in sections}:
            lines.append(f"| `{f.name}` | section | — | the [`{f.name}`](#{f.name}) section |")
        else:
            lines.append(_config_row(f, f.name, top.get(f.name, ""), KEYS))
    for name, cls in sections:
        lines += ["", f"## {name}", "", _rst(inspect.getdoc(cls) or "").split("\n\n")[0], ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            lines.append(_config_row(f, f"{name}.{f.name}", comments.get(f.name, ""), KEYS))
    return "\n".join(lines) + "\n"


def _config_row(f: dataclasses.Field[Any], key: str, meaning: str, keys: Any) -> str:
    kind = f.metadata.get("part")
    default = _default_of(f)
    if kind is not None:
        meaning = (meaning + " " if meaning else "") + f"A part: see [{kind}](parts.md#{kind})."
        tp = f"{kind} part"
    else:
        tp = _type_text(f.type)
    shown = "`null`" if default is None else _code(default)
    return f"| `{key}` | {_cell(tp)} | {shown} | {_cell(meaning)} |"


# -- the parts -------------------------------------------------------------------------------


def parts_page() -> str:
    """Every registered part, kind by kind, with its options and abilities."""

    lines = [
        "# Parts",
        "",
        "Every registered part, generated from the registries (`vaekit parts KIND NAME` "
        "prints the same in a terminal; `--format json` for tools). A config names a part "
        "by its name, with its options beside the name: `model.prior: {name: mog, "
        "components: 5}`, or `--set model.prior=mog --set model.prior.components=5`. "
        "Parts of your own are named `module:Class` "
        "(see [Parts and data of your own](../guides/parts-of-your-own.md)).",
        "",
    ]
    infos = describe_json()
    lines += ["| kind | config key | parts |", "|---|---|---|"]
    for kind, registry in REGISTRIES.items():
        keys = ", ".join(f"`{k}`" for k in KEYS.get(kind, (kind,)))
        links = ", ".join(f"[`{p.name}`](#{_anchor(kind, p.name)})" for p in registry)
        lines.append(f"| [{kind}](#{kind}) | {keys} | {links} |")
    for kind, registry in REGISTRIES.items():
        keys = ", ".join(f"`{k}`" for k in KEYS.get(kind, (kind,)))
        lines += ["", f"## {kind}", "", f"Named by {keys}.", ""]
        first = next(iter(registry), None)
        if first is not None:
            doc = inspect.getdoc(type(first.abilities)) or ""
            if doc:
                lines += [
                    f"**Abilities** (`{type(first.abilities).__name__}`): "
                    + _rst(" ".join(doc.split())),
                    "",
                ]
        for info in (i for i in infos if i["kind"] == kind):
            lines += _part_lines(info)
    return "\n".join(lines) + "\n"


def _anchor(kind: str, name: str) -> str:
    return f"{kind}-{name}".lower()


def _part_lines(info: dict[str, Any]) -> list[str]:
    lines = [f"### {info['name']} {{#{_anchor(info['kind'], info['name'])}}}", ""]
    lines += [_rst(info["description"] or info["summary"]), ""]
    if info["options"]:
        lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for o in info["options"]:
            default = "(required)" if o["required"] else _code(o["default"])
            lines.append(
                f"| `{info['key']}.{o['name']}` | {_cell(o['type'])} | {default} | {_cell(o['help'])} |"
            )
    else:
        lines.append("No options.")
    abilities = [
        f"`{k}`" if v is True else f"`{k}={', '.join(map(str, v)) if isinstance(v, list) else v}`"
        for k, v in info["abilities"].items()
        if v not in (False, "", [], None)
    ]
    lines += ["", "Abilities: " + (", ".join(abilities) or "none beyond the kind's contract") + "."]
    lines += ["", f"Choose it: `vaekit train {info['example']}`", ""]
    return lines


# -- datasets and bundled configs -------------------------------------------------------------


def datasets_page() -> str:
    """The named datasets (``--dataset NAME``), from the data registry."""

    lines = [
        "# Datasets",
        "",
        "The names `--dataset` and `data.name` accept, from the data registry "
        "(`vaekit.data.NAMED`). A path to a file or folder, or a `module:function` of yours, "
        "is accepted too: see [Data](../guides/data.md).",
        "",
        "| name | what |",
        "|---|---|",
    ]
    for name, loader in NAMED.items():
        doc = inspect.getdoc(loader) or ""
        lines.append(f"| `{name}` | {_cell(_rst(doc.split(chr(10) * 2)[0]))} |")
    return "\n".join(lines) + "\n"


def configs_page() -> str:
    """The configs installed with vaekit (``--config NAME``), with their descriptions."""

    lines = [
        "# Bundled configs",
        "",
        "Installed with vaekit (`src/vaekit/configs/`); `--config NAME` and "
        "`load_config(NAME)` take the name with or without `.yaml`, in any directory.",
        "",
        "| name | description | data | posterior | prior | objective |",
        "|---|---|---|---|---|---|",
    ]
    for name, path in sorted(bundled_configs().items()):
        data = read_config_file(path)
        model = data.get("model") or {}

        def named(value: Any, default: str) -> str:
            if isinstance(value, dict):
                return str(value.get("name", default))
            return default if value is None else str(value)

        lines.append(
            f"| `{name}` | {_cell(data.get('description', ''))} "
            f"| {_cell(named((data.get('data') or {}).get('name'), 'digits'))} "
            f"| {_cell(named(model.get('posterior'), 'gaussian'))} "
            f"| {_cell(named(model.get('prior'), 'normal'))} "
            f"| {_cell(named(data.get('objective'), 'elbo'))} |"
        )
    return "\n".join(lines) + "\n"


# -- the whole ---------------------------------------------------------------------------------

PAGES = {
    "reference/cli.md": cli_page,
    "reference/config.md": config_page,
    "reference/parts.md": parts_page,
    "reference/datasets.md": datasets_page,
    "reference/configs.md": configs_page,
}


def pages() -> dict[str, str]:
    """``{path under docs/: Markdown}`` of every generated reference page."""
    return {path: make() for path, make in PAGES.items()}


def front_page(readme: Path | None = None) -> str:
    """README.md as the site's front page: its ``docs/`` links made relative to the site."""
    text = (readme or ROOT / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", text)
