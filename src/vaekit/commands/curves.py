"""``vaekit curves``: learning curves of several runs in one figure
(:func:`vaekit.plots.compare_curves`)."""

from __future__ import annotations

import argparse
from typing import Any

from vaekit.commands.args import CommandError, add_dpi, add_out
from vaekit.commands.runs import run_dir
from vaekit.export import save_figure
from vaekit.plots import compare_curves, curves_split
from vaekit.rundir import objective_abilities, read_metrics, read_run_config

DESCRIPTION = (
    "Minus the bound each run trains (the IWAE bound, else the ELBO; nats) on one split, "
    "by epoch, with each run's best epoch marked: where long runs stand."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit curves`."""
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, one curve each")
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "valid", "test"],
        help="the split whose scores are drawn (default: valid when every run has a "
        "validation split, else test)",
    )
    add_out(p, "figure file; .png, .pdf, .svg, ... by the extension", "curves-SPLIT.png")
    add_dpi(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit curves` as parsed into ``a``; the exit status."""
    runs: dict[str, Any] = {}
    for arg in a.runs:
        path = run_dir(arg)
        rows = read_metrics(path)
        if not rows:
            what = "has no metrics.jsonl rows yet" if path.is_dir() else "is not a run directory"
            raise CommandError(f"{arg} {what}; pass directories that `vaekit train` wrote")
        name = path.resolve().name
        bound = objective_abilities(read_run_config(path))
        runs[name if name not in runs else str(path)] = (rows, bound)
    split = a.split or curves_split(runs)
    if split != (a.split or "valid"):
        lacking = [n for n, (rows, _) in runs.items() if not any("valid" in r for r in rows)]
        print(f"note: drawing the {split} split: {', '.join(lacking)} has no validation split")
    fig = compare_curves(runs, split)
    out = save_figure(fig, a.out or f"curves-{split}.png", a.dpi, option="--out")
    print(f"wrote {out}")
    return 0
