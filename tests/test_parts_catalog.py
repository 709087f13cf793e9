"""What the registry says about its parts: each hand-written ``Options`` held equal to the
signature it stands for, and the catalogue ``vaekit parts`` prints from it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vaekit.parts import Part, _options_from_signature
from vaekit.registry import REGISTRIES

# Every registered part whose class writes its own ``Options`` (the others derive theirs
# from the signature, so they cannot differ from it).
HAND_WRITTEN = [
    part
    for registry in REGISTRIES.values()
    for part in registry
    if getattr(part.factory, "Options", None) is not None
]


def _defaults(options: type) -> dict[str, Any]:
    """Each option's default (``REQUIRED`` when it has none); sequences as lists, so a
    signature's immutable tuple default equals the list a config holds."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        if f.default is not dataclasses.MISSING:
            value: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = "REQUIRED"
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@pytest.mark.parametrize("part", HAND_WRITTEN, ids=lambda p: f"{p.kind}-{p.name}")
def test_hand_written_options_equal_the_signature(part: Part) -> None:
    # An option the config accepts but the class does not take fails at build time; one the
    # class takes but the config lacks cannot be set at all. Both are bugs of the part.
    builders = [part.encoder, part.decoder] if part.kind == "network" else [part.factory]
    written = _defaults(part.options)
    for builder in builders:
        derived = _defaults(_options_from_signature(part.kind, part.name, builder))
        assert written == derived, (part.kind, part.name, getattr(builder, "__qualname__", ""))


def test_most_parts_write_their_options() -> None:
    # The test above is not vacuous: it sees the parts that write their own Options.
    names = {(p.kind, p.name) for p in HAND_WRITTEN}
    assert {("flow", "iaf"), ("objective", "avb"), ("network", "conv")} <= names
    assert len(HAND_WRITTEN) >= 25
