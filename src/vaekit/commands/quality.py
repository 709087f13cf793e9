"""``vaekit quality``: FID and precision / recall of samples against the test split
(:func:`vaekit.quality.sample_quality`)."""

from __future__ import annotations

import argparse
import math
import sys

from vaekit.commands.args import (
    COUNT,
    RUN_HELP,
    CommandError,
    add_common,
    add_out,
    add_run_data,
    add_seed,
    add_threads,
    add_weights,
)
from vaekit.commands.runs import load_run, notes
from vaekit.commands.sample import sampler_list
from vaekit.evaluate import num_threads
from vaekit.export import output_file
from vaekit.quality import (
    FEATURES,
    format_scores,
    merge_saved,
    quality_file_name,
    reference_data,
    sample_quality,
)
from vaekit.rundir import write_json
from vaekit.samplers import saved_samplers

DESCRIPTION = (
    "FID (Heusel et al. 2017) and precision / recall (Kynkaanniemi et al. 2019) of samples "
    "from each sampler against the test split, in the feature space of a network that "
    "every output names: domain (a classifier vaekit trains once per dataset and caches; "
    "offline) or inception (FID's standard Inception-v3; its weights file is found in "
    "$VAEKIT_DATA_DIR or the cache, else downloaded and verified). Scores of different "
    "networks are not comparable. A `data` row scores training examples the same way. "
    "Writes RUN/quality-FEATURES.json."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit quality`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--sampler",
        dest="samplers",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"samplers to score, of {sampler_list()} (default: prior and every sampler "
        "saved in the run)",
    )
    p.add_argument(
        "--features",
        default="domain",
        choices=list(FEATURES),
        metavar="NAME",
        help="the feature network (%(choices)s; default: domain)",
    )
    p.add_argument(
        "--n",
        type=COUNT,
        default=None,
        help="samples per sampler (default: as many as the test split has)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature (default: 1)",
    )
    add_seed(p, "seed of the draws (default: 0)")
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="PATH",
        help="the FID Inception weights file (pt_inception-2015-12-05-6726825d.pth) or its "
        "folder, when it is not in $VAEKIT_DATA_DIR or the cache",
    )
    add_threads(p, "torch threads (default: torch's own)")
    add_out(p, "JSON file to write", "RUN/quality-FEATURES.json")
    add_run_data(p)
    add_weights(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit quality` as parsed into ``a``; the exit status."""
    if not (math.isfinite(a.temperature) and a.temperature > 0):
        raise CommandError(f"--temperature must be a positive number, got {a.temperature}")
    # The run's own stage (--stage is not read here), as before commands had modules.
    run = load_run(a.run, a, stage="auto")
    out = output_file(a.out, "quality.json", option="--out") if a.out else None
    samplers = a.samplers or ["prior", *saved_samplers(run.dir)]
    ds = reference_data(run, a.dataset, a.allow_changed_data)
    with num_threads(a.threads):
        result = sample_quality(
            run,
            samplers,
            features=a.features,
            n=a.n,
            temperature=a.temperature,
            seed=a.seed,
            dataset=ds,
            inception_path=a.inception_weights,
            log=sys.stderr,
        )
    out = out or run.dir / quality_file_name(a.features, a.n, a.temperature)
    result = merge_saved(out, result)
    write_json(out, result)
    print(format_scores(result))
    print(f"wrote {out}")
    notes(run)
    return 0
