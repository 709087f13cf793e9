"""The latent-space explorer: ``vaekit explore RUN`` serves a page to see and steer a model.

The model side (:class:`Explorer`) rebuilds the run with :func:`vaekit.load` and never
imports the trainer; the server (:class:`ExplorerServer`) is the standard library's
threading HTTP server with a small JSON API and the page in ``serve/static``.

Example:
    >>> from vaekit.serve import make_server
    >>> server = make_server("runs/demo")         # doctest: +SKIP
    >>> print(server.url)                         # doctest: +SKIP
    http://127.0.0.1:40123/
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

import torch

from vaekit.serve.explorer import LIMITS, Explorer
from vaekit.serve.server import ExplorerServer, RequestError, is_loopback, make_server

__all__ = [
    "Explorer",
    "ExplorerServer",
    "RequestError",
    "LIMITS",
    "make_server",
    "serve",
    "is_loopback",
]


def serve(
    run_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    data_dir: str | None = None,
    device: str = "cpu",
    threads: int = 1,
    out: TextIO | None = None,
    data_path: str | None = None,
    allow_changed_data: bool = False,
) -> None:
    """Serve the explorer for ``run_dir`` until interrupted, printing its address first.

    Binding anything but a loopback address prints a warning: the explorer has no
    authentication, so everyone who can reach the port can use it. ``threads`` sets
    torch's thread count for this process (0 leaves it): one thread decodes a single
    point fastest, and several threads spin against each other on a busy machine.
    ``data_path`` and ``allow_changed_data`` are :meth:`vaekit.Run.dataset`'s ``path``
    (data that have moved) and ``allow_changed``.
    """
    out = out or sys.stdout
    if threads > 0:
        torch.set_num_threads(threads)
    if not is_loopback(host):
        print(
            f"warning: serving on {host}, not on a loopback address: anyone who can reach this machine "
            "can use the explorer (it has no authentication); use --host 127.0.0.1 to keep it private",
            file=sys.stderr,
            flush=True,
        )
    server = make_server(
        str(run_dir),
        host,
        port,
        data_dir=data_dir,
        device=device,
        data_path=data_path,
        allow_changed_data=allow_changed_data,
    )
    try:
        print(
            f"vaekit explorer for {run_dir} at {server.url}  (Ctrl+C to stop)", file=out, flush=True
        )
        server.serve_forever()
    finally:
        server.server_close()
