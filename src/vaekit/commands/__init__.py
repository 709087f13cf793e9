"""The command line's subcommands, one module each.

Each module ``vaekit.commands.NAME`` has a ``DESCRIPTION`` (the text of ``vaekit NAME
--help``), ``add_arguments(parser)`` (its options, beside the code that reads them) and
``run(args) -> int`` (the exit status); it imports what it needs at the top, so that
:mod:`vaekit.cli` imports only the module of the command it runs (``vaekit train`` loads
neither matplotlib nor the plots). The options several commands share are defined once,
in :mod:`vaekit.commands.args`; the work itself is the library's (``run`` parses, calls,
prints).

:data:`COMMANDS` lists them with their one-line help, so that ``vaekit --help`` imports
none.
"""

from __future__ import annotations

__all__ = ["COMMANDS"]

# name -> (module under vaekit.commands, the one line `vaekit --help` shows)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (or resume a run)"),
    "evaluate": (
        "evaluate",
        "importance-sampled NLL, ELBO, bits/dim, active units, ... as JSON",
    ),
    "plot": ("plot", "write the run's figures as PNG"),
    "compare": ("compare", "two runs side by side (autoencoder versus VAE) as one PNG"),
    "curves": (
        "curves",
        "learning curves of several runs in one PNG (the bound each trains, by epoch)",
    ),
    "traversals": ("traversals", "latent traversals of several runs side by side in one PNG"),
    "summary": (
        "summary",
        "one table of many runs: epochs, best epoch, time, saved NLL / ELBO / bits per dim",
    ),
    "report": ("report", "one self-contained HTML report of a run (RUN/report.html)"),
    "sample": ("sample", "draw examples from the prior and write them (PNG grid for images)"),
    "fit-sampler": (
        "fit_sampler",
        "fit a post-hoc latent sampler (a density of the codes) to a run's codes",
    ),
    "quality": ("quality", "sample quality: FID, precision and recall against the test split"),
    "reconstruct": ("reconstruct", "test examples beside their reconstructions"),
    "encode": ("encode", "latent means and variances of a split to .npy or .csv"),
    "explore": ("explore", "serve the latent-space explorer in the browser"),
    "parts": ("parts", "list the registered parts, their options and abilities"),
    "score": (
        "score",
        "per-example OOD / anomaly scores of a data set; with a second set, AUROC etc.",
    ),
    "zoo": ("zoo", "the model zoo: list, re-measure, add, and write the results tables"),
}
