"""``vaekit summary``: one table of many runs from what they saved
(:func:`vaekit.summary.summarize_run`, :func:`vaekit.summary.format_rows`)."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands.args import CommandError, add_out
from vaekit.commands.runs import run_dir
from vaekit.export import output_file, write_text
from vaekit.rundir import RunError
from vaekit.summary import format_rows, summarize_run

DESCRIPTION = (
    "A row per run from what training and `vaekit evaluate` saved (it evaluates nothing): "
    "the results pages' tables, rebuilt from your runs."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit summary`."""
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run directories, a row each (of several, those that are not runs are skipped "
        "with a warning)",
    )
    p.add_argument(
        "--format",
        default="markdown",
        choices=["markdown", "csv", "json"],
        help="the table's format (default: markdown)",
    )
    add_out(p, "file to write", "print")


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit summary` as parsed into ``a``; the exit status."""
    if len(a.runs) == 1:
        rows = [
            summarize_run(run_dir(a.runs[0]))
        ]  # the one run must be one: its error is the error
    else:
        # `vaekit summary runs/*` may name a stray file or an empty folder: skip those.
        rows = []
        for arg in a.runs:
            try:
                rows.append(summarize_run(run_dir(arg)))
            except RunError as e:
                print(f"warning: skipped {arg}: {e}", file=sys.stderr)
        if not rows:
            raise CommandError(f"none of the {len(a.runs)} arguments is a run directory")
    text = format_rows(rows, a.format)
    if a.out:
        example = "summary." + {"markdown": "md"}.get(a.format, a.format)
        write_text(output_file(a.out, example, option="--out"), text, example)
        print(f"wrote {a.out}")
    else:
        print(text, end="")
    return 0
