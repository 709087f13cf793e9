"""What parts exist, in words: the catalogue ``vaekit parts`` prints, read from the registry.

Every registered part (and a user's, by ``module:Class``) is described from what its class
declares: the first sentence of its docstring, its options (name, type, default, and the
comment written above each option in its ``Options`` dataclass or ``__init__``), its
abilities, and the ``--set`` line that chooses it. Nothing here is kept by hand, so a part
added to :mod:`vaekit.registry` is listed without being named anywhere else.

Example:
    >>> info = part_info("prior", "vamp")
    >>> info["key"], [o["name"] for o in info["options"]], info["options"][0]["default"]
    ('model.prior', ['components', 'init', 'clip', 'lr_scale'], 500)
    >>> kind_of("encoder")
    'network'
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shlex
import typing
from typing import Any

from vaekit.errors import ConfigError
from vaekit.parts import Part
from vaekit.registry import REGISTRIES
from vaekit.validate import check_choice

__all__ = [
    "KEYS",
    "KINDS",
    "kind_of",
    "find_part",
    "field_comments",
    "part_info",
    "describe",
    "describe_json",
]

# Where a config names a part of each kind (the first is the one examples use).
KEYS: dict[str, tuple[str, ...]] = {
    "network": ("model.encoder", "model.decoder"),
    "posterior": ("model.posterior",),
    "flow": ("model.flow",),
    "prior": ("model.prior",),
    "likelihood": ("model.likelihood",),
    "objective": ("objective",),
    "divergence": ("objective.divergence",),
}

# What a user may type for a kind: the kind itself, the config key's last word
# (``encoder``), or the whole key (``model.prior``).
KINDS: dict[str, str] = {}
for _kind in REGISTRIES:
    KINDS[_kind] = _kind
    for _key in KEYS.get(_kind, ()):
        KINDS.setdefault(_key.rpartition(".")[2], _kind)
        KINDS.setdefault(_key, _kind)


def kind_of(text: str) -> str:
    """The kind of part ``text`` names (``encoder`` -> ``network``); a ConfigError with
    did-you-mean otherwise, and a pointer to the kind when ``text`` is a part's name."""
    if text in KINDS:
        return KINDS[text]
    owners = [kind for kind, registry in REGISTRIES.items() if text in registry]
    if owners:
        raise ConfigError(
            f"{text!r} is a part, not a kind of part: "
            + " or ".join(f"`vaekit parts {kind} {text}`" for kind in owners)
            + " describes it"
        )
    choices = [k for k in KINDS if "." not in k]
    check_choice("the kind of part", text, choices)
    raise AssertionError("unreachable")  # pragma: no cover - check_choice raised


def find_part(kind: str, name: str) -> Part:
    """The part ``name`` of ``kind`` (a registered name or ``module:Class``), with the
    registry's did-you-mean and import errors."""
    kind = kind_of(kind)
    return REGISTRIES[kind].get(name, where=f"a {kind}")


# -- one part -----------------------------------------------------------------------------------


