"""Command line: thin subcommands over the library.

    vaekit train --config FILE [--dataset NAME_OR_PATH] [--epochs N] [--out RUN] [--seed S] [--set k=v ...]
    vaekit train --resume RUN [--epochs N] [--patience N] [--threads N] [--allow-changed-data]
    vaekit train --resume RUN --stage prior [--epochs N] [--set model.prior.KEY=V]
    vaekit evaluate RUN [--k 5000] [--limit N] [--threads T]
    vaekit evaluate RUN --disentanglement [--quick] [--split all|test]
    vaekit plot RUN [--which NAME ...] [--out DIR]
    vaekit compare RUN_A RUN_B [--out FILE]
    vaekit curves RUN [RUN ...] [--split valid|test|train] [--out FILE]
    vaekit traversals RUN [RUN ...] [--rows 6] [--out FILE]
    vaekit summary RUN [RUN ...] [--format markdown|csv|json] [--out FILE]
    vaekit report RUN [--k K]
    vaekit sample RUN [--n 64] [--label K] [--sampler prior|gmm|flow|two-stage] [--temperature T]
    vaekit fit-sampler RUN --sampler gmm|flow|two-stage [--option KEY=VALUE ...]
    vaekit quality RUN [--sampler NAME ...] [--features domain|inception] [--n N] [--temperature T]
    vaekit reconstruct RUN [--n 16]
    vaekit encode RUN [--split test] [--format npy|csv]
    vaekit explore RUN [--host 127.0.0.1] [--port 0|N] [--data-dir DIR]
    vaekit score RUN DATA [OOD] [--scores NAME ...] [--background RUN2] [--threshold SCORE]
    vaekit parts [KIND [NAME]] [--format text|json]

Commands that read a run's data again (evaluate, plot, report, reconstruct, encode,
explore) take ``--dataset PATH`` for data that have moved, and refuse data that changed
since training unless ``--allow-changed-data`` (so does ``train --resume``).

``python -m vaekit`` is the same program.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Only light imports here: torch loads inside the commands, where main() catches a Ctrl-C.
from vaekit.errors import UsageError, VaekitError

__all__ = ["main", "build_parser", "CommandError"]


class CommandError(UsageError):
    """A command's arguments that cannot be carried out as given; the message says why.

    Like every :class:`~vaekit.errors.VaekitError` the library raises for a user to read
    (:class:`~vaekit.errors.UsageError`, ConfigError, DataError, RunError), it is printed
    once, by :func:`main`, as ``error: ...`` with exit status 2.
    """


def _int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``lo..hi``; anything else is a usage error (exit 2)."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"at least {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return integer


RUN_HELP = "a run directory (what `vaekit train --out` wrote)"

COUNT = _int_range(1)
SEED = _int_range(0, 2**32 - 1)  # as train.seed
THREADS = _int_range(1, 4096)  # as train.threads; torch crashes on absurd counts
DPI = _int_range(1, 1000)  # matplotlib refuses images over 2**16 pixels a side


def _common(p: argparse.ArgumentParser, device: str = "cpu") -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="where named datasets' files are found (default: $VAEKIT_DATA_DIR)",
    )
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:N (default: {device})")


def _run_data_flags(p: argparse.ArgumentParser, moved: bool = True) -> None:
    """Flags for commands that read a run's data again."""
    if moved:
        p.add_argument(
            "--dataset",
            default=None,
            metavar="PATH",
            help="where the run's data file or folder is now, when it has moved "
            "(it must hold the same data)",
        )
    p.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="go on when the data differ from those the run was trained on (rows added, "
        "values edited); the splits then hold other examples than training used",
    )


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default="last",
        choices=["last", "best"],
        help="last: the newest weights (default); best: the epoch with the best validation "
        "ELBO (RUN/best.safetensors)",
    )
    p.add_argument(
        "--stage",
        default="auto",
        choices=["auto", "model", "prior"],
        help="a run with a prior fitted to its codes (RUN/prior, `vaekit train --resume RUN "
        "--stage prior`): auto loads that prior stage when it exists (default), and its "
        "outputs go under RUN/prior; model: the run as first trained (outputs under RUN)",
    )


def _dataset_list() -> str:
    from vaekit.data import NAMED

    return ", ".join(NAMED)


def _sampler_list(fitted: bool = False) -> str:
    from vaekit.samplers import SAMPLERS

    return "; ".join(
        f"{name}: {s.summary}" for name, s in SAMPLERS.items() if s.needs_fit or not fitted
    )


def _part_kind_list() -> str:
    from vaekit.catalog import KINDS

    return ", ".join(k for k in KINDS if "." not in k)


def _figure_list() -> str:
    from vaekit.plots import figure_list

    return figure_list()


class _RegistryHelp(argparse.HelpFormatter):
    """Help texts whose lists come from the registries (named datasets, samplers, figures),
    so that none is kept by hand and falls behind: a ``{datasets}``, ``{samplers}``,
    ``{fitted-samplers}`` or ``{figures}`` in a help text is filled when the help is shown
    (the registries load torch, which building the parser must not)."""

    LISTS: dict[str, Callable[[], str]] = {
        "{datasets}": _dataset_list,
        "{samplers}": _sampler_list,
        "{fitted-samplers}": lambda: _sampler_list(fitted=True),
        "{figures}": _figure_list,
        "{part-kinds}": _part_kind_list,
    }

    def _fill(self, text: str) -> str:
        for key, names in self.LISTS.items():
            if key in text:
                text = text.replace(key, names())
        return text

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return None if text is None else self._fill(text)

    def add_text(self, text: str | None) -> None:  # a parser's description
        super().add_text(None if text is None else self._fill(text))


class _Names:
    """Names read from a registry when first asked (argparse ``choices``): the registries
    load torch, which building the parser must not."""

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load
        self._names: list[str] | None = None

    def _get(self) -> list[str]:
        if self._names is None:
            self._names = self._load()
        return self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __len__(self) -> int:
        return len(self._get())


def _feature_names() -> list[str]:
    from vaekit.quality import FEATURES

    return list(FEATURES)


