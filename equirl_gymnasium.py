"""Registers equirl's gymnasium environments the moment gymnasium is imported.

gymnasium 1.x no longer loads plugin entry points, so an installed equirl ships ``equirl-gymnasium.pth``
(one ``import`` line, run by ``site`` at interpreter start) that calls :func:`install`: a meta-path hook
that waits for ``gymnasium`` to be imported and then registers ``equirl/GridWorld-v0`` by its entry
point string (the table is :data:`equirl.gym_envs.ENVS`; only that small torch-free module is imported
then). Nothing else of equirl (nor torch) is imported until such an env is made, so
``gymnasium.make("equirl/GridWorld-v0")`` works in a fresh interpreter with no ``import equirl``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

__all__ = ["install", "register_envs"]


def register_envs(gym: Any) -> None:
    """Register equirl's envs (:data:`equirl.gym_envs.ENVS`) with the ``gymnasium`` module ``gym``."""
    from equirl.gym_envs import register_envs as register

    register(gym)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        with contextlib.suppress(Exception):  # never break gymnasium's own import
            register_envs(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)  # once: let the other finders find the real module
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Register the envs now if gymnasium is already imported, else when it is."""
    gym = sys.modules.get("gymnasium")
    if gym is not None and hasattr(gym, "registry"):
        register_envs(gym)
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
