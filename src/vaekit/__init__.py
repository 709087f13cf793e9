"""vaekit: variational autoencoders composed from parts.

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/demo")          # doctest: +SKIP
    >>> # q(z|x) is a torch Distribution; its mean decodes to a reconstruction.
    >>> q = run.encode(x)                       # doctest: +SKIP
    >>> x_hat = run.decode(q.mean).mean         # doctest: +SKIP
"""

__version__ = "0.1.0"

from vaekit.config import Config, ConfigError, load_config
from vaekit.model import VAE, build_model
from vaekit.rundir import Run, RunError, load

__all__ = [
    "__version__",
    "Config",
    "ConfigError",
    "load_config",
    "VAE",
    "build_model",
    "Run",
    "RunError",
    "load",
]
