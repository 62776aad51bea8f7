"""The examples in docstrings run, and say what they show."""

import doctest
import importlib
import pkgutil

import pytest

import rejoinder

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(rejoinder.__path__, "rejoinder.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
