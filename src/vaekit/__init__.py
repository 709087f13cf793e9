"""vaekit: variational autoencoders composed from parts.

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/demo")          # doctest: +SKIP
    >>> # q(z|x) is a torch Distribution; its mean decodes to a reconstruction.
    >>> q = run.encode(x)                       # doctest: +SKIP
    >>> x_hat = run.decode(q.mean).mean         # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaekit._version import __version__

if TYPE_CHECKING:
    from vaekit.config import Config, ConfigError, load_config
    from vaekit.model import VAE, build_model, compose
    from vaekit.rundir import Run, RunError, load
    from vaekit.train import fit

__all__ = [
    "__version__",
    "Config",
    "ConfigError",
    "load_config",
    "VAE",
    "build_model",
    "compose",
    "fit",
    "Run",
    "RunError",
    "load",
]

# Where each name lives. They are imported on first use (PEP 562), so that importing
# vaekit.cli does not import torch: `vaekit --help` is quick, and a Ctrl-C while torch
# loads reaches the command line's handler instead of printing a traceback.
_LAZY = {
    "Config": "vaekit.config",
    "ConfigError": "vaekit.config",
    "load_config": "vaekit.config",
    "VAE": "vaekit.model",
    "build_model": "vaekit.model",
    "compose": "vaekit.model",
    "fit": "vaekit.train",
    "Run": "vaekit.rundir",
    "RunError": "vaekit.rundir",
    "load": "vaekit.rundir",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
