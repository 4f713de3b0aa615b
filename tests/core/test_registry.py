"""The method registry: names and aliases, options, and the rule that method names are spelled once."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import equirl
from equirl import symmetrize
from equirl.actions import image_action, permutation_action, product_action, signed_permutation_action
from equirl.errors import ConfigError, EquirlError
from equirl.groups import cyclic, dihedral, direct_product, flip
from equirl.registry import (
    AUGMENT,
    BASE,
    CANONICALIZE,
    EQUITUNE,
    EQUIZERO,
    EQUIZERO_PROXIES,
    LAMBDA,
    METHODS,
    MIRROR_LOSS,
    MULTIGROUP,
    canonical_method,
    get_method,
    method_names,
    validate_method_kwargs,
)
from equirl.symmetrizers import PROXIES, SYMMETRIZERS, Symmetrizer, check_equivariance

PACKAGE = Path(equirl.__file__).parent
ALL_NAMES = [(n, s.name) for s in METHODS.values() for n in s.names]


def test_canonical_names_and_constants() -> None:
    assert method_names() == (BASE, EQUITUNE, EQUIZERO, LAMBDA, CANONICALIZE, MULTIGROUP)
    assert tuple(METHODS) == (*method_names(), AUGMENT, MIRROR_LOSS) == method_names(augment=True)
    assert all(spec.name == name for name, spec in METHODS.items())


@pytest.mark.parametrize(("alias", "name"), ALL_NAMES, ids=[a for a, _ in ALL_NAMES])
def test_every_alias_resolves(alias: str, name: str) -> None:
    assert canonical_method(alias) == name
    assert canonical_method(alias.upper()) == name  # case-insensitive
    assert canonical_method(f" {alias} ") == name
    assert get_method(alias) is METHODS[name]


def test_required_aliases() -> None:
    for alias in ("λ", "lambda-equitune", "lambda_equitune", "λ-equitune"):
        assert canonical_method(alias) == LAMBDA
    assert canonical_method("equi-tune") == EQUITUNE
    assert canonical_method("plain") == canonical_method("none") == BASE
    aliases = [a.lower() for s in METHODS.values() for a in s.names]
    assert len(aliases) == len(set(aliases)), "an alias names two methods"


@pytest.mark.parametrize("bad", ["magic", "", "lambda2", 3])
def test_unknown_name_is_one_line_listing_the_valid_names(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        canonical_method(bad)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"unknown method {bad!r}")
    for spec in METHODS.values():
        for n in spec.names:
            assert n in msg


def test_method_name_filters() -> None:
    assert method_names(base=False) == (EQUITUNE, EQUIZERO, LAMBDA, CANONICALIZE, MULTIGROUP)
    assert method_names(learned_scorer=False) == (BASE, EQUITUNE, EQUIZERO, LAMBDA)
    assert method_names(product_group=False) == (BASE, EQUITUNE, EQUIZERO, LAMBDA, CANONICALIZE)
    assert method_names(base=False, augment=True)[-2:] == (AUGMENT, MIRROR_LOSS)
    with_aliases = method_names(aliases=True, augment=True)
    assert set(with_aliases) == {n for s in METHODS.values() for n in s.names}
    assert with_aliases.index(BASE) < with_aliases.index("plain") < with_aliases.index(EQUITUNE)


def test_spec_properties() -> None:
    assert not get_method(BASE).symmetrizes and not get_method(BASE).options
    assert all(get_method(m).symmetrizes for m in method_names(base=False))
    assert [m for m in METHODS if get_method(m).needs_product_group] == [MULTIGROUP]
    assert [m for m in METHODS if get_method(m).learned_scorer] == [CANONICALIZE, MULTIGROUP]
    assert [m for m in METHODS if get_method(m).learned_weights] == [LAMBDA]
    assert [m for m in METHODS if get_method(m).own_weights] == [LAMBDA, CANONICALIZE, MULTIGROUP]
    for spec in METHODS.values():
        assert spec.summary and spec.reference and "\n" not in spec.summary


def test_every_symmetrizing_method_has_a_class_and_vice_versa() -> None:
    for name in method_names(base=False):
        cls = SYMMETRIZERS[name]
        assert issubclass(cls, Symmetrizer) and cls.method_name == name
    assert BASE not in SYMMETRIZERS
    assert set(method_names(base=False)) <= set(SYMMETRIZERS)


def _keyword_params(cls: type) -> set[str]:
    """The keyword options of a symmetrizer class, following ``**kwargs`` up the MRO."""
    out: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is nn.Module:
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        out |= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return out - {"out_action"}


@pytest.mark.parametrize("name", method_names(base=False))
def test_core_options_match_the_class_signature(name: str) -> None:
    """The registry's core options are exactly the keyword arguments of the method's class: a new
    constructor option must be added to the registry (and an option dropped there when removed)."""
    assert set(get_method(name).option_names("core")) == _keyword_params(SYMMETRIZERS[name])


def test_equizero_proxies_match_the_proxy_table() -> None:
    assert set(EQUIZERO_PROXIES) == set(PROXIES)
    assert get_method(EQUIZERO).option("proxy").choices == EQUIZERO_PROXIES  # type: ignore[union-attr]
    assert get_method(EQUIZERO).option("proxy").default_for("rl") == "action_gap"  # type: ignore[union-attr]
    assert get_method(LAMBDA).defaults("rl")["lambda_hidden"] == ()


def _actions(name: str) -> tuple[Any, Any, torch.Tensor]:
    if get_method(name).needs_product_group:
        c4, z2 = cyclic(4), flip()
        act = product_action(
            direct_product(c4, z2),
            [
                signed_permutation_action(c4, [[3, 0, 1, 2, 4]]),
                signed_permutation_action(z2, [[0, 1, 2, 3, 4]], signs=[[1, 1, 1, 1, -1]]),
            ],
        )
        return act, None, torch.randn(6, 5)
    z2 = flip()
    obs = signed_permutation_action(z2, [[0, 1, 2, 3, 4]], signs=[[-1] * 5])
    return obs, permutation_action(z2, [[1, 0]]), torch.randn(6, 5)


@pytest.mark.parametrize(
    ("alias", "name"), [(a, n) for a, n in ALL_NAMES if get_method(n).symmetrizes], ids=lambda v: str(v)
)
def test_symmetrize_accepts_every_alias(alias: str, name: str) -> None:
    torch.manual_seed(0)
    in_act, out_act, x = _actions(name)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2 if out_act is not None else 3))
    sym = symmetrize(model, in_act, out_act, method=alias).eval()
    assert isinstance(sym, SYMMETRIZERS[name])
    assert check_equivariance(sym, in_act, out_act, x) < 1e-5


def test_symmetrize_refuses_base_and_unknown_names_and_options() -> None:
    act = image_action(dihedral(4))
    with pytest.raises(EquirlError, match="leaves the model as it is"):
        symmetrize(nn.Identity(), act, method="plain")
    with pytest.raises(EquirlError, match=r"unknown method 'magic'; choose one of equitune, equizero"):
        symmetrize(nn.Identity(), act, method="magic")
    with pytest.raises(
        ConfigError, match="unknown option 'proxi' for method equizero; valid options: .*proxy"
    ):
        symmetrize(nn.Identity(), act, method="equizero", proxi="entropy")
    with pytest.raises(ConfigError, match="unknown option 'lambda_input' for method lambda under core"):
        symmetrize(nn.Identity(), act, method="λ", lambda_input="obs")  # an RL-only option


def test_user_registered_symmetrizers_still_work() -> None:
    from equirl.symmetrizers import EquiTune, register_symmetrizer

    @register_symmetrizer("my_average")
    class MyAverage(EquiTune):
        def __init__(self, *args: Any, flavour: str = "x", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.flavour = flavour

    try:
        act = image_action(dihedral(4))
        sym = symmetrize(nn.Flatten(), act, method="my_average", flavour="y")
        assert isinstance(sym, MyAverage) and sym.flavour == "y"
    finally:
        del SYMMETRIZERS["my_average"]


@pytest.mark.parametrize(
    ("method", "kwargs", "key"),
    [
        ("equizero", {"proxy": "vibes"}, "proxy"),
        ("equizero", {"tie_break": "random"}, "tie_break"),
        ("equizero", {"tie_atol": -1.0}, "tie_atol"),
        ("equizero", {"straight_through": "yes"}, "straight_through"),
        ("lambda", {"lambda_hidden": 64}, "lambda_hidden"),
        ("lambda", {"lambda_hidden": [64, "a"]}, "lambda_hidden"),
        ("lambda", {"lambda_hidden": [0]}, "lambda_hidden"),
        ("lambda", {"lambda_input": "q"}, "lambda_input"),
        ("lambda", {"lambda_net": {"hidden": 3}}, "lambda_net"),
        ("lambda", {"lambda_in_features": 2.5}, "lambda_in_features"),
        ("canonicalize", {"prior_weight": -1}, "prior_weight"),
        ("multigroup", {"temperature": 0}, "temperature"),
        ("equitune", {"chunk_size": 0}, "chunk_size"),
        ("equitune", {"chunk_size": "big"}, "chunk_size"),
    ],
)
def test_validate_rejects_bad_values_naming_the_key(method: str, kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_method_kwargs(method, kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"option {key}:" in msg and repr(kwargs[key])[:20] in msg


def test_validate_rejects_unknown_keys_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        validate_method_kwargs("λ", {"lambda_hiden": [64]})
    msg = str(info.value)
    assert "\n" not in msg and "'lambda_hiden'" in msg
    for key in get_method(LAMBDA).option_names():
        assert key in msg
    with pytest.raises(ConfigError, match="base; it takes no options"):
        validate_method_kwargs("plain", {"proxy": "nll"})


def test_validate_accepts_good_values() -> None:
    kw = {"proxy": "max_value", "tie_atol": 0, "straight_through": False, "chunk_size": "auto"}
    assert validate_method_kwargs("equizero", kw) == kw
    assert validate_method_kwargs("equizero", {"proxy": lambda ys: ys.sum(-1)}, adapter="core")
    assert validate_method_kwargs("lambda", {"lambda_hidden": [], "lambda_input": "obs"}, "rl")
    assert validate_method_kwargs("canonicalize", {"scorer": nn.Linear(3, 1), "scorer_hidden": (8, 8)})
    assert validate_method_kwargs("equitune", None) == {}
    with pytest.raises(ConfigError, match="unknown adapter"):
        validate_method_kwargs("equitune", {}, adapter="audio")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("method: lambda\nmethod_kwargs:\n  lambda_hiden: [64]\n", "'lambda_hiden'"),
        ("method: λ\nmethod_kwargs:\n  lambda_hidden: 64\n", "option lambda_hidden:"),
        ("method: equizero\nmethod_kwargs:\n  proxy: vibes\n", "option proxy:"),
        ("method: equitune\nmethod_kwargs:\n  proxy: entropy\n", "'proxy'"),
    ],
)
def test_rl_config_rejects_bad_method_kwargs_in_one_line(tmp_path: Path, yaml_text: str, key: str) -> None:
    from equirl.rl.config import load_rl_config

    with pytest.raises(ConfigError) as info:
        load_rl_config(_write(tmp_path, "env: CartPole-v1\n" + yaml_text))
    assert "\n" not in str(info.value) and key in str(info.value)


def test_rl_config_canonicalizes_the_method(tmp_path: Path) -> None:
    from equirl.rl.config import load_rl_config

    cfg = load_rl_config(_write(tmp_path, "env: CartPole-v1\nmethod: plain\n"))
    assert cfg.method == BASE
    cfg = load_rl_config(
        _write(tmp_path, "env: CartPole-v1\nmethod: lambda_equitune\nmethod_kwargs: {lambda_hidden: []}\n")
    )
    assert cfg.method == LAMBDA and cfg.method_kwargs == {"lambda_hidden": []}
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        load_rl_config(_write(tmp_path, "env: CartPole-v1\nmethod: magic\n"))


def test_registry_does_not_import_torch() -> None:
    code = "import sys, equirl.registry, equirl.cli.args; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- method names are spelled in one module ----------------------------------------------------------

#: ``none`` is an alias of ``base`` but also the ordinary "off" value of unrelated options (an RL
#: spec's ``verify: none``, the GPT-2 fairness ``scorer: none``), so it is not searched for
_NOT_SEARCHED = {"none"}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_method_name_literals_live_only_in_the_registry() -> None:
    # case-sensitive: the class names EquiTune, Canonicalize... (in ``__all__``) are not method names
    names = {n for s in METHODS.values() for n in s.names} - _NOT_SEARCHED
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel == "equirl/registry.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docs
                and node.value.strip() in names
            ):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "method names outside equirl/registry.py (use its constants):\n" + "\n".join(found)


@pytest.mark.parametrize(("alias", "name"), [("λ", LAMBDA), ("plain", BASE), ("lambda_equitune", LAMBDA)])
def test_rl_policy_accepts_aliases_and_saved_agents_round_trip(tmp_path: Path, alias: str, name: str) -> None:
    """Agents saved with an alias in ``policy_kwargs`` (as older zips may be) still load."""
    from stable_baselines3 import DQN

    from equirl.rl.build import load_pretrained
    from equirl.rl.envs import make_env
    from equirl.rl.policies import EquiDQNPolicy

    model = DQN(
        EquiDQNPolicy,
        make_env("CartPole-v1"),
        policy_kwargs={"symmetry": "CartPole-v1", "method": alias},
        buffer_size=10,
        seed=0,
    )
    assert model.policy.q_net.method == name
    assert (model.policy.q_net.equi is None) == (name == BASE)
    if name == LAMBDA:  # a trained-looking λ (it starts at zero, i.e. as equitune)
        with torch.no_grad():
            for p in model.policy.q_net.equi.parameters():
                p.normal_(0, 0.5)
    model.save(tmp_path / "agent.zip")
    loaded = DQN.load(tmp_path / "agent.zip")
    assert loaded.policy.q_net.method == name
    x = torch.randn(4, 4)
    assert torch.allclose(loaded.policy.q_net(x), model.policy.q_net(x), atol=1e-6)
    # re-wrapping it under the canonical name keeps its own (λ) weights: the saved alias is resolved
    again = load_pretrained(tmp_path / "agent.zip", "CartPole-v1", method=name)
    assert torch.allclose(again.policy.q_net(x), model.policy.q_net(x), atol=1e-6)


def test_rl_policy_rejects_bad_method_kwargs_in_one_line() -> None:
    from stable_baselines3 import DQN

    from equirl.errors import SymmetryError
    from equirl.rl.envs import make_env
    from equirl.rl.policies import EquiDQNPolicy

    with pytest.raises(SymmetryError, match="unknown option 'lambda_hiden' for method lambda; valid"):
        DQN(
            EquiDQNPolicy,
            make_env("CartPole-v1"),
            policy_kwargs={"symmetry": "CartPole-v1", "method": "λ", "method_kwargs": {"lambda_hiden": [8]}},
            buffer_size=10,
        )
