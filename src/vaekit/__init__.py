"""vaekit: variational autoencoders composed from parts.

Example:
    >>> import vaekit
    >>> run = vaekit.load("runs/demo")          # doctest: +SKIP
    >>> q = run.encode(x)                       # q(z|x), a torch Distribution
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
