"""``vaekit plot``: every figure that applies to a run, as PNG files
(:func:`vaekit.plots.run_figures`, :func:`vaekit.plots.save_figures`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit import plots  # plots.run_figures: a test may stand in for it
from vaekit.commands.args import (
    RUN_HELP,
    CommandError,
    add_common,
    add_dpi,
    add_out,
    add_run_data,
    add_weights,
)
from vaekit.commands.runs import load_run, notes, run_dataset, wrote
from vaekit.rundir import check_not_run_file

DESCRIPTION = (
    "Write every figure that applies to the run (or those named with --which) as PNG files."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit plot`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--which",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"figures to write (default: all that apply): {plots.figure_list()}",
    )
    add_out(p, "folder to write into", "RUN/plots")
    add_dpi(p, "the PNGs")
    add_run_data(p)
    add_weights(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit plot` as parsed into ``a``; the exit status."""
    run = load_run(a.run, a)
    if a.out:
        check_not_run_file(a.out, "--out", "plots")
    if a.out and Path(a.out).exists() and not Path(a.out).is_dir():
        raise CommandError(f"--out {a.out} is a file; plot writes one PNG per figure into a folder")
    figures = plots.run_figures(run, run_dataset(a, run), which=a.which)
    paths = plots.save_figures(figures, Path(a.out) if a.out else run.dir / "plots", dpi=a.dpi)
    wrote(*paths)
    notes(run)
    return 0
