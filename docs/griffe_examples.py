"""A griffe extension (mkdocs.yml, mkdocstrings' ``extensions``) that reads vaekit's
docstrings as they are written: their doctests are headed ``Example:``, which the Google
style takes for an admonition of Markdown (so ``rows[-1]["epoch"]`` became a link), and
they name code with Sphinx roles (:func:`vaekit.fit`), which Markdown shows as typed."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1]}`" if match.group(1) else f"`{target}`"


def markdown(text: str) -> str:
    """A docstring as mkdocstrings reads it: ``Examples:`` (also above a doctest written
    without a heading), roles as code spans."""
    text = re.sub(r"^(\s*)Example:$", r"\1Examples:", text, flags=re.M)
    paragraphs = text.split("\n\n")
    for i, paragraph in enumerate(paragraphs):
        if paragraph.startswith(">>>"):
            paragraphs[i] = "Examples:\n" + "\n".join(
                "    " + line for line in paragraph.splitlines()
            )
    return re.sub(r":[a-z]+:`(~?)([^`]+)`", _role, "\n\n".join(paragraphs))


class ExampleSections(Extension):
    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
