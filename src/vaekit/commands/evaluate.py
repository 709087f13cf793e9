"""``vaekit evaluate``: a run's NLL, ELBO and the rest as JSON
(:func:`vaekit.evaluate.evaluate_run`), or its disentanglement scores
(:func:`vaekit.disentangle.metrics.evaluate_disentanglement`)."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands.args import (
    RUN_HELP,
    CommandError,
    add_common,
    add_out,
    add_progress,
    add_run_data,
    add_seed,
    add_threads,
    add_weights,
)
from vaekit.commands.runs import load_run, notes, run_dataset, wrote
from vaekit.data import Dataset
from vaekit.disentangle import metrics  # metrics.Protocol: a test may stand in for it
from vaekit.evaluate import evaluate_run
from vaekit.export import output_file
from vaekit.rundir import Run, eval_file_name, json_text, write_json

DESCRIPTION = (
    "Evaluate a run: k-sample importance-sampled NLL with its standard error, test ELBO "
    "with its terms, bits/dim, KL per dimension, active units, latent classifier accuracy."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit evaluate`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--k",
        type=int,
        default=5000,
        help="importance samples per example (default 5000, the literature's standard)",
    )
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "valid", "test", "all"],
        help="the split to evaluate (default: test; with --disentanglement: all, every split "
        "pooled, as disentanglement_lib samples the whole dataset)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="evaluate a seeded random N of the examples, each class keeping its share (default: 0 = all)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="examples per decoder pass (default: fitted to --max-rows)",
    )
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="samples x examples per decoder pass (default: fitted to the decoder, at most 2048; bounds memory)",
    )
    add_threads(p, "torch threads (default: torch's own, one per physical core)")
    add_seed(p, "seed of the importance samples (default: 0)")
    add_progress(p)
    p.add_argument(
        "--disentanglement",
        action="store_true",
        help="score the representation (posterior means) against the data's ground-truth "
        "factors instead: BetaVAE and FactorVAE scores, MIG, SAP, DCI with disentanglement_lib's "
        "protocol, and the split's ELBO; writes RUN/disentanglement.json (default: off)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="with --disentanglement: a tenth of the protocol's sample counts, a quick look "
        "rather than a score to report (default: off)",
    )
    add_out(
        p,
        "JSON file to write",
        "RUN/eval.json for the whole test split at k = 5000, else a name with the settings, "
        "e.g. RUN/eval-k100.json; RUN/disentanglement.json with --disentanglement",
    )
    add_run_data(p)
    add_weights(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit evaluate` as parsed into ``a``; the exit status."""
    run = load_run(a.run, a)
    ds = run_dataset(a, run)
    if a.disentanglement:
        return _disentanglement(a, run, ds)
    if a.quick:
        raise CommandError("--quick goes with --disentanglement (the NLL has --k and --limit)")
    if a.split == "all":
        raise CommandError("--split all goes with --disentanglement; the NLL takes one split")
    a.split = a.split or "test"
    # Checked before the long part.
    out = output_file(a.out, "eval.json", option="--out") if a.out else None
    result = evaluate_run(
        run,
        k=a.k,
        split=a.split,
        dataset=ds,
        limit=a.limit,
        batch_size=a.batch_size,
        max_rows=a.max_rows,
        seed=a.seed,
        threads=a.threads,
        progress=a.progress,
    )
    out = out or run.dir / eval_file_name(run, split=a.split, k=a.k, limit=a.limit)
    write_json(out, result)
    print(json_text(result))
    wrote(out, err=True)  # stdout stays JSON
    notes(run)
    if result.get("nll") is not None and result.get("nll_note"):
        # Beside the JSON (stdout stays JSON), so that the caveat is read with the number.
        print(f"note: the NLL of {result['nll']:.2f} nats is {result['nll_note']}", file=sys.stderr)
    if result.get("error") is not None:
        print(
            f"classification error of q(y|x): {100 * result['error']:.2f}% "
            f"± {100 * result['error_se']:.2f} (binomial standard error, n={result['n']})",
            file=sys.stderr,
        )
    return 0


def _disentanglement(a: argparse.Namespace, run: Run, ds: Dataset) -> int:
    out = output_file(a.out, "disentanglement.json", option="--out") if a.out else None
    a.split = a.split or "all"
    try:
        result = metrics.evaluate_disentanglement(
            run,
            split=a.split,
            dataset=ds,
            protocol=metrics.Protocol.quick() if a.quick else metrics.Protocol(),
            seed=a.seed,
            threads=a.threads,
            limit=a.limit,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = out or run.dir / metrics.disentanglement_file_name(
        run, a.split, quick=a.quick, limit=a.limit
    )
    write_json(out, result)
    print(json_text(result))
    wrote(out, err=True)  # stdout stays JSON
    notes(run)
    return 0
