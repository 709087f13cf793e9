"""``vaekit zoo``: the model zoo (:mod:`vaekit.zoo`): list its models, re-measure them
against the manifest, package a run into it, and write the results tables from it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaekit import zoo
from vaekit.commands.args import COUNT, THREADS

DESCRIPTION = "Trained models shipped in the repository's zoo/ folder ($VAEKIT_ZOO, else zoo/ beside the checkout vaekit runs from), loaded by every command as zoo:NAME. See docs/guides/zoo.md."


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit zoo` (a subcommand each: list, check, add, table)."""
    zsub = p.add_subparsers(
        dest="zoo_command",
        metavar="ZOO_COMMAND",
        required=True,
        help="list, check, add or table (`vaekit zoo ZOO_COMMAND --help` describes each)",
    )
    zsub.add_parser("list", help="the zoo's models and their figures")
    q = zsub.add_parser(
        "check",
        help="re-evaluate zoo models and compare with the manifest (exit 1 on a mismatch)",
        description="Evaluate each model (default: all) on the test split with the manifest's "
        "settings and compare its NLL and ELBO with the manifest's: within max(3 standard "
        "errors, 0.05 nats) passes.",
    )
    q.add_argument("names", nargs="*", metavar="NAME", help="zoo models (default: all)")
    q.add_argument(
        "--quick",
        action="store_true",
        help="k = 100 on a seeded 1,000 test examples, compared with the quick figure stored "
        "beside the full one (seconds per model; default: the full figure, k = 5000)",
    )
    q.add_argument(
        "--k",
        type=COUNT,
        default=None,
        help="importance samples (default: the stored figure's; another k is measured, not "
        "compared)",
    )
    q.add_argument("--threads", type=THREADS, default=1, help="torch threads (default: 1)")
    q = zsub.add_parser(
        "add",
        help="package a finished, evaluated run into the zoo",
        description="Copy RUN's config.json, model.json, metrics, the weights that give its "
        "figure (float32) and that evaluation into zoo/NAME (a prior stage's too), write "
        "its manifest entry with the SHA-256 of each file, and measure its quick figure.",
    )
    q.add_argument("run", metavar="RUN", help="the run directory to package")
    q.add_argument("name", metavar="NAME", help="its name in the zoo (zoo:NAME)")
    q.add_argument(
        "--weights",
        default="best",
        choices=["best", "last"],
        help="the weights whose evaluation is the figure (default: best)",
    )
    q.add_argument(
        "--eval",
        default=None,
        metavar="FILE",
        help="the evaluation JSON that gives the figure (default: the run's most thorough "
        "saved one of the whole test split with those weights)",
    )
    q.add_argument(
        "--config-name",
        default=None,
        help="the bundled config that trained it (default: NAME when one is so named)",
    )
    q.add_argument("--description", default=None, help="the model in a line (default: derived)")
    q.add_argument("--force", action="store_true", help="replace an entry of that name")
    q.add_argument(
        "--threads", type=THREADS, default=1, help="torch threads for the quick figure (default: 1)"
    )
    q = zsub.add_parser(
        "table",
        help="write the results tables from the manifest into README.md and docs/",
        description="Fill every <!-- zoo-table:NAME:begin --> ... <!-- zoo-table:NAME:end --> "
        "block (NAME: all, or a data name such as binarized-mnist) of README.md and "
        "docs/**/*.md from the manifest.",
    )
    q.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a block is stale"
    )
    q.add_argument(
        "--root",
        default=None,
        help="the checkout whose README.md and docs/ to fill (default: the zoo's parent)",
    )


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit zoo` as parsed into ``a``; the exit status."""
    if a.zoo_command == "list":
        print(zoo.list_text(), end="")
        return 0
    if a.zoo_command == "check":
        return 0 if zoo.check_models(a.names, quick=a.quick, k=a.k, threads=a.threads) else 1
    if a.zoo_command == "add":
        zoo.add_run(
            a.run,
            a.name,
            weights=a.weights,
            eval_file=a.eval,
            force=a.force,
            config_name=a.config_name,
            description=a.description,
            threads=a.threads,
            log=sys.stdout,
        )
        return 0
    stale = zoo.update_tables(Path(a.root) if a.root else None, check=a.check)
    for path in stale:
        print(f"{'stale' if a.check else 'wrote'} {path}")
    if a.check and stale:
        print("error: the zoo tables are stale; run `vaekit zoo table`", file=sys.stderr)
        return 1
    return 0