def _sampler_names(fitted: bool = False) -> _Names:
    def load() -> list[str]:
        from vaekit.samplers import SAMPLERS

        return [name for name, s in SAMPLERS.items() if s.needs_fit or not fitted]

    return _Names(load)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaekit", description="Variational autoencoders composed from parts."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", help="`vaekit COMMAND --help` describes each"
    )

    p = sub.add_parser(
        "train",
        help="train a model (or resume a run)",
        description="Train a model from a config file and/or flags.",
    )
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE_OR_NAME",
        help="a YAML, TOML or JSON config file, or the name of a bundled config (demo, "
        "003_vae, bmnist_iwae_k5, ...; an unknown name lists them) (default: the built-in "
        "defaults)",
    )
    p.add_argument(
        "--resume", default=None, metavar="RUN", help="continue the run in this directory"
    )
    p.add_argument(
        "--stage",
        default="model",
        choices=["model", "prior"],
        help="with --resume: model trains the run itself (default); prior fits a learned prior "
        "to its frozen codes in RUN/prior (model.prior: pixelcnn for discrete codes, or "
        "--set model.prior=NAME), so that `vaekit sample RUN` draws from it",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="a named dataset ({datasets}), a file or folder, or module:function",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="N",
        help="epochs to train (train.epochs; default: the config's); with --resume, the new total",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        metavar="N",
        help="early stopping: end after N epochs without a better validation score "
        "(train.patience; 0 = off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads (train.threads; 0 = torch's default); may change on --resume",
    )
    p.add_argument(
        "--out", "-o", default=None, help="run directory to write (default: runs/<config name>)"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="random seed (train.seed; default: the config's)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set model.latent_dim=2 (repeatable); a part and its "
        "options in any order: --set objective=iwae --set objective.samples=5",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when the terminal is interactive)",
    )
    _run_data_flags(p, moved=False)
    _common(p, "train.device of the config or run; auto: cuda when there is one")

    p = sub.add_parser(
        "evaluate",
        help="importance-sampled NLL, ELBO, bits/dim, active units, ... as JSON",
        description="Evaluate a run: k-sample importance-sampled NLL with its standard error, test ELBO with its terms, bits/dim, KL per dimension, active units, latent classifier accuracy.",
    )
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
    p.add_argument(
        "--threads",
        type=THREADS,
        default=None,
        help="torch threads (default: torch's own, one per physical core)",
    )
    p.add_argument(
        "--seed", type=SEED, default=0, help="seed of the importance samples (default: 0)"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when the terminal is interactive)",
    )
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
    p.add_argument(
        "--out",
        default=None,
        help="JSON file to write (default: RUN/eval.json for the whole test split at k = 5000, "
        "else a name with the settings, e.g. RUN/eval-k100.json; RUN/disentanglement.json "
        "with --disentanglement)",
    )
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "plot",
        help="write the run's figures as PNG",
        description="Write every figure that applies to the run (or those named with --which) as PNG files.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--which",
        nargs="+",
        default=None,
        metavar="NAME",
        help="figures to write (default: all that apply): {figures}",
    )
    p.add_argument("--out", default=None, help="folder to write into (default: RUN/plots)")
    p.add_argument("--dpi", type=DPI, default=100, help="resolution of the PNGs (default: 100)")
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "compare",
        help="two runs side by side (autoencoder versus VAE) as one PNG",
        description="Two runs side by side, as in tutorial 003 (autoencoder versus VAE): "
        "for each, the latent scatter of test examples by class, a decoded grid over the "
        "latent range, and decoded draws from the prior.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="the run drawn on the left")
    p.add_argument(
        "run_b", metavar="RUN_B", help="the run drawn on the right (its test split is used)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="figure file; .png, .pdf, .svg, ... by the extension "
        "(default: RUN_B/compare-<RUN_A name>.png)",
    )
    p.add_argument("--n", type=COUNT, default=2000, help="test examples to scatter (default: 2000)")
    _common(p)

    p = sub.add_parser(
        "curves",
        help="learning curves of several runs in one PNG (the bound each trains, by epoch)",
        description="Minus the bound each run trains (the IWAE bound, else the ELBO; nats) on "
        "one split, by epoch, with each run's best epoch marked: where long runs stand.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, one curve each")
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "valid", "test"],
        help="the split whose scores are drawn (default: valid when every run has a "
        "validation split, else test)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="figure file; .png, .pdf, .svg, ... by the extension (default: curves-SPLIT.png)",
    )
    p.add_argument("--dpi", type=DPI, default=100, help="resolution of a PNG (default: 100)")

    p = sub.add_parser(
        "traversals",
        help="latent traversals of several runs side by side in one PNG",
        description="For each run, its most informative latent dimensions (by KL) varied one "
        "at a time around the code of the same test example: whether each dimension "
        "changes one factor of the image (disentangled) or several.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, one panel each")
    p.add_argument("--rows", type=COUNT, default=6, help="latent dimensions per run (default: 6)")
    p.add_argument("--n", type=COUNT, default=7, help="values per dimension (default: 7)")
    p.add_argument(
        "--span", type=float, default=2.0, help="values from -SPAN to SPAN (default: 2.0)"
    )
    p.add_argument("--example", type=int, default=0, help="which test example's code (default: 0)")
    p.add_argument(
        "--out",
        default=None,
        help="figure file; .png, .pdf, .svg, ... by the extension (default: traversals.png)",
    )
    p.add_argument("--dpi", type=DPI, default=100, help="resolution of a PNG (default: 100)")
    _common(p)

    p = sub.add_parser(
        "summary",
        help="one table of many runs: epochs, best epoch, time, saved NLL / ELBO / bits per dim",
        description="A row per run from what training and `vaekit evaluate` saved (it "
        "evaluates nothing): the README's benchmark tables, rebuilt from your runs.",
    )
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
    p.add_argument("--out", default=None, help="file to write (default: print)")

    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a run (RUN/report.html)",
        description="One self-contained HTML file about a run: its settings, learning "
        "curves, the evaluation (the saved one, else a new one with --k) and every figure "
        "that applies.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--k",
        type=COUNT,
        default=None,
        help="evaluate with k importance samples (default: reuse the run's saved evaluation "
        "with the highest k, else k=100)",
    )
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html)")
    p.add_argument(
        "--threads",
        type=THREADS,
        default=None,
        help="torch threads for the evaluation (default: torch's own)",
    )
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "sample",
        help="draw examples from the prior and write them (PNG grid for images)",
        description="Draw examples from the model and write them: an image grid, or the "
        "values as .npy or .csv. By default each example is the mean of p(x|z) at a z drawn "
        "from the prior (smooth images; for real-valued data, rows with less spread than "
        "the data); --draw draws x ~ p(x|z) instead (synthetic rows).",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--n", type=COUNT, default=64, help="examples to draw (default: 64)")
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class to sample (conditional models; default: every class in turn)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default: 0)")
    p.add_argument(
        "--draw",
        action="store_true",
        help="write draws x ~ p(x|z), with the likelihood's noise (synthetic rows of tabular "
        "data; binary pixels for a Bernoulli likelihood); default: the mean of p(x|z)",
    )
    _sampler_flags(p)
    p.add_argument(
        "--out",
        default=None,
        help="output file; the extension picks the format: .png or .jpg (an image grid), "
        ".npy (shape (N, *data shape)) or .csv (a row per example) (default: "
        "RUN/samples.png for images, else RUN/samples.csv; RUN/prior/... once a prior "
        "stage exists)",
    )
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "fit-sampler",
        help="fit a post-hoc latent sampler (a density of the codes) to a run's codes",
        description="Fit a density to the posterior means of the run's training split and "
        "save it in RUN/samplers/NAME (sampler.json says what was fitted). {fitted-samplers} "
        '(a flow needs zuko: pip install "vaekit[flows]"). `vaekit sample --sampler NAME` '
        "and `vaekit quality` fit one on first use; this refits it.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--sampler",
        required=True,
        choices=_sampler_names(fitted=True),
        metavar="NAME",  # argparse would read the registry (torch) to draw the usage
        help="the density to fit to the run's training codes: {fitted-samplers}",
    )
    p.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, e.g. components=[5,10,20] (gmm), kind=maf or epochs=50 "
        "(flow), latent_dim=8 (two-stage) (repeatable)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the fit (default: 0)")
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "quality",
        help="sample quality: FID, precision and recall against the test split",
        description="FID (Heusel et al. 2017) and precision / recall (Kynkaanniemi et al. "
        "2019) of samples from each sampler against the test split, in the feature space "
        "of a network that every output names: domain (a classifier vaekit trains once per "
        "dataset and caches; offline) or inception (FID's standard Inception-v3; its "
        "weights file is found in $VAEKIT_DATA_DIR or the cache, else downloaded and "
        "verified). Scores of different networks are not comparable. A `data` row scores "
        "training examples the same way. Writes RUN/quality-FEATURES.json.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--sampler",
        dest="samplers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="samplers to score, of {samplers} (default: prior and every sampler saved in the run)",
    )
    p.add_argument(
        "--features",
        default="domain",
        choices=_Names(_feature_names),
        metavar="NAME",  # argparse would read the registry (torch) to draw the usage
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
    p.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default: 0)")
    p.add_argument(
        "--inception-weights",
        default=None,
        metavar="PATH",
        help="the FID Inception weights file (pt_inception-2015-12-05-6726825d.pth) or its "
        "folder, when it is not in $VAEKIT_DATA_DIR or the cache",
    )
    p.add_argument(
        "--threads",
        type=THREADS,
        default=None,
        help="torch threads (default: torch's own)",
    )
    p.add_argument(
        "--out", default=None, help="JSON file to write (default: RUN/quality-FEATURES.json)"
    )
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "reconstruct",
        help="test examples beside their reconstructions",
        description="The first --n examples of a split and their reconstructions (decoded "
        "at the posterior mean): an image grid with labelled rows, or the values.",
    )
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
    p.add_argument(
        "--out",
        default=None,
        help="output file; the extension picks the format: .png or .jpg (originals above "
        "their reconstructions), .npy (shape (2, N, *data shape): originals, then "
        "reconstructions) or .csv (x0.. then recon0.. per row) (default: "
        "RUN/reconstructions.png for images, else RUN/reconstructions.csv)",
    )
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "encode",
        help="latent means and variances of a split to .npy or .csv",
        description="Encode every example of a split: the means and variances of q(z|x) "
        "(and the labels, when the data have them), as .npy files or one .csv.",
    )
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
    p.add_argument(
        "--out",
        default=None,
        metavar="PREFIX",
        help="output prefix; ending it in .npy or .csv chooses the format "
        "(default: RUN/latents_SPLIT)",
    )
    _run_data_flags(p)
    _weights(p)
    _common(p)

    p = sub.add_parser(
        "explore",
        help="serve the latent-space explorer in the browser",
        description="Serve a web page to explore a run's latent space: the encoded test set, live decoding, interpolation, traversals, samples, and your own drawings. Prints the address.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; anything else prints a warning)",
    )
    p.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free one)")
    p.add_argument(
        "--threads",
        type=_int_range(0, 4096),
        default=1,
        help="torch threads for decoding (default 1, the fastest for single points; 0 leaves torch's default)",
    )
    _run_data_flags(p)
    _common(p)

    p = sub.add_parser(
        "parts",
        help="list the registered parts, their options and abilities",
        description="List the parts a config can name (vaekit.catalog): every kind and its "
        "parts; one kind's parts with their options and abilities; or one part in full, with "
        "an example --set line.",
    )
    p.add_argument(
        "kind",
        nargs="?",
        default=None,
        metavar="KIND",
        help="a kind of part: {part-kinds} (default: every kind)",
    )
    p.add_argument(
        "name",
        nargs="?",
        default=None,
        metavar="NAME",
        help="one part of KIND: a registered name, or a class of yours as module:Class",
    )
    p.add_argument(
        "--format",
        default="text",
        choices=["text", "json"],
        help="text to read (default) or json for tools",
    )
    # `vaekit score` (issue 28): per-example OOD / anomaly scores; library: vaekit.ood.
    p = sub.add_parser(
        "score",
        help="per-example OOD / anomaly scores of a data set; with a second set, AUROC etc.",
        description="Score every example of DATA under the run: importance-sampled log p(x), "
        "the ELBO terms, the input complexity (images, Serra et al. 2020), LLR>k "
        "(hierarchies, Havtorn et al. 2021), the likelihood ratio against --background "
        "(Ren et al. 2019) and likelihood regret (--scores regret, Xiao et al. 2020). Given "
        "OOD too, DATA is the in-distribution set: AUROC, AUPRC and FPR at 80% TPR of every "
        "score, and a figure of both sets' histograms. Writes PREFIX_NAME.npy (a structured "
        "array, a field per score) or .csv per set, and PREFIX_IN_vs_OUT.json/.png.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "data",
        metavar="DATA",
        help="what to score (the in-distribution set when OOD is given): a named dataset "
        "({datasets}), a file or folder, or module:function",
    )
    p.add_argument(
        "ood", nargs="?", default=None, metavar="OOD", help="an out-of-distribution set, as DATA"
    )
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "valid", "test", "all"],
        help="the split of DATA and OOD (default: test; a single .csv/.tsv/.npy/.amat file: "
        "every row in order)",
    )
    p.add_argument(
        "--ood-split",
        default=None,
        choices=["train", "valid", "test", "all"],
        help="the split of OOD when it differs (default: --split's)",
    )
    p.add_argument(
        "--scores",
        nargs="+",
        default=None,
        metavar="NAME",
        help="log_px, elbo (with recon and kl), complexity, llr, ratio, regret (default: "
        "log_px and elbo, complexity for images, llr for hierarchies, ratio with --background)",
    )
    p.add_argument(
        "--k", type=COUNT, default=100, help="importance samples of log p(x) (default: 100)"
    )
    p.add_argument(
        "--elbo-samples", type=COUNT, default=10, help="draws of the ELBO terms (default: 10)"
    )
    p.add_argument(
        "--llr-k",
        type=COUNT,
        nargs="+",
        default=[1],
        metavar="K",
        help="LLR>k: how many bottom layers come from the prior (default: 1)",
    )
    p.add_argument(
        "--llr-samples",
        type=COUNT,
        default=1,
        help="importance samples of both bounds of LLR>k (default: 1, as Havtorn et al.'s script)",
    )
    p.add_argument(
        "--llr-prior-mean",
        action="store_true",
        help="LLR>k: the bottom layers at their prior means (the authors' code) instead of drawn",
    )
    p.add_argument(
        "--background",
        default=None,
        metavar="RUN2",
        help="a run trained on perturbed inputs: adds the likelihood ratio log p(x) - log p_RUN2(x)",
    )
    p.add_argument(
        "--regret-steps",
        type=COUNT,
        default=100,
        help="likelihood regret: Adam steps on each example's encoder copy (default: 100; slow)",
    )
    p.add_argument(
        "--regret-lr",
        type=float,
        default=2e-4,
        help="likelihood regret: learning rate (default: 2e-4)",
    )
    p.add_argument(
        "--threshold",
        default=None,
        metavar="SCORE",
        help="flag DATA's examples whose SCORE is more anomalous than --quantile of the run's "
        "validation split (its test split when it has none): adds a column flag_SCORE",
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=0.99,
        help="--threshold's quantile of the validation scores (default: 0.99, so about 1%% "
        "of in-distribution examples are flagged)",
    )
    p.add_argument(
        "--limit",
        type=_int_range(0),
        default=0,
        help="score a seeded N of each set (default: 0, every example)",
    )
    p.add_argument("--batch-size", type=COUNT, default=100, help="examples per pass (default: 100)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the draws (default: 0)")
    p.add_argument(
        "--threads", type=THREADS, default=None, help="torch threads (default: torch's own)"
    )
    p.add_argument(
        "--format",
        default="csv",
        choices=["npy", "csv"],
        help="per-example files: csv (a column per score, default) or npy (a structured array)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="PREFIX",
        help="output prefix (default: RUN/scores): PREFIX_NAME.csv per set, PREFIX_IN_vs_OUT.json/.png",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when the terminal is interactive)",
    )
    _run_data_flags(p)
    _weights(p)
    _common(p)

    # Every help text may name a registry's list ({datasets}, {samplers}, ...): filled when shown.
    parser.formatter_class = _RegistryHelp
    for command in sub.choices.values():
        command.formatter_class = _RegistryHelp
    return parser


