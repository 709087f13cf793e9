"""``vaekit traversals``: latent traversals of several runs side by side
(:func:`vaekit.disentangle.figures.traversals_side_by_side`)."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands.args import COUNT, CommandError, add_common, add_dpi, add_out
from vaekit.commands.runs import load_run, run_dir
from vaekit.disentangle.figures import traversals_side_by_side
from vaekit.export import save_figure

DESCRIPTION = (
    "For each run, its most informative latent dimensions (by KL) varied one at a time "
    "around the code of the same test example: whether each dimension changes one factor "
    "of the image (disentangled) or several."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit traversals`."""
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, one panel each")
    p.add_argument("--rows", type=COUNT, default=6, help="latent dimensions per run (default: 6)")
    p.add_argument("--n", type=COUNT, default=7, help="values per dimension (default: 7)")
    p.add_argument(
        "--span", type=float, default=2.0, help="values from -SPAN to SPAN (default: 2.0)"
    )
    p.add_argument("--example", type=int, default=0, help="which test example's code (default: 0)")
    add_out(p, "figure file; .png, .pdf, .svg, ... by the extension", "traversals.png")
    add_dpi(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit traversals` as parsed into ``a``; the exit status."""
    runs = [load_run(r, a) for r in a.runs]
    test = runs[0].dataset(a.data_dir).test
    if not 0 <= a.example < len(test):
        raise CommandError(f"--example must be in 0..{len(test) - 1}, got {a.example}")
    labels = [run_dir(r).resolve().name for r in a.runs]
    try:
        fig = traversals_side_by_side(
            runs, labels, test, rows=a.rows, n=a.n, span=a.span, example=a.example
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = save_figure(fig, a.out or "traversals.png", a.dpi, option="--out")
    print(f"wrote {out}")
    return 0
