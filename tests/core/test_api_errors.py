"""The Python API names a user's mistake in one equirl error at the call that makes it, and never rounds or
reshapes its way to a wrong answer: integer outputs are averaged in float, lists that are not
permutations are refused, a model's output must be one batched tensor, inputs must be batched."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from equirl import symmetrize
from equirl.actions import permutation_action, signed_permutation_action
from equirl.errors import EquirlError, GroupError, SymmetryError
from equirl.groups import cyclic, dihedral, flip

METHODS = ("equitune", "equizero", "lambda", "canonicalize")
OBS = signed_permutation_action(flip(), [[0, 1]], signs=[[-1, -1]])
ACT = permutation_action(flip(), [[1, 0]])


def _int_model(x: torch.Tensor) -> torch.Tensor:
    """Integer Q-like outputs: 3 on action 0 when x0 > 0, 4 on action 1 always."""
    return torch.stack([(x[:, 0] > 0).long() * 3, torch.full_like(x[:, 0], 4, dtype=torch.long)], -1)


@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda"])
def test_integer_outputs_are_averaged_in_float(method: str) -> None:
    """Weights are fractions: rounded to the outputs' integer dtype they were zeros (λ, equizero's ties)."""
    kw: dict[str, Any] = {"proxy": "max_value"} if method == "equizero" else {}
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    out = symmetrize(_int_model, OBS, ACT, method=method, **kw)(x).detach()
    assert out.is_floating_point()
    # equitune's average; λ starts as equitune; equizero's max_value proxy ties here (both copies score 4)
    torch.testing.assert_close(out, torch.tensor([[3.5, 2.0], [2.0, 3.5]]))
    # and the output is equivariant: g·x gives g·out
    torch.testing.assert_close(
        symmetrize(_int_model, OBS, ACT, method=method, **kw)(-x).detach(), out.flip(-1)
    )


@pytest.mark.parametrize(
    ("group", "perm"),
    [(flip(), [0, 0]), (flip(), [0, 5]), (flip(), [-1, 0]), (cyclic(3), [1, 1, 0]), (flip(), [0.0, 1.0])],
)
def test_a_list_that_is_not_a_permutation_is_refused(group: Any, perm: list[Any]) -> None:
    with pytest.raises(GroupError, match="permutation"):
        permutation_action(group, [perm])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("model", "says"),
    [
        (lambda x: (x, x), "must return one tensor.*got tuple"),
        (lambda x: {"q": x}, "must return one tensor.*got dict"),
        (lambda x: x[:1], r"returned shape \(1, 2\) for \d+ input rows"),
        (lambda x: x.sum(), r"returned shape \(\) for"),
    ],
)
def test_a_model_output_that_is_not_one_batched_tensor_is_named(method: str, model: Any, says: str) -> None:
    with pytest.raises(SymmetryError, match=says):
        symmetrize(model, OBS, ACT, method=method)(torch.randn(3, 2))


@pytest.mark.parametrize("method", METHODS)
def test_an_unbatched_input_is_named(method: str) -> None:
    sym = symmetrize(torch.nn.Linear(2, 2), OBS, ACT, method=method)
    with pytest.raises(SymmetryError, match=r"add the batch axis"):
        sym(torch.randn(2))
    assert sym(torch.randn(1, 2)).shape == (1, 2)


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(SymmetryError, match="nn.Module or a callable"):
        symmetrize(42, OBS, ACT)  # type: ignore[arg-type]
    with pytest.raises(GroupError, match="in_action must be a GroupAction.*got str"):
        symmetrize(torch.nn.Linear(2, 2), "Z2", ACT)  # type: ignore[arg-type]
    for bad in (2.5, True, "4"):
        with pytest.raises(GroupError, match="integer n >= 1"):
            cyclic(bad)  # type: ignore[arg-type]
        with pytest.raises(GroupError, match="integer n >= 1"):
            dihedral(bad)  # type: ignore[arg-type]
    with pytest.raises(GroupError, match="out of range for Z2"):
        OBS.apply(torch.randn(1, 2), 5)
    # option errors are equirl errors (and still ValueErrors)
    with pytest.raises(EquirlError, match="tie_break"):
        symmetrize(torch.nn.Linear(2, 2), OBS, ACT, method="equizero", tie_break="last")
    with pytest.raises(ValueError, match="tie_break"):
        symmetrize(torch.nn.Linear(2, 2), OBS, ACT, method="equizero", tie_break="last")


def test_a_lambda_net_sized_for_one_input_names_another() -> None:
    sym = symmetrize(lambda x: x.flatten(1)[:, :2], OBS, ACT, method="lambda")
    sym(torch.randn(3, 2))
    with pytest.raises(SymmetryError, match="reads rows of 2 values.*got rows of 4"):
        sym(torch.randn(3, 2, 2))
    with pytest.raises(SymmetryError, match="reads rows of 7 values"):
        symmetrize(torch.nn.Linear(2, 2), OBS, ACT, method="lambda", lambda_in_features=7)(torch.randn(3, 2))


@pytest.mark.parametrize(
    ("key", "close"), [("method_kwarg", "method_kwargs"), ("symetry", "symmetry"), ("methd", "method")]
)
def test_a_misspelled_policy_kwargs_key_is_named_with_the_closest(key: str, close: str) -> None:
    from stable_baselines3 import DQN

    import equirl.rl  # noqa: F401  (registers the policies)

    pk: dict[str, Any] = {"symmetry": "CartPole-v1", "net_arch": [8]}
    pk[key] = pk.pop(close) if close in pk else "equitune"
    with pytest.raises(SymmetryError, match=f"unknown policy_kwargs key '{key}'.*did you mean '{close}'"):
        DQN("EquiMlpPolicy", "CartPole-v1", policy_kwargs=pk, buffer_size=100)
