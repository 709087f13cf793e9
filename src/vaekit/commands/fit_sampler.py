"""``vaekit fit-sampler``: fit a density to a run's training codes
(:func:`vaekit.samplers.fit_sampler`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from vaekit.commands.args import (
    RUN_HELP,
    CommandError,
    add_common,
    add_run_data,
    add_seed,
    add_weights,
)
from vaekit.commands.runs import load_run, run_dataset
from vaekit.commands.sample import sampler_list, sampler_names
from vaekit.samplers import fit_sampler

DESCRIPTION = (
    "Fit a density to the posterior means of the run's training split and save it in "
    f"RUN/samplers/NAME (sampler.json says what was fitted). {sampler_list(fitted=True)} "
    '(a flow needs zuko: pip install "vaekit[flows]"). `vaekit sample --sampler NAME` and '
    "`vaekit quality` fit one on first use; this refits it."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit fit-sampler`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--sampler",
        required=True,
        choices=sampler_names(fitted=True),
        metavar="NAME",
        help=f"the density to fit to the run's training codes: {sampler_list(fitted=True)}",
    )
    p.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, e.g. components=[5,10,20] (gmm), kind=maf or epochs=50 "
        "(flow), latent_dim=8 (two-stage) (repeatable)",
    )
    add_seed(p, "seed of the fit (default: 0)")
    add_run_data(p)
    add_weights(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit fit-sampler` as parsed into ``a``; the exit status."""
    # The run's own stage (--stage is not read here: the sampler fits the stage `vaekit
    # sample` loads by default).
    run = load_run(a.run, a, stage="auto")
    options = option_values(a.options)
    fit_sampler(run, a.sampler, options, dataset=run_dataset(a, run), seed=a.seed, log=sys.stdout)
    return 0


def option_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (numbers, lists, strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise CommandError(f"--option {pair!r}: expected KEY=VALUE, e.g. components=[5,10]")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CommandError(f"--option {pair!r}: the value is not readable") from None
    return out
