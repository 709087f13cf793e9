"""``vaekit reconstruct``: examples of a split beside their reconstructions
(:meth:`vaekit.rundir.Run.reconstruct`, :func:`vaekit.export.write_reconstructions`)."""

from __future__ import annotations

import argparse

from vaekit.commands.args import (
    COUNT,
    RUN_HELP,
    add_common,
    add_out,
    add_run_data,
    add_seed,
    add_weights,
)
from vaekit.commands.runs import load_run, notes, run_split
from vaekit.data import limit_split
from vaekit.export import check_finite, examples_file, write_reconstructions

DESCRIPTION = (
    "--n examples of a split and their reconstructions (decoded at the posterior mean): an "
    "image grid with labelled rows, or the values. The examples are a seeded random draw, "
    "each class keeping its share, in the split's order (--first: the first --n)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit reconstruct`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--n", type=COUNT, default=16, help="examples (default: 16; at most the split's size)"
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "valid", "test"],
        help="the split to take them from (default: test)",
    )
    add_seed(
        p,
        "seed of the draw of examples: the same seed, the same examples (default: 0)",
    )
    p.add_argument(
        "--first",
        action="store_true",
        help="the first --n examples of the split instead of a random draw (on data sorted "
        "by class, such as MNIST-10k, those are all of one class) (default: off)",
    )
    add_out(
        p,
        "output file; the extension picks the format: .png or .jpg (originals above their "
        "reconstructions), .npy (shape (2, N, *data shape): originals, then reconstructions) "
        "or .csv (x0.. then recon0.. per row)",
        "RUN/reconstructions.png for images, else RUN/reconstructions.csv",
    )
    add_run_data(p)
    add_weights(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit reconstruct` as parsed into ``a``; the exit status."""
    run = load_run(a.run, a)
    split = run_split(a, run)
    out, kind = examples_file(a.out, run, "reconstructions", option="--out")
    n = min(a.n, len(split))
    part = split.take(n) if a.first else limit_split(split, n, a.seed)
    x = part.x.to(run.device)
    y = part.y if (part.y is not None and run.num_classes) else None
    xr = run.reconstruct(x, y)
    check_finite(run, xr, "reconstructions")
    write_reconstructions(out, run, x, xr, kind=kind)
    how = "the first" if a.first else f"a seeded draw (seed {a.seed}) of"
    print(f"wrote {out} ({how} {n} {a.split} examples and their reconstructions)")
    notes(run)
    return 0
