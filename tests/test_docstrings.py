"""The examples in the library's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vaekit

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(vaekit.__path__, "vaekit.")
    if not m.name.endswith("__main__")  # importing it would run the command line
)


@pytest.mark.parametrize("name", ["vaekit", *MODULES])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_are_found() -> None:
    # A guard on the test itself: without examples it would pass vacuously.
    finder = doctest.DocTestFinder()
    found = sum(
        len(t.examples) for name in MODULES for t in finder.find(importlib.import_module(name))
    )
    assert found >= 40