def _sampler_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampler",
        default="prior",
        choices=_sampler_names(),
        metavar="NAME",  # argparse would read the registry (torch) to draw the usage
        help="where the codes come from (default: prior): {samplers}; a density of the "
        "run's training codes is fitted and saved in RUN/samplers on first use (see `vaekit "
        "fit-sampler`)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="scales the sampler's spread (the prior's standard deviation, every layer's in a "
        "hierarchy; each mixture component's; a flow's or second stage's base noise); below 1: "
        "fewer, sharper kinds of samples (default: 1)",
    )


def _default_out(config: str | None) -> Path:
    stem = Path(config).stem if config else "default"
    base = Path("runs") / stem
    out, i = base, 1
    while out.exists() and any(out.iterdir()):
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def cmd_train(a: argparse.Namespace) -> int:
    from vaekit.config import load_config
    from vaekit.train import fit

    if a.stage == "prior":
        return _train_prior_stage(a)
    if a.resume:
        if a.out is not None:
            raise CommandError(
                f"--resume continues {a.resume} in place; drop --out (to start a new run "
                f"from its settings: vaekit train --config {Path(a.resume) / 'config.json'} --out DIR)"
            )
        if a.config or a.overrides or a.dataset or a.seed is not None:
            raise CommandError(
                "--resume continues a run with its own config; only --epochs, "
                "--patience, --threads and --device may change"
            )
        from vaekit.rundir import RunError, no_run_dir

        try:
            fit(None, a.resume, resume=True, **_resume_settings(a))
        except RunError:
            if not Path(a.resume).is_dir():  # fit() says how to make one in Python
                raise no_run_dir(a.resume) from None
            raise
        return 0
    overrides = list(a.overrides)
    if a.dataset:
        overrides.append(f"data.name={a.dataset}")
    if a.epochs is not None:
        overrides.append(f"train.epochs={a.epochs}")
    if a.patience is not None:
        overrides.append(f"train.patience={a.patience}")
    if a.threads is not None:
        overrides.append(f"train.threads={a.threads}")
    if a.seed is not None:
        overrides.append(f"train.seed={a.seed}")
    if a.device:
        overrides.append(f"train.device={a.device}")
    cfg = load_config(a.config, overrides)
    if a.out:
        from vaekit.rundir import check_not_run_file

        check_not_run_file(a.out, "--out", example=None)
    out = Path(a.out) if a.out else _default_out(a.config)
    fit(cfg, out, data_dir=a.data_dir, progress=a.progress)
    return 0


