"""Value checks shared by the config and by every part's options, with one wording.

Each raises :class:`vaekit.errors.ConfigError` naming the setting and what is accepted.

Example:
    >>> check_positive_or_learned("model.likelihood.sigma", "learned")
    >>> check_positive_or_learned("model.likelihood.sigma", -1.0)
    Traceback (most recent call last):
    ...
    vaekit.errors.ConfigError: model.likelihood.sigma must be a positive number or 'learned', got -1.0
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from vaekit.errors import ConfigError

__all__ = [
    "short",
    "check_choice",
    "check_positive",
    "check_nonneg",
    "check_positive_or_learned",
    "check_widths",
]


def short(value: Any) -> str:
    """repr() cut to a readable length, for values pasted into messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices`` (did-you-mean otherwise)."""
    choices = list(choices)
    if value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {short(value)}{extra}")


def check_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value}")


def check_nonneg(key: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")


def check_positive_or_learned(key: str, value: float | str) -> None:
    """A scale-like option: a fixed positive number, or ``"learned"``."""
    ok = value == "learned" if isinstance(value, str) else value > 0
    if not ok:
        raise ConfigError(f"{key} must be a positive number or 'learned', got {short(value)}")


def check_widths(key: str, widths: Iterable[int]) -> None:
    """Every layer width of a list must be positive."""
    for i, w in enumerate(widths):
        check_positive(f"{key}[{i}]", w)
