"""``vaekit report``: one self-contained HTML file about a run (:func:`vaekit.report.write_report`)."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands.args import (
    COUNT,
    RUN_HELP,
    add_common,
    add_out,
    add_run_data,
    add_threads,
    add_weights,
)
from vaekit.commands.runs import load_run, notes, run_dataset
from vaekit.export import output_file
from vaekit.report import write_report

DESCRIPTION = (
    "One self-contained HTML file about a run: its settings, learning curves, the "
    "evaluation (the saved one, else a new one with --k) and every figure that applies."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit report`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--k",
        type=COUNT,
        default=None,
        help="evaluate with k importance samples (default: reuse the run's saved evaluation "
        "with the highest k, else k=100)",
    )
    add_out(p, "HTML file to write", "RUN/report.html")
    add_threads(p, "torch threads for the evaluation (default: torch's own)")
    add_run_data(p)
    add_weights(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit report` as parsed into ``a``; the exit status."""
    run = load_run(a.run, a)
    ds = run_dataset(a, run)
    if a.out:
        output_file(a.out, "report.html", option="--out")
    out = write_report(run, k=a.k, out=a.out, dataset=ds, threads=a.threads, log=sys.stdout)
    print(f"wrote {out}")
    notes(run)
    return 0