def _train_prior_stage(a: argparse.Namespace) -> int:
    """``train --resume RUN --stage prior``: fit a prior to RUN's codes in RUN/prior."""
    from vaekit.stages import train_prior

    if not a.resume:
        raise CommandError(
            "--stage prior fits a prior to a trained run's codes: "
            "vaekit train --resume RUN --stage prior --epochs N"
        )
    if a.out is not None or a.config or a.dataset or a.seed is not None:
        raise CommandError(
            f"--stage prior trains into {Path(a.resume) / 'prior'} with {a.resume}'s data and "
            "model; drop --out, --config, --dataset and --seed (--set may choose the prior "
            "and train.* settings)"
        )
    train_prior(a.resume, overrides=a.overrides, **_resume_settings(a))
    return 0


def _resume_settings(a: argparse.Namespace) -> dict[str, Any]:
    """What ``train --resume`` may change, as keywords of :func:`vaekit.train.fit`."""
    return {
        "epochs": a.epochs,
        "patience": a.patience,
        "threads": a.threads,
        "device": a.device,
        "data_dir": a.data_dir,
        "progress": a.progress,
        "allow_changed_data": a.allow_changed_data,
    }


def _notes(run: Any) -> None:
    """What a reader of this run's outputs should know (on stderr, beside the output)."""
    from vaekit.stages import prior_note

    stage = None
    if run.parent is not None:
        # RUN/samples.png and the like of the first stage stay beside RUN/prior: say which.
        stage = (
            f"{run.parent} has a prior stage, so this is the output of {run.dir} (the model "
            f"with the prior fitted to its codes), whose files go under {run.dir}; "
            f"`--stage model` gives the run as first trained, whose files stay in {run.parent}"
        )
    for text in (stage, run.note, prior_note(run)):
        if text:
            print(f"note: {text}", file=sys.stderr)


def _wrote(*paths: Any, err: bool = False) -> None:
    """One ``wrote PATH`` line per file written (on stderr where stdout holds a result)."""
    for path in paths:
        print(f"wrote {path}", file=sys.stderr if err else sys.stdout)


def _run_dataset(a: argparse.Namespace, run: Any) -> Any:
    """The run's splits as training used them, from --dataset when the data have moved."""
    return run.dataset(a.data_dir, path=a.dataset, allow_changed=a.allow_changed_data)


