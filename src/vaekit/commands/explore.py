"""``vaekit explore``: serve the latent-space explorer (:func:`vaekit.serve.serve`)."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands.args import (
    RUN_HELP,
    CommandError,
    add_common,
    add_run_data,
    add_threads,
    int_range,
)
from vaekit.commands.runs import run_dir
from vaekit.serve import serve

DESCRIPTION = (
    "Serve a web page to explore a run's latent space: the encoded test set, live "
    "decoding, interpolation, traversals, samples, and your own drawings. Prints the address."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `vaekit explore`."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; anything else prints a warning)",
    )
    p.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free one)")
    add_threads(
        p,
        "torch threads for decoding (default 1, the fastest for single points; 0 leaves "
        "torch's default)",
        type=int_range(0, 4096),
        default=1,
    )
    add_run_data(p)
    add_common(p)


def run(a: argparse.Namespace) -> int:
    """Carry out `vaekit explore` as parsed into ``a``; the exit status."""
    if not 0 <= a.port <= 65535:
        raise CommandError("--port must be in 0..65535 (0 picks a free port)")
    try:
        serve(
            run_dir(a.run),
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
