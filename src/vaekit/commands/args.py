"""The options several commands share, each defined once here: ``--out`` (with each
command's own text), ``--data-dir`` and ``--device``, ``--threads``, ``--seed``,
``--progress``, ``--dpi``, the flags of commands that read a run's data again, and the
argparse types that turn a bad number into a usage error.

Only the standard library: :mod:`vaekit.cli` imports this module to list the commands,
which must not load torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from vaekit.errors import UsageError

__all__ = [
    "CommandError",
    "int_range",
    "COUNT",
    "SEED",
    "THREADS",
    "DPI",
    "RUN_HELP",
    "add_out",
    "add_common",
    "add_run_data",
    "add_weights",
    "add_threads",
    "add_seed",
    "add_progress",
    "add_dpi",
]


class CommandError(UsageError):
    """A command's arguments that cannot be carried out as given; the message says why.

    Like every :class:`~vaekit.errors.VaekitError` the library raises for a user to read
    (:class:`~vaekit.errors.UsageError`, ConfigError, DataError, RunError), it is printed
    once, by :func:`vaekit.cli.main`, as ``error: ...`` with exit status 2.
    """


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
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


RUN_HELP = (
    "a run directory (what `vaekit train --out` wrote), or zoo:NAME, a model of the zoo "
    "(`vaekit zoo list`), whose outputs go to its folder in the cache"
)

COUNT = int_range(1)
SEED = int_range(0, 2**32 - 1)  # as train.seed
THREADS = int_range(1, 4096)  # as train.threads; torch crashes on absurd counts
DPI = int_range(1, 1000)  # matplotlib refuses images over 2**16 pixels a side


def add_out(
    p: argparse.ArgumentParser,
    what: str,
    default: str,
    *,
    metavar: str | None = None,
    short: bool = False,
) -> argparse.Action:
    """``--out``, the one definition every command's uses: ``what`` it names (a file, a
    folder, a prefix; how its extension chooses the format) and its ``default``, which the
    help shows as ``(default: ...)``. ``short`` adds ``-o``."""
    return p.add_argument(
        "--out",
        *(["-o"] if short else []),
        default=None,
        metavar=metavar,
        help=f"{what} (default: {default})",
    )


def add_common(p: argparse.ArgumentParser, device: str = "cpu") -> None:
    """``--data-dir`` and ``--device``."""
    p.add_argument(
        "--data-dir",
        default=None,
        help="where named datasets' files are found (default: $VAEKIT_DATA_DIR)",
    )
    p.add_argument("--device", default=None, help=f"cpu, cuda, cuda:N (default: {device})")


def add_run_data(p: argparse.ArgumentParser, moved: bool = True) -> None:
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


def add_weights(p: argparse.ArgumentParser) -> None:
    """``--weights last|best`` and ``--stage``: which of a run's models is loaded."""
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


def add_threads(
    p: argparse.ArgumentParser,
    help: str,
    *,
    type: Callable[[str], int] = THREADS,
    default: int | None = None,
    metavar: str | None = None,
) -> None:
    """``--threads``: torch threads (``help`` says for what and the default)."""
    p.add_argument("--threads", type=type, default=default, metavar=metavar, help=help)


def add_seed(
    p: argparse.ArgumentParser,
    help: str,
    *,
    type: Callable[[str], int] = SEED,
    default: int | None = 0,
) -> None:
    """``--seed`` (``help`` says of what, and the default)."""
    p.add_argument("--seed", type=type, default=default, help=help)


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``."""
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when the terminal is interactive)",
    )


def add_dpi(p: argparse.ArgumentParser, what: str = "a PNG") -> None:
    """``--dpi``: the resolution of the PNGs a command writes."""
    p.add_argument("--dpi", type=DPI, default=100, help=f"resolution of {what} (default: 100)")
