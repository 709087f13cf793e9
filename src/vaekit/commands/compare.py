"""``vaekit compare``: two runs side by side in one figure (:func:`vaekit.plots.compare_runs`)."""

from __future__ import annotations

import argparse

from vaekit.commands.args import COUNT, add_common, add_out
from vaekit.commands.runs import load_run
from vaekit.export import save_figure
from vaekit.plots import compare_runs, random_subset

DESCRIPTION = (
    "Two runs side by side, as in tutorial 003 (autoencoder versus VAE): for each, the "
    "latent scatter of test examples by class, a decoded grid over the latent range, and "
    "decoded draws from the prior."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit compare`."""
    p.add_argument("run_a", metavar="RUN_A", help="the run drawn on the left")
    p.add_argument(
        "run_b", metavar="RUN_B", help="the run drawn on the right (its test split is used)"
    )
    add_out(
        p,
        "figure file; .png, .pdf, .svg, ... by the extension",
        "RUN_B/compare-<RUN_A name>.png",
    )
    p.add_argument("--n", type=COUNT, default=2000, help="test examples to scatter (default: 2000)")
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit compare` as parsed into ``a``; the exit status."""
    run_a, run_b = load_run(a.run_a, a), load_run(a.run_b, a)
    test = random_subset(run_b.dataset(a.data_dir).test, a.n)
    fig = compare_runs(run_a, run_b, test.x, test.y)
    out = save_figure(
        fig, a.out or str(run_b.dir / f"compare-{run_a.dir.name}.png"), 100, option="--out"
    )
    print(f"wrote {out}")
    return 0