def _field_comments(source: str) -> dict[str, str]:
    """The ``# comment`` lines written just above each ``name: type`` line of ``source``
    (a dataclass body or a signature laid out one parameter a line)."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        match = re.match(r"(\w+)\s*:[^=]", text)
        if match and pending:
            out.setdefault(match.group(1), " ".join(pending))
        pending = []
    return out


def field_comments(cls: type) -> dict[str, str]:
    """What each field of the dataclass ``cls`` means: the comment written above it in its
    source (the config sections' keys; empty where the source cannot be read)."""
    try:
        return _field_comments(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}


def _option_help(part: Part) -> dict[str, str]:
    """What each option means, from the comments of the part's source (empty where the
    source cannot be read, as for a class defined in an interactive session)."""
    sources: list[Any] = []
    if getattr(part.factory, "Options", None) is not None:
        # Subclassed options (IAF's extend every flow's) keep their comments on the base.
        sources += [c for c in part.options.__mro__ if dataclasses.is_dataclass(c)]
    else:
        builder = part.encoder if part.kind == "network" else part.factory
        sources.append(builder.__init__ if inspect.isclass(builder) else builder)
    out: dict[str, str] = {}
    for obj in sources:
        try:
            source = inspect.getsource(obj)
        except (OSError, TypeError):
            continue
        for name, text in _field_comments(source).items():
            out.setdefault(name, text)
    return out


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    if tp is Any:
        return "any"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _plain(value: Any) -> Any:
    """A value as JSON holds it: tuples and sets as lists, dataclasses as mappings."""
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _default(f: dataclasses.Field[Any]) -> tuple[bool, Any]:
    """(required, default) of one options field."""
    if f.default is not dataclasses.MISSING:
        return False, _plain(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return False, _plain(f.default_factory())
    return True, None


def _value_text(value: Any) -> str:
    """A value as ``--set`` takes it (YAML): true, [32,64], learned."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def part_info(kind: str, name: str) -> dict[str, Any]:
    """One part described as plain data: ``kind``, ``name``, ``key`` (where a config names
    it), ``summary``, ``description`` (its docstring's first paragraph), ``options`` (each
    a mapping of ``name``, ``type``, ``default``, ``required``, ``help``), ``abilities``,
    ``user`` and ``example`` (a ``--set`` line that chooses it)."""
    part = find_part(kind, name)
    doc = inspect.getdoc(part.factory) or ""
    helps = _option_help(part)
    options = []
    for f in dataclasses.fields(part.options):
        required, default = _default(f)
        options.append(
            {
                "name": f.name,
                "type": _type_name(f.type),
                "default": default,
                "required": required,
                "help": helps.get(f.name, ""),
            }
        )
    key = KEYS.get(part.kind, (part.kind,))[0]
    example = [f"--set {shlex.quote(f'{key}={part.name}')}"]
    shown = next((o for o in options if o["required"]), options[0] if options else None)
    if shown is not None:
        value = "VALUE" if shown["required"] else _value_text(shown["default"])
        setting = f"{key}.{shown['name']}={value}"
        example.append(f"--set {shlex.quote(setting)}")
    return {
        "kind": part.kind,
        "name": part.name,
        "key": key,
        "summary": part.summary.replace("``", "`"),
        "description": " ".join(doc.split("\n\n", 1)[0].split()).replace("``", "`"),
        "options": options,
        "abilities": _plain(part.abilities),
        "user": part.user,
        "example": " ".join(example),
    }


# -- text ----------------------------------------------------------------------------------------


def _abilities_text(abilities: dict[str, Any]) -> str:
    """The abilities in one line: the names of those true, ``name=value`` for the rest
    that say something (empty text and False say nothing)."""
    words = []
    for key, value in abilities.items():
        if value is True:
            words.append(key)
        elif value not in (False, "", [], None):
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            words.append(f"{key}={shown}")
    return ", ".join(words) or "none beyond the kind's contract"


def _table(rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]


def _options_lines(info: dict[str, Any], indent: str, header: bool) -> list[str]:
    if not info["options"]:
        return [f"{indent}(no options)"]
    rows = [["name", "type", "default", "meaning"]] if header else []
    for o in info["options"]:
        default = "(required)" if o["required"] else _value_text(o["default"])
        rows.append([o["name"], o["type"], default, o["help"]])
    return [line.rstrip() for line in _table(rows, indent)]


def _kind_names(kind: str) -> str:
    keys = KEYS.get(kind, (kind,))
    return f"{kind} ({', '.join(keys)})"


def _one_part(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']} {info['name']}: {info['summary']}", ""]
    if info["description"] != info["summary"]:
        lines += [info["description"], ""]
    lines.append(f"options ({info['key']}.NAME=VALUE):")
    lines += _options_lines(info, "  ", header=True)
    lines += ["", f"abilities: {_abilities_text(info['abilities'])}", "", "example:"]
    lines.append(f"  vaekit train {info['example']}")
    return "\n".join(lines) + "\n"


def describe(kind: str | None = None, name: str | None = None) -> str:
    """The catalogue as text: every kind and its parts (no ``kind``), the parts of one kind
    with their options and abilities, or one part in full (``kind`` and ``name``).

    Example:
        >>> print(describe("flow").splitlines()[0])
        flow (model.flow): `vaekit parts flow NAME` shows one in full
    """
    if name is not None:
        return _one_part(part_info(kind or "", name))
    if kind is not None:
        kind = kind_of(kind)
        lines = [f"{_kind_names(kind)}: `vaekit parts {kind} NAME` shows one in full"]
        for part in REGISTRIES[kind]:
            info = part_info(kind, part.name)
            lines += ["", f"{info['name']}: {info['summary']}"]
            lines += _options_lines(info, "  ", header=False)
            lines.append(f"  abilities: {_abilities_text(info['abilities'])}")
        return "\n".join(lines) + "\n"
    lines = []
    for kind, registry in REGISTRIES.items():
        lines.append(_kind_names(kind))
        rows = [[p.name, part_info(kind, p.name)["summary"]] for p in registry]
        lines += _table(rows, "  ")
    lines += [
        "",
        "`vaekit parts KIND` lists a kind's parts with their options;",
        "`vaekit parts KIND NAME` shows one (a part of yours too, as module:Class).",
    ]
    return "\n".join(lines) + "\n"


def describe_json(kind: str | None = None, name: str | None = None) -> Any:
    """The catalogue as plain data for tools: one part's :func:`part_info`, or a list of
    them (every part of ``kind``, or of every kind)."""
    if name is not None:
        return part_info(kind or "", name)
    kinds = [kind_of(kind)] if kind is not None else list(REGISTRIES)
    return [part_info(k, p.name) for k in kinds for p in REGISTRIES[k]]