def _run_and_split(a: argparse.Namespace) -> tuple[Any, Any]:
    from vaekit.data import model_view
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights, stage=a.stage)
    part = _run_dataset(a, run).split(a.split)
    if a.split == "train":
        # What the model saw: a dynamically binarized run's training split is grey.
        part = model_view(part, run.config.data.binarize, run.config.train.seed)
    return run, part


def cmd_evaluate(a: argparse.Namespace) -> int:
    from vaekit.evaluate import evaluate_run
    from vaekit.rundir import eval_file_name, json_text, load, write_json

    run = load(a.run, device=a.device or "cpu", weights=a.weights, stage=a.stage)
    ds = _run_dataset(a, run)
    if a.disentanglement:
        return _evaluate_disentanglement(a, run, ds)
    if a.quick:
        raise CommandError("--quick goes with --disentanglement (the NLL has --k and --limit)")
    if a.split == "all":
        raise CommandError("--split all goes with --disentanglement; the NLL takes one split")
    a.split = a.split or "test"
    out = _out_file(a.out, "eval.json") if a.out else None  # checked before the long part
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
    _wrote(out, err=True)  # stdout stays JSON
    _notes(run)
    if result.get("nll") is not None and result.get("nll_note"):
        # Beside the JSON (stdout stays JSON), so that the caveat is read with the number.
        print(f"note: the NLL of {result['nll']:.2f} nats is {result['nll_note']}", file=sys.stderr)
    return 0


def _evaluate_disentanglement(a: argparse.Namespace, run: Any, ds: Any) -> int:
    from vaekit.disentangle.metrics import (
        Protocol,
        disentanglement_file_name,
        evaluate_disentanglement,
    )
    from vaekit.rundir import json_text, write_json

    out = _out_file(a.out, "disentanglement.json") if a.out else None
    a.split = a.split or "all"
    try:
        result = evaluate_disentanglement(
            run,
            split=a.split,
            dataset=ds,
            protocol=Protocol.quick() if a.quick else Protocol(),
            seed=a.seed,
            threads=a.threads,
            limit=a.limit,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = out or run.dir / disentanglement_file_name(run, a.split, quick=a.quick, limit=a.limit)
    write_json(out, result)
    print(json_text(result))
    _wrote(out, err=True)  # stdout stays JSON
    _notes(run)
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from vaekit.plots import run_figures, save_figures
    from vaekit.rundir import check_not_run_file, load

    run = load(a.run, device=a.device or "cpu", weights=a.weights, stage=a.stage)
    if a.out:
        check_not_run_file(a.out, "--out", "plots")
    if a.out and Path(a.out).exists() and not Path(a.out).is_dir():
        raise CommandError(f"--out {a.out} is a file; plot writes one PNG per figure into a folder")
    figures = run_figures(run, _run_dataset(a, run), which=a.which)
    paths = save_figures(figures, Path(a.out) if a.out else run.dir / "plots", dpi=a.dpi)
    _wrote(*paths)
    _notes(run)
    return 0


def cmd_curves(a: argparse.Namespace) -> int:
    from vaekit.plots import compare_curves, curves_split
    from vaekit.rundir import objective_abilities, read_metrics, read_run_config

    runs: dict[str, Any] = {}
    for run in a.runs:
        path = Path(run)
        rows = read_metrics(path)
        if not rows:
            what = "has no metrics.jsonl rows yet" if path.is_dir() else "is not a run directory"
            raise CommandError(f"{run} {what}; pass directories that `vaekit train` wrote")
        name = path.resolve().name
        bound = objective_abilities(read_run_config(path))
        runs[name if name not in runs else str(path)] = (rows, bound)
    split = a.split or curves_split(runs)
    if split != (a.split or "valid"):
        lacking = [n for n, (rows, _) in runs.items() if not any("valid" in r for r in rows)]
        print(f"note: drawing the {split} split: {', '.join(lacking)} has no validation split")
    fig = compare_curves(runs, split)
    out = _save_figure(fig, a.out or f"curves-{split}.png", a.dpi)
    print(f"wrote {out}")
    return 0


def cmd_summary(a: argparse.Namespace) -> int:
    from vaekit.rundir import RunError
    from vaekit.summary import format_rows, summarize_run

    if len(a.runs) == 1:
        rows = [summarize_run(a.runs[0])]  # the one run must be one: its error is the error
    else:
        # `vaekit summary runs/*` may name a stray file or an empty folder: skip those.
        rows = []
        for run in a.runs:
            try:
                rows.append(summarize_run(run))
            except RunError as e:
                print(f"warning: skipped {run}: {e}", file=sys.stderr)
        if not rows:
            raise CommandError(f"none of the {len(a.runs)} arguments is a run directory")
    text = format_rows(rows, a.format)
    if a.out:
        from vaekit.rundir import atomic_write

        example = "summary." + {"markdown": "md"}.get(a.format, a.format)
        with atomic_write(_out_file(a.out, example), "w") as f:
            f.write(text)
        print(f"wrote {a.out}")
    else:
        print(text, end="")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from vaekit.plots import compare_runs, random_subset
    from vaekit.rundir import load

    run_a, run_b = load(a.run_a, device=a.device or "cpu"), load(a.run_b, device=a.device or "cpu")
    test = random_subset(run_b.dataset(a.data_dir).test, a.n)
    fig = compare_runs(run_a, run_b, test.x, test.y)
    out = _save_figure(fig, a.out or str(run_b.dir / f"compare-{run_a.dir.name}.png"), 100)
    print(f"wrote {out}")
    return 0


def cmd_traversals(a: argparse.Namespace) -> int:
    from vaekit.disentangle.figures import traversals_side_by_side
    from vaekit.rundir import load

    runs = [load(r, device=a.device or "cpu") for r in a.runs]
    test = runs[0].dataset(a.data_dir).test
    if not 0 <= a.example < len(test):
        raise CommandError(f"--example must be in 0..{len(test) - 1}, got {a.example}")
    labels = [Path(r).resolve().name for r in a.runs]
    try:
        fig = traversals_side_by_side(
            runs, labels, test, rows=a.rows, n=a.n, span=a.span, example=a.example
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = _save_figure(fig, a.out or "traversals.png", a.dpi)
    print(f"wrote {out}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from vaekit.report import write_report
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights, stage=a.stage)
    ds = _run_dataset(a, run)
    if a.out:
        _out_file(a.out, "report.html")
    out = write_report(run, k=a.k, out=a.out, dataset=ds, threads=a.threads, log=sys.stdout)
    print(f"wrote {out}")
    _notes(run)
    return 0


# What sample and reconstruct write, by --out's extension.
EXAMPLE_FORMATS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".npy": "npy", ".csv": "csv"}


def _out_file(
    out: str, example: str, suffixes: Sequence[str] | None = None, what: str = "it"
) -> Path:
    """``--out`` as a file to write: not a file or folder of a run directory's own
    (:func:`vaekit.rundir.check_not_run_file`), not a folder (``example`` names a file to
    suggest), and, given ``suffixes``, with one of those extensions: the extension picks
    the format."""
    from vaekit.rundir import check_not_run_file

    path = check_not_run_file(out, "--out", example)
    if path.is_dir():
        raise CommandError(f"--out {out} is a folder; name a file in it, e.g. {path / example}")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise CommandError(
            f"--out {out}: unknown extension {path.suffix or '(none)'}; {what} can be written "
            f"as {', '.join(suffixes)} (the extension chooses the format)"
        )
    return path


def _examples_out(out: str | None, run: Any, name: str) -> tuple[Path, str]:
    """Where sample / reconstruct write (``--out``, else ``RUN/NAME.png`` for images and
    ``RUN/NAME.csv`` for other data) and the format its extension picks: image, npy, csv."""
    is_image = bool(run.info["data"].get("is_image", False))
    if out is None:
        path = run.dir / (name + (".png" if is_image else ".csv"))
    else:
        path = _out_file(out, f"{name}.png", list(EXAMPLE_FORMATS), name)
    kind = EXAMPLE_FORMATS[path.suffix.lower()]
    if kind == "image" and not is_image:
        raise CommandError(f"this run's data are not images; write {name} as .npy or .csv")
    return path, kind


def _write_array(path: Path, kind: str, x: Any, header: list[str]) -> None:
    """An array as .npy (its shape kept) or .csv (a row per example under ``header``)."""
    import numpy as np

    from vaekit.rundir import atomic_write

    x = np.asarray(x)
    with atomic_write(path, "wb") as f:
        if kind == "npy":
            np.save(f, x)
        else:
            np.savetxt(
                f,
                x.reshape(len(x), -1),
                delimiter=",",
                header=",".join(header),
                comments="",
                fmt="%.6g",
            )


def _save_figure(fig: Any, out: str, dpi: int) -> Path:
    """A matplotlib figure to ``out`` in the format of its extension (png, pdf, svg, ...)."""
    from vaekit.rundir import atomic_write

    suffixes = [f".{k}" for k in fig.canvas.get_supported_filetypes()]
    path = _out_file(out, "figure.png", suffixes, "a figure")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format=path.suffix[1:].lower())
    return path


