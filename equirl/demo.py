"""The core demonstration behind ``equirl demo --core``: symmetrizers on untrained models.

It shows the defining property on two symmetries a newcomer recognises: CartPole's mirror (the state
negates, LEFT and RIGHT swap) on an MLP Q-network, and the eight symmetries of the square (D4) on a
small CNN classifier. A plain network breaks the symmetry; each symmetrizer restores it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from equirl.actions import image_action, permutation_action, signed_permutation_action
from equirl.groups import dihedral, flip
from equirl.registry import BASE, EQUIZERO, get_method, method_names
from equirl.symmetrizers import check_equivariance, symmetrize

__all__ = ["core_demo_rows"]


def core_demo_rows(seed: int = 0) -> list[dict[str, Any]]:
    """Equivariance errors and agreement with the plain model, per symmetry and method."""
    torch.manual_seed(seed)
    rows: list[dict[str, Any]] = []
    z2 = flip()
    cartpole = (
        "CartPole mirror (Z2)",
        nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2)),
        signed_permutation_action(z2, [[0, 1, 2, 3]], signs=[[-1, -1, -1, -1]]),
        permutation_action(z2, [[1, 0]]),
        torch.randn(256, 4),
        {"proxy": "max_value"},
        4,
    )
    d4 = dihedral(4)
    images = (
        "square images (D4)",
        nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)),
        image_action(d4),
        None,
        torch.randn(64, 1, 8, 8),
        {"proxy": "entropy"},
        64,
    )
    for name, model, act_in, act_out, x, zero_kw, feat in (cartpole, images):
        model.eval()
        with torch.no_grad():
            base = model(x)
        rows.append({"symmetry": name, "method": BASE, "error": check_equivariance(model, act_in, act_out, x),
                     "agree": 1.0})  # fmt: skip
        for method in method_names(base=False, learned_scorer=False):
            spec = get_method(method)
            kw: dict[str, Any] = dict(zero_kw) if spec.name == EQUIZERO else {}
            if spec.learned_weights:
                kw["lambda_in_features"] = feat
            sym = symmetrize(model, act_in, act_out, method=method, **kw).eval()
            lam = getattr(sym, "lambda_net", None)
            if isinstance(lam, nn.Module):  # an untrained but non-uniform λ
                for p in lam.parameters():
                    nn.init.normal_(p, std=0.3)
            with torch.no_grad():
                out = sym(x)
            agree = float((out.argmax(-1) == base.argmax(-1)).float().mean())
            rows.append({"symmetry": name, "method": method,
                         "error": check_equivariance(sym, act_in, act_out, x), "agree": agree})  # fmt: skip
    return rows
