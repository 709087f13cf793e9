"""``vaekit sample``: draw examples from a run's model and write them
(:meth:`vaekit.rundir.Run.sample`, :func:`vaekit.export.write_examples`)."""

from __future__ import annotations

import argparse
import math
import sys

import torch

from vaekit.commands.args import (
    COUNT,
    RUN_HELP,
    SEED,
    CommandError,
    add_common,
    add_out,
    add_seed,
    add_weights,
)
from vaekit.commands.runs import load_run, notes
from vaekit.export import check_finite, examples_file, write_examples
from vaekit.samplers import SAMPLERS, load_sampler

DESCRIPTION = (
    "Draw examples from the model and write them: an image grid, or the values as .npy or "
    ".csv. By default each example is the mean of p(x|z) at a z drawn from the prior "
    "(smooth images; for real-valued data, rows with less spread than the data); --draw "
    "draws x ~ p(x|z) instead (synthetic rows)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit sample`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--n", type=COUNT, default=64, help="examples to draw (default: 64)")
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class to sample (conditional models; default: every class in turn)",
    )
    add_seed(p, "seed of the draws (default: 0)", type=SEED)
    p.add_argument(
        "--draw",
        action="store_true",
        help="write draws x ~ p(x|z), with the likelihood's noise (synthetic rows of tabular "
        "data; binary pixels for a Bernoulli likelihood); default: the mean of p(x|z)",
    )
    add_sampler_flags(p)
    add_out(
        p,
        "output file; the extension picks the format: .png or .jpg (an image grid), .npy "
        "(shape (N, *data shape)) or .csv (a row per example)",
        "RUN/samples.png for images, else RUN/samples.csv; RUN/prior/... once a prior stage exists",
    )
    add_weights(p)
    add_common(p)


def sampler_list(fitted: bool = False) -> str:
    """The samplers and what each is, for a help text (``fitted``: those fitted to codes)."""
    return "; ".join(
        f"{name}: {s.summary}" for name, s in SAMPLERS.items() if s.needs_fit or not fitted
    )


def sampler_names(fitted: bool = False) -> list[str]:
    return [name for name, s in SAMPLERS.items() if s.needs_fit or not fitted]


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampler",
        default="prior",
        choices=sampler_names(),
        metavar="NAME",
        help=f"where the codes come from (default: prior): {sampler_list()}; a density of the "
        "run's training codes is fitted and saved in RUN/samplers on first use (see `vaekit "
        "fit-sampler`)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="scales the sampler's spread (the prior's standard deviation, every layer's in a "
        "hierarchy; each mixture component's; a flow's or second stage's base noise); below 1: "
        "fewer, sharper kinds of samples (default: 1)",
    )


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit sample` as parsed into ``a``; the exit status."""
    run = load_run(a.run, a)
    out, kind = examples_file(a.out, run, "samples", option="--out")
    if a.label is not None and run.num_classes and not 0 <= a.label < run.num_classes:
        raise CommandError(f"--label must be a class of this model, 0..{run.num_classes - 1}")
    # A conditional model cycles through its classes unless --label picks one, as
    # Run.sample does; an unconditional one refuses --label.
    if not (a.temperature > 0 and math.isfinite(a.temperature)):
        raise CommandError(f"--temperature must be a positive number, got {a.temperature}")
    if a.sampler != "prior":
        load_sampler(run, a.sampler, log=sys.stderr)  # fitted now if it is not yet
    torch.manual_seed(a.seed)
    try:
        x = run.sample(a.n, a.label, draw=a.draw, sampler=a.sampler, temperature=a.temperature)
    except ValueError as e:  # a prior that has no temperature
        raise CommandError(str(e)) from None
    check_finite(run, x, "samples")
    ncol = run.num_classes if (run.num_classes and a.label is None) else None
    write_examples(out, run, x, kind=kind, ncol=ncol)
    what = "draws x ~ p(x|z)" if a.draw else "means of p(x|z)"
    source = "the prior" if a.sampler == "prior" else f"the {a.sampler} sampler"
    print(f"wrote {out} ({a.n} samples: {what} at z from {source})")
    notes(run)
    return 0