def _finite(run: Any, values: Any, what: str) -> None:
    """Stop before writing ``what`` when it holds NaN or infinite values: the weights are
    damaged (or the model diverged), which the file would hide."""
    import torch

    if not bool(torch.isfinite(torch.as_tensor(values)).all()):
        from vaekit.rundir import weights_fallback

        path = run.weights_file
        weights = f"the weights in {path}" if path is not None else "the run's weights"
        instead = f"; {weights_fallback(run.dir, path)}" if path is not None else ""
        raise CommandError(
            f"the {what} hold NaN or infinite values, so nothing was written: {weights} are "
            f"damaged, or the model diverged{instead}"
        )


def _columns(run: Any) -> tuple[list[str], bool]:
    """The data's own column names (a CSV's header) and True, else x0, x1, ... and False."""
    d = 1
    for n in run.data_shape:
        d *= int(n)
    named = run.info["data"].get("columns")
    if isinstance(named, list) and len(named) == d:
        return [str(c) for c in named], True
    return [f"x{i}" for i in range(d)], False


def cmd_sample(a: argparse.Namespace) -> int:
    import torch

    from vaekit.images import display_scale, image_grid, save_image, to_images
    from vaekit.rundir import load

    run = load(a.run, device=a.device or "cpu", weights=a.weights, stage=a.stage)
    out, kind = _examples_out(a.out, run, "samples")
    if a.label is not None and run.num_classes and not 0 <= a.label < run.num_classes:
        raise CommandError(f"--label must be a class of this model, 0..{run.num_classes - 1}")
    # A conditional model cycles through its classes unless --label picks one, as
    # Run.sample does; an unconditional one refuses --label.
    if not (a.temperature > 0 and math.isfinite(a.temperature)):
        raise CommandError(f"--temperature must be a positive number, got {a.temperature}")
    if a.sampler != "prior":
        from vaekit.samplers import load_sampler

        load_sampler(run, a.sampler, log=sys.stderr)  # fitted now if it is not yet
    torch.manual_seed(a.seed)
    try:
        x = run.sample(a.n, a.label, draw=a.draw, sampler=a.sampler, temperature=a.temperature)
    except ValueError as e:  # a prior that has no temperature
        raise CommandError(str(e)) from None
    _finite(run, x, "samples")
    if kind == "image":
        ncol = run.num_classes if (run.num_classes and a.label is None) else None
        grid = image_grid(to_images(x, run.data_shape), ncol=ncol)
        save_image(grid, out, scale=display_scale(run.data_shape))
    else:
        _write_array(out, kind, x.cpu().numpy(), _columns(run)[0])
    what = "draws x ~ p(x|z)" if a.draw else "means of p(x|z)"
    source = "the prior" if a.sampler == "prior" else f"the {a.sampler} sampler"
    print(f"wrote {out} ({a.n} samples: {what} at z from {source})")
    _notes(run)
    return 0


def _option_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (numbers, lists, strings)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise CommandError(f"--option {pair!r}: expected KEY=VALUE, e.g. components=[5,10]")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CommandError(f"--option {pair!r}: the value is not readable") from None
    return out


def cmd_fit_sampler(a: argparse.Namespace) -> int:
    from vaekit.samplers import fit_sampler

    run = _load_run(a)
    options = _option_values(a.options)
    fit_sampler(run, a.sampler, options, dataset=_run_dataset(a, run), seed=a.seed, log=sys.stdout)
    return 0


def cmd_quality(a: argparse.Namespace) -> int:
    import math

    from vaekit.evaluate import num_threads
    from vaekit.quality import (
        format_scores,
        merge_saved,
        quality_file_name,
        reference_data,
        sample_quality,
    )
    from vaekit.rundir import write_json
    from vaekit.samplers import saved_samplers

    if not (math.isfinite(a.temperature) and a.temperature > 0):
        raise CommandError(f"--temperature must be a positive number, got {a.temperature}")
    run = _load_run(a)
    out = _out_file(a.out, "quality.json") if a.out else None
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
    _notes(run)
    return 0


def _load_run(a: argparse.Namespace) -> Any:
    from vaekit.rundir import load

    return load(a.run, device=a.device or "cpu", weights=a.weights)


