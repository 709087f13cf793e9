"""``vaekit encode``: the posterior moments of every example of a split, as .npy or .csv
(:meth:`vaekit.rundir.Run.encode_split`, :func:`vaekit.export.write_encoding`)."""

from __future__ import annotations

import argparse

from vaekit.commands.args import (
    RUN_HELP,
    add_common,
    add_out,
    add_run_data,
    add_threads,
    add_weights,
)
from vaekit.commands.runs import load_run, notes, run_dataset, wrote
from vaekit.errors import UsageError
from vaekit.evaluate import num_threads
from vaekit.export import check_finite, encoding_prefix, write_codes_dataset, write_encoding

DESCRIPTION = (
    "Encode every example of a split: the means and variances of q(z|x) (and the labels, "
    "when the data have them), as .npy files or one .csv."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit encode`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "valid", "test"],
        help="the split to encode (default: test)",
    )
    p.add_argument(
        "--format",
        default=None,
        choices=["npy", "csv"],
        help="npy: PREFIX_mean.npy, PREFIX_var.npy, PREFIX_labels.npy (and PREFIX_codes.npy, "
        "the code indices of a discrete model); csv: one PREFIX.csv "
        "(default: the extension of --out, else npy)",
    )
    add_out(
        p,
        "output prefix; ending it in .npy or .csv chooses the format; a FILE.npz holds every "
        "split's means, variances and labels as a dataset to train on (data.name=FILE.npz: "
        "M2 on a VAE's codes, M1+M2; data.resample=gaussian redraws them every batch), and "
        "--split and --format are then not used",
        "RUN/latents_SPLIT",
        metavar="PREFIX",
    )
    p.add_argument(
        "--min-sd",
        type=float,
        default=0.0,
        metavar="SD",
        help="with --out FILE.npz: keep only the latent units whose means vary over the "
        "training split with a standard deviation above SD (Kingma et al.'s M1+M2 keeps "
        "those above 0.1; the kept units' indices are written as the array units) "
        "(default: 0, every unit)",
    )
    add_run_data(p)
    add_weights(p)
    add_common(p)
    add_threads(p, "torch threads (default: torch's own)")


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit encode` as parsed into ``a``; the exit status."""
    with num_threads(a.threads):
        return _encode(a)


def _encode(a: argparse.Namespace) -> int:
    run = load_run(a.run, a)
    ds = run_dataset(a, run)
    if a.out is not None and str(a.out).lower().endswith(".npz"):
        out, sizes, units = write_codes_dataset(a.out, run, ds, min_sd=a.min_sd)
        counts = ", ".join(f"{k} {n}" for k, n in sizes.items())
        kept = (
            f"{len(units)} of its {run.latent_dim} dimensions (means' sd > {a.min_sd:g})"
            if a.min_sd > 0
            else f"{run.latent_dim} dimensions"
        )
        print(f"encoded every split ({counts}) into {kept}: a dataset of means and variances")
        wrote(out)
        notes(run)
        return 0
    if a.min_sd:
        raise UsageError("--min-sd chooses the units of a dataset of codes: give --out FILE.npz")
    # Every file it may write is checked before the encoding.
    if a.out is None:
        prefix, fmt = run.dir / f"latents_{a.split}", a.format or "npy"
    else:
        prefix, fmt = encoding_prefix(a.out, a.format, option="--out", fmt_option="--format")
    encoding = run.encode_split(a.split, dataset=ds)
    check_finite(run, encoding["mean"], "latent means")
    check_finite(run, encoding["var"], "latent variances")
    files = write_encoding(prefix, encoding, fmt)
    print(f"encoded {len(encoding['mean'])} {a.split} examples into {run.latent_dim} dimensions")
    wrote(*files)
    notes(run)
    return 0
