"""equirl: make pretrained models equivariant to known symmetry groups.

``import equirl`` is light: the torch-free :mod:`equirl.groups` is imported eagerly, everything that
needs torch (actions, symmetrizers) and the modality adapters (:mod:`equirl.rl`,
:mod:`equirl.language`, :mod:`equirl.vision`) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from equirl.errors import EquirlError
from equirl.groups import Group, GroupElement, cyclic, dihedral, direct_product, flip, permutation_group

__version__ = "0.1.0"

__all__ = [
    "EquiTune",
    "EquiZero",
    "EquirlError",
    "Group",
    "GroupElement",
    "LambdaEquiTune",
    "__version__",
    "check_equivariance",
    "cyclic",
    "dihedral",
    "direct_product",
    "flip",
    "permutation_group",
    "symmetrize",
]

_LAZY = {
    "symmetrize": "equirl.symmetrizers",
    "check_equivariance": "equirl.symmetrizers",
    "EquiTune": "equirl.symmetrizers",
    "EquiZero": "equirl.symmetrizers",
    "LambdaEquiTune": "equirl.symmetrizers",
    "actions": "equirl.actions",
    "symmetrizers": "equirl.symmetrizers",
    "rl": "equirl.rl",
    "language": "equirl.language",
    "vision": "equirl.vision",
}

if TYPE_CHECKING:  # pragma: no cover
    from equirl.symmetrizers import EquiTune, EquiZero, LambdaEquiTune, check_equivariance, symmetrize


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'equirl' has no attribute {name!r}")
    module = importlib.import_module(mod)
    value = module if mod.endswith(name) else getattr(module, name)
    globals()[name] = value
    return value
