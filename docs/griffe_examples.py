"""A griffe extension (mkdocs.yml, mkdocstrings' ``extensions``): vaekit's docstrings head
their doctests ``Example:``, which the Google style reads as an admonition of Markdown (so
``rows[-1]["epoch"]`` became a link); this reads them as the examples section they are."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension


class ExampleSections(Extension):
    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = re.sub(
                r"^(\s*)Example:$", r"\1Examples:", obj.docstring.value, flags=re.M
            )
