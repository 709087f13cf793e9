"""What the commands that read a run share: a RUN argument made a run directory and a
loaded :class:`~vaekit.rundir.Run` (:func:`run_dir`, :func:`load_run`, the one place that
does it), the run's data as training used them, and the lines printed beside the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vaekit import rundir
from vaekit.data import Dataset, Split, model_view
from vaekit.rundir import Run, run_location
from vaekit.stages import prior_note

__all__ = ["run_dir", "load_run", "run_dataset", "run_split", "notes", "wrote"]


def run_dir(arg: str) -> Path:
    """The run directory a RUN argument names: a path as given, or for ``zoo:NAME`` the
    model's checked copy in the cache (:func:`vaekit.rundir.run_location`)."""
    return run_location(arg)[0]


def load_run(
    arg: str,
    a: argparse.Namespace,
    *,
    weights: str | None = None,
    stage: str | None = None,
) -> Run:
    """The run that a RUN argument names, on ``--device`` (default cpu), with the
    command's ``--weights`` and ``--stage`` where it has them (``weights`` and ``stage``
    given here win). Every command that loads a run goes through here; a ``zoo:NAME`` is
    resolved by the loader itself, which also picks the weights the zoo model ships."""
    return rundir.load(
        arg,
        device=getattr(a, "device", None) or "cpu",
        weights=weights or getattr(a, "weights", None) or "last",
        stage=stage or getattr(a, "stage", None) or "auto",
    )


def run_dataset(a: argparse.Namespace, run: Run) -> Dataset:
    """The run's splits as training used them, from --dataset when the data have moved."""
    return run.dataset(a.data_dir, path=a.dataset, allow_changed=a.allow_changed_data)


def run_split(a: argparse.Namespace, run: Run, dataset: Dataset | None = None) -> Split:
    """The split ``--split`` names, as the model saw it: a dynamically binarized run's
    training split is one seeded binary draw (the grey images are inputs it never saw)."""
    part = (dataset or run_dataset(a, run)).split(a.split)
    if a.split == "train":
        part = model_view(part, run.config.data.binarize, run.config.train.seed)
    return part


def notes(run: Run) -> None:
    """What a reader of this run's outputs should know (on stderr, beside the output)."""
    stage = None
    if run.parent is not None:
        # RUN/samples.png and the like of the first stage stay beside RUN/prior: say which.
        stage = (
            f"{run.parent} has a prior stage, so this is the output of {run.dir} (the model "
            f"with the prior fitted to its codes), whose files go under {run.dir}; "
            f"`--stage model` gives the run as first trained, whose files stay in {run.parent}"
        )
    zoo = None
    if getattr(run, "zoo", None):
        zoo = (
            f"{run.zoo} was checked against the zoo's manifest and loaded from its copy in "
            f"{run.parent or run.dir}; outputs go there unless --out names a place, never into "
            "the zoo"
        )
    for text in (zoo, stage, run.note, prior_note(run)):
        if text:
            print(f"note: {text}", file=sys.stderr)


def wrote(*paths: Any, err: bool = False) -> None:
    """One ``wrote PATH`` line per file written (on stderr where stdout holds a result)."""
    for path in paths:
        print(f"wrote {path}", file=sys.stderr if err else sys.stdout)
