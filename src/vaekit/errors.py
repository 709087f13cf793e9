"""The one base class of every error vaekit raises for a user to read.

Each subclass also derives from the builtin it refines (ValueError, RuntimeError), so
``except ValueError`` keeps working; the command line catches :class:`VaekitError` and
prints its message without a traceback.
"""

from __future__ import annotations

__all__ = ["VaekitError", "ConfigError", "UsageError"]


class VaekitError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(VaekitError, ValueError):
    """A configuration file or value that cannot be used; the message says how to fix it."""


class UsageError(VaekitError, ValueError):
    """A request that cannot be carried out as asked: an argument out of range, a figure
    that does not apply to the run, a label a model cannot use. The message says what
    would work; the command line prints it and exits with status 2."""
