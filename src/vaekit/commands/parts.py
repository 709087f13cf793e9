"""``vaekit parts``: the registered parts, their options and abilities
(:func:`vaekit.catalog.describe`)."""

from __future__ import annotations

import argparse
import json

from vaekit.catalog import KINDS, describe, describe_json

DESCRIPTION = (
    "List the parts a config can name (vaekit.catalog): every kind and its parts; one "
    "kind's parts with their options and abilities; or one part in full, with an example "
    "--set line."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit parts`."""
    kinds = ", ".join(k for k in KINDS if "." not in k)
    p.add_argument(
        "kind",
        nargs="?",
        default=None,
        metavar="KIND",
        help=f"a kind of part: {kinds} (default: every kind)",
    )
    p.add_argument(
        "name",
        nargs="?",
        default=None,
        metavar="NAME",
        help="one part of KIND: a registered name, or a class of yours as module:Class",
    )
    p.add_argument(
        "--format",
        default="text",
        choices=["text", "json"],
        help="text to read (default) or json for tools",
    )


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit parts` as parsed into ``a``; the exit status."""
    if a.format == "json":
        print(json.dumps(describe_json(a.kind, a.name), indent=2))
    else:
        print(describe(a.kind, a.name), end="")
    return 0
