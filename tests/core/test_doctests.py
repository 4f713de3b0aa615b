"""The runnable ``Example::`` blocks in the core's docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "equirl.groups",
    "equirl.registry",
    "equirl.actions",
    "equirl.config",
    "equirl.utils.io",
    "equirl.symmetrizers",
    "equirl.symmetrizers.methods",
    "equirl.symmetrizers.check",
    "equirl.symmetrizers.canonicalize",
    "equirl.symmetrizers.multigroup",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