def cmd_reconstruct(a: argparse.Namespace) -> int:
    import numpy as np

    from vaekit.images import display_scale, image_grid, save_image, to_images

    run, split = _run_and_split(a)
    out, kind = _examples_out(a.out, run, "reconstructions")
    n = min(a.n, len(split))
    x = split.x[:n].to(run.device)
    y = split.y[:n] if (split.y is not None and run.num_classes) else None
    xr = run.reconstruct(x, y)
    _finite(run, xr, "reconstructions")
    if kind == "image":
        # Originals in the odd rows, reconstructions under them, each row labelled.
        ncol = min(n, 16)
        rows = []
        for i in range(0, n, ncol):
            rows += [
                to_images(x[i : i + ncol], run.data_shape),
                to_images(xr[i : i + ncol], run.data_shape),
            ]
        imgs = np.concatenate(
            [
                np.pad(r, [(0, ncol - len(r))] + [(0, 0)] * (r.ndim - 1), constant_values=1.0)
                for r in rows
            ]
        )
        labels = ["original", "reconstruction"] * (len(rows) // 2)
        grid = image_grid(imgs, ncol=ncol)
        save_image(grid, out, scale=display_scale(run.data_shape), row_labels=labels)
    elif kind == "npy":
        # (2, n, *shape): the originals, then their reconstructions.
        _write_array(out, kind, np.stack([x.cpu().numpy(), xr.cpu().numpy()]), [])
    else:
        d = int(np.prod(run.data_shape))
        both = np.concatenate(
            [x.cpu().numpy().reshape(n, d), xr.cpu().numpy().reshape(n, d)], axis=1
        )
        names, named = _columns(run)
        recon = [f"recon_{c}" for c in names] if named else [f"recon{i}" for i in range(d)]
        _write_array(out, kind, both, names + recon)
    print(f"wrote {out} ({n} originals and their reconstructions)")
    _notes(run)
    return 0


def _encode_out(a: argparse.Namespace, run_dir: Path) -> tuple[Path, str]:
    """The prefix encode writes to and its format: ``--out`` may end in .npy or .csv,
    which then chooses the format (``--format`` must agree); default npy."""
    if a.out is None:
        return run_dir / f"latents_{a.split}", a.format or "npy"
    path = Path(a.out)
    if path.is_dir():
        raise CommandError(
            f"--out {a.out} is a folder; give a file prefix in it, e.g. {path / 'latents'}"
        )
    suffix = path.suffix.lower()
    if suffix not in ("", ".npy", ".csv"):
        raise CommandError(
            f"--out {a.out}: unknown extension {path.suffix}; give a prefix without one "
            "(PREFIX_mean.npy, ... or PREFIX.csv are written), or end it in .npy or .csv"
        )
    fmt = suffix[1:] or a.format or "npy"
    if a.format and a.format != fmt:
        raise CommandError(f"--out {a.out} is a .{fmt} file but --format is {a.format}")
    from vaekit.rundir import check_not_run_file

    prefix = path.with_suffix("")
    ends = (".csv",) if fmt == "csv" else ("_mean.npy", "_var.npy", "_codes.npy", "_labels.npy")
    for end in ends:  # the files it writes, before it writes any
        check_not_run_file(prefix.with_name(prefix.name + end), "--out", "latents")
    return prefix, fmt


def cmd_encode(a: argparse.Namespace) -> int:
    import numpy as np

    from vaekit.evaluate import posterior_moments

    run, split = _run_and_split(a)
    prefix, fmt = _encode_out(a, run.dir)
    # The means evaluation, the plots and the explorer use: the same function.
    moments = posterior_moments(run.model, split.x, split.y if run.num_classes else None)
    _finite(run, moments.mean, "latent means")
    _finite(run, moments.variance, "latent variances")
    mean, var = moments.mean.numpy(), moments.variance.numpy()
    codes = []
    if run.model.composition.posterior.discrete:
        import torch

        # The code index at each position of the most probable code.
        for i in range(0, len(split), 1000):
            x = split.x[i : i + 1000]
            y = None if (split.y is None or not run.num_classes) else split.y[i : i + 1000]
            codes.append(run.model.encoder.head.codes(run.encode(x, y).mode).cpu())
    labels = split.y.numpy() if split.y is not None else None
    if fmt == "npy":
        files = [
            prefix.with_name(prefix.name + "_mean.npy"),
            prefix.with_name(prefix.name + "_var.npy"),
        ]
        _write_array(files[0], "npy", mean, [])
        _write_array(files[1], "npy", var, [])
        if codes:
            files.append(prefix.with_name(prefix.name + "_codes.npy"))
            _write_array(files[-1], "npy", torch.cat(codes).numpy(), [])
        if labels is not None:
            files.append(prefix.with_name(prefix.name + "_labels.npy"))
            _write_array(files[-1], "npy", labels, [])
    else:
        d = mean.shape[1]
        cols = [mean, var] + ([labels[:, None].astype(np.float64)] if labels is not None else [])
        header = (
            [f"mean_{i}" for i in range(d)]
            + [f"var_{i}" for i in range(d)]
            + (["label"] if labels is not None else [])
        )
        files = [prefix.with_name(prefix.name + ".csv")]
        _write_array(files[0], "csv", np.concatenate(cols, axis=1), header)
    print(f"encoded {len(mean)} {a.split} examples into {run.latent_dim} dimensions")
    _wrote(*files)
    _notes(run)
    return 0


def cmd_explore(a: argparse.Namespace) -> int:
    from vaekit.serve import serve

    if not 0 <= a.port <= 65535:
        raise CommandError("--port must be in 0..65535 (0 picks a free port)")
    try:
        serve(
            a.run,
            a.host,
            a.port,
            data_dir=a.data_dir,
            device=a.device or "cpu",
            threads=a.threads,
            data_path=a.dataset,
            allow_changed_data=a.allow_changed_data,
        )
    except OSError as e:
        # Binding fails this way: the port is taken, or the host is not an address here.
        raise CommandError(f"cannot serve on {a.host}:{a.port}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        print("\nexplorer stopped", file=sys.stderr)
    return 0


def cmd_parts(a: argparse.Namespace) -> int:
    from vaekit.catalog import describe, describe_json

    if a.format == "json":
        print(json.dumps(describe_json(a.kind, a.name), indent=2))
    else:
        print(describe(a.kind, a.name), end="")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "plot": cmd_plot,
    "compare": cmd_compare,
    "curves": cmd_curves,
    "traversals": cmd_traversals,
    "summary": cmd_summary,
    "report": cmd_report,
    "sample": cmd_sample,
    "fit-sampler": cmd_fit_sampler,
    "quality": cmd_quality,
    "reconstruct": cmd_reconstruct,
    "encode": cmd_encode,
    "explore": cmd_explore,
    "parts": cmd_parts,
}


def _score_name(data: str, split: str | None) -> str:
    """A file-name part for a DATA argument: its name (a file's stem) and split."""
    import re

    path = Path(data)
    stem = path.stem if path.suffix else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "data"
    return f"{name}_{split}" if split else name


def cmd_score(a: argparse.Namespace) -> int:
    import numpy as np

    from vaekit.evaluate import num_threads
    from vaekit.ood import (
        ScoreSettings,
        anomaly_scores,
        anomaly_threshold,
        check_same_shape,
        default_scores,
        read_scoring_data,
        score_columns,
        score_histograms,
        score_split,
        score_table,
        summarize,
    )
    from vaekit.rundir import atomic_write, check_not_run_file, json_text, load, result_header

    run = load(a.run, device=a.device or "cpu", weights=a.weights, stage=a.stage)
    background = None
    if a.background:
        background = load(a.background, device=a.device or "cpu")
    scores = a.scores or [*default_scores(run), *(["ratio"] if background is not None else [])]
    settings = ScoreSettings(
        scores=tuple(scores),
        k=a.k,
        elbo_samples=a.elbo_samples,
        llr_k=tuple(a.llr_k),
        llr_samples=a.llr_samples,
        llr_prior_mean=a.llr_prior_mean,
        regret_steps=a.regret_steps,
        regret_lr=a.regret_lr,
        batch_size=a.batch_size,
        seed=a.seed,
    )
    columns_made = score_columns(settings)
    if a.threshold is not None and a.threshold not in columns_made:
        raise CommandError(
            f"--threshold {a.threshold} is not a score computed here; choose one of "
            f"{', '.join(columns_made)} (--scores chooses what is computed)"
        )
    # Every set is read and checked before the long part.
    sets = [(a.data, a.split)]
    if a.ood is not None:
        sets.append((a.ood, a.ood_split or a.split))
    parts = []
    for data, split in sets:
        part, what = read_scoring_data(data, split, data_dir=a.data_dir, limit=a.limit, seed=a.seed)
        check_same_shape(run, part, what)
        parts.append((part, what, _score_name(data, split)))
    if len(parts) == 2 and parts[0][2] == parts[1][2]:
        parts[1] = (parts[1][0], parts[1][1], parts[1][2] + "-ood")
    prefix = Path(a.out) if a.out else run.dir / "scores"
    if prefix.is_dir():
        raise CommandError(
            f"--out {a.out} is a folder; give a file prefix in it, e.g. {prefix / 'scores'}"
        )
    ext = "." + a.format
    names = [p[2] for p in parts]
    files = [prefix.with_name(f"{prefix.name}_{n}{ext}") for n in names]
    summary_json = prefix.with_name(f"{prefix.name}_{names[0]}_vs_{names[-1]}.json")
    figure = summary_json.with_suffix(".png")
    for path in [*files, *([summary_json, figure] if len(parts) == 2 else [])]:
        check_not_run_file(path, "--out", "scores")
    progress = sys.stderr.isatty() if a.progress is None else a.progress
    result: dict[str, Any] = {}
    columns = []
    with num_threads(a.threads) as used:
        for part, what, _ in parts:
            cols, seconds = score_split(
                run, part, settings, background=background, progress=progress
            )
            columns.append(cols)
            result.setdefault("sets", []).append({"data": what, "n": len(part), "seconds": seconds})
        if a.threshold is not None:
            ds = _run_dataset(a, run)
            which = "valid" if ds.valid is not None else "test"
            ref, _ = score_split(run, ds.split(which), settings, background=background)
            name = a.threshold
            cut = anomaly_threshold(anomaly_scores(ref)[name], a.quantile)
            flags = anomaly_scores(columns[0])[name] > cut
            columns[0]["flag_" + name] = flags.astype(np.float64)
            result["threshold"] = {
                "score": name,
                "quantile": a.quantile,
                "split": which,
                "n": len(ds.split(which)),
                "value": cut,
                "anomaly_orientation": "higher is more anomalous",
                "flagged": int(flags.sum()),
                "of": len(flags),
            }
            print(
                f"flagged {int(flags.sum())} of {len(flags)} examples: {name} beyond the "
                f"{a.quantile} quantile of the run's {which} split",
                file=sys.stderr,
            )
        result["threads"] = used
    for path, cols in zip(files, columns, strict=True):
        if a.format == "npy":
            _write_array(path, "npy", score_table(cols), [])
        else:
            _write_array(path, "csv", np.stack(list(cols.values()), axis=1), list(cols))
    header = result_header(run, parts[0][1], a.split or "test", len(parts[0][0]))
    settings_out = {
        "scores": list(scores),
        "k": a.k,
        "elbo_samples": a.elbo_samples,
        "llr_k": list(a.llr_k),
        "llr_samples": a.llr_samples,
        "llr_prior_mean": a.llr_prior_mean,
        "background": None if background is None else str(background.dir),
        "regret_steps": a.regret_steps if "regret" in scores else None,
        "seed": a.seed,
    }
    result = header | {"settings": settings_out} | result | {"files": [str(f) for f in files]}
    written = list(files)
    if len(parts) == 2:
        metrics = summarize(columns[0], columns[1])
        result["ood"] = parts[1][1]
        result["metrics"] = metrics
        result["positive"] = "the OOD set; every score oriented so that higher is more anomalous"
        fig = score_histograms(
            columns[0], columns[1], in_label=names[0], out_label=names[1], metrics=metrics
        )
        with atomic_write(figure, "wb") as f:
            fig.savefig(f, dpi=100, format="png")
        with atomic_write(summary_json, "w") as f:
            f.write(json_text(result) + "\n")
        written += [summary_json, figure]
        print(json_text(result))
    else:
        print(f"scored {len(parts[0][0])} examples of {parts[0][1]}: {', '.join(columns[0])}")
    _wrote(*written, err=len(parts) == 2)
    _notes(run)
    return 0


COMMANDS["score"] = cmd_score


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2: a request to correct, 130: Ctrl-C).

    Every failure a user can meet prints one ``error:`` line, never a traceback: vaekit's
    own errors, running out of memory, a file that cannot be read or written, Ctrl-C at
    any moment (torch loads inside the commands, so start-up is covered too).
    """
    try:
        return _main(argv)
    except VaekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # The trainer's own interruption has already said how to resume.
        if not str(e):
            print("\ninterrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(
            f"error: out of memory ({_first_line(e)}); ask for less: a smaller --n, --k, "
            "--batch-size or --max-rows",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        where = e.filename2 or e.filename
        print(f"error: {where}: {e.strerror}" if where else f"error: {e}", file=sys.stderr)
        return 1


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _out_of_memory(e: BaseException) -> bool:
    # torch's CPU allocator raises a RuntimeError ("can't allocate memory"), CUDA's
    # torch.OutOfMemoryError (also a RuntimeError) says "out of memory".
    text = str(e).lower()
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        import vaekit

        print(vaekit.__version__)
        return 0
    if not a.command:
        parser.print_help()
        return 2
    if getattr(a, "data_dir", None):
        os.environ["VAEKIT_DATA_DIR"] = a.data_dir
    return COMMANDS[a.command](a)
