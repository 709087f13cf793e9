"""What the registry says about its parts: each hand-written ``Options`` held equal to the
signature it stands for, and the catalogue ``vaekit parts`` prints from it."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from vaekit.catalog import KEYS, KINDS, describe_json
from vaekit.cli import main
from vaekit.config import ConfigError, load_config
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


# -- the catalogue: `vaekit parts` -------------------------------------------------------------


def _parts(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["parts", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_registered_part_is_listed_under_its_kind(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _parts(capsys)
    assert code == 0
    # Each kind's header, then one line per part: "  name  summary".
    blocks = re.split(r"^(\w+) \(.*\)$", out, flags=re.M)
    listed = {blocks[i]: blocks[i + 1] for i in range(1, len(blocks) - 1, 2)}
    assert set(listed) == set(REGISTRIES)
    for kind, registry in REGISTRIES.items():
        names = re.findall(r"^  (\S+)  +\S", listed[kind], flags=re.M)
        assert names == registry.names(), kind
        # Each summary is a whole sentence, not the docstring's first line cut at its wrap.
        summaries = re.findall(r"^  \S+  +(.*)$", listed[kind], flags=re.M)
        assert all(line.endswith(".") and "``" not in line for line in summaries), summaries
    assert "hierarchical-conv" in listed["posterior"] and "radial" in listed["flow"]


@pytest.mark.parametrize("typed", sorted(KINDS))
def test_each_kind_lists_its_parts_with_options(
    typed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _parts(capsys, typed)
    assert code == 0
    kind = KINDS[typed]
    assert out.startswith(f"{kind} (")
    for part in REGISTRIES[kind]:
        block = out.split(f"\n{part.name}: ", 1)[1].split("\n\n", 1)[0]
        for f in dataclasses.fields(part.options):
            assert re.search(rf"^  {re.escape(f.name)}  ", block, flags=re.M), (part.name, f.name)
        assert "abilities: " in block


def test_one_part_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _parts(capsys, "prior", "vamp")
    assert code == 0
    assert out.startswith("prior vamp: Variational mixture of posteriors")
    # name, type, default and the comment written above the option in the part's class.
    assert re.search(r"^  components +int +500 +Number of pseudo-inputs K", out, flags=re.M)
    assert "abilities: needs_gaussian_posterior" in out
    assert "vaekit train --set model.prior=vamp --set model.prior.components=500" in out
    # The option that IAF's Options lacked before: now listed, with its meaning.
    _, out, _ = _parts(capsys, "flow", "iaf")
    assert re.search(r"^  activation +str +elu +Activation", out, flags=re.M)
    # A part whose options come from its signature, not an Options class.
    _, out, _ = _parts(capsys, "encoder", "conv")
    assert re.search(r"^  channels +list\[int\] +\[32,64\]", out, flags=re.M)


def test_a_part_of_the_users_by_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "catalog_user_prior.py").write_text(
        textwrap.dedent(
            '''
            import torch


            class MyPrior(torch.nn.Module):
                """A prior of mine: a Normal of a chosen scale."""

                def __init__(
                    self,
                    latent_dim: int,
                    # Standard deviation of every dimension.
                    scale: float = 2.0,
                ) -> None:
                    super().__init__()
                    self.latent_dim, self.scale = latent_dim, scale
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "catalog_user_prior", raising=False)
    code, out, _ = _parts(capsys, "prior", "catalog_user_prior:MyPrior")
    assert code == 0
    assert out.startswith("prior catalog_user_prior:MyPrior: A prior of mine")
    assert re.search(r"^  scale +float +2.0 +Standard deviation", out, flags=re.M)
    code, out, _ = _parts(capsys, "prior", "catalog_user_prior:MyPrior", "--format", "json")
    assert json.loads(out)["user"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prir"], "did you mean 'prior'?"),
        (["objectve", "elbo"], "did you mean 'objective'?"),
        (["prior", "vampp"], "did you mean 'vamp'?"),
        (["mog"], "`vaekit parts prior mog` describes it"),
        (["prior", "no_such_module_here:Prior"], "PYTHONPATH"),
    ],
)
def test_a_typo_exits_2_with_did_you_mean(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _parts(capsys, *args)
    assert code == 2 and not out
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_json_parses_for_tools(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _parts(capsys, "--format", "json")
    assert code == 0
    every = json.loads(out)
    assert sorted((p["kind"], p["name"]) for p in every) == sorted(
        (kind, name) for kind, r in REGISTRIES.items() for name in r.names()
    )
    _, out, _ = _parts(capsys, "likelihood", "--format", "json")
    assert {p["name"] for p in json.loads(out)} == set(REGISTRIES["likelihood"].names())
    _, out, _ = _parts(capsys, "likelihood", "student-t", "--format", "json")
    one = json.loads(out)
    assert one["options"][1] == {
        "name": "df",
        "type": "float | str",
        "default": "learned",
        "required": False,
        "help": 'Fixed degrees of freedom, or "learned" (one per column, kept above 1).',
    }
    assert one["abilities"]["exact"] == ["grey", "real"]


def test_every_example_names_settings_the_config_knows() -> None:
    # The --set line shown for each part is the one grammar the config reads: a choice it
    # cannot combine with the defaults is refused for that reason, never as a bad key.
    for info in describe_json():
        settings = shlex.split(info["example"])[1::2]
        try:
            load_config(None, overrides=settings)
        except ConfigError as e:
            assert "unknown setting" not in str(e) and "did you mean" not in str(e), info["name"]


def test_the_guides_parts_table_names_every_registered_part() -> None:
    # The overview table of the guide "Models from parts" is written by hand: a part added
    # to the registry must be added there too (`vaekit parts` and the generated reference
    # list it by themselves).
    guide = Path(__file__).resolve().parents[1] / "docs" / "guides" / "composing.md"
    section = guide.read_text().split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([\w.]+)` \|(.*)\|$", section, flags=re.M))
    for kind, registry in REGISTRIES.items():
        row = rows[KEYS[kind][0]]
        for name in registry.names():
            assert re.search(rf"`{re.escape(name)}`|name: {re.escape(name)}[,}}]", row), (
                f"the guide's parts table does not name the {kind} {name!r}"
            )
