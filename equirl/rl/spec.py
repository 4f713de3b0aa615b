"""Declarative environment symmetry specs (YAML): group, action on observations, permutation of actions.

A spec names a finite group and gives, per generator, its action on observations and on the discrete
actions; the action of every other element follows by composition (checked to be a homomorphism by
:mod:`equirl.actions`). Supported observation actions need no Python code:

* ``signed_permutation`` -- ``(g·s)[i] = sign[i] * s[src[i]]`` on a feature vector (CartPole, Acrobot,
  LunarLander);
* ``image`` -- quarter turns (``rotate: k``) and real mirrors (``mirror: left-right|top-bottom``) of
  the image's spatial dims, given for the *raw* observation layout (``HWC`` or ``CHW``); the policy
  side automatically acts on SB3's channel-first tensor layout.

Discrete actions are permuted by ``perm`` (action ``i`` goes to ``perm[i]``), ``swap`` (pairs of
indices) or ``swap_names`` (pairs of action meanings, checked against
``env.unwrapped.get_action_meanings()``). Continuous (``Box``) actions are acted on by signed
permutations of the action vector (``type: signed_permutation``, one ``{src, signs}`` per generator,
e.g. Pendulum's torque ``u ↦ -u``); the action box must be mapped onto itself. Example
(``CartPole-v1.yaml``)::

    env: CartPole-v1
    group: flip
    observation:
      type: signed_permutation
      generators:
        - {src: [0, 1, 2, 3], signs: [-1, -1, -1, -1]}
    actions:
      generators:
        - {swap: [[0, 1]]}
    verify: {method: state, attribute: state, generators: [{src: [0, 1, 2, 3], signs: [-1, -1, -1, -1]}]}

References: van der Pol et al. (2020), *MDP Homomorphic Networks*; Basu et al. (2023), *Efficient
Equivariant Transfer Learning from Pretrained Models* (the CartPole / Acrobot / gridworld symmetries).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equirl.assets import asset_path
from equirl.errors import ConfigError, EquirlError, GroupError, SymmetryError
from equirl.groups import Group, get_group
from equirl.utils.io import printable

__all__ = [
    "SPEC_DIR",
    "EnvSymmetry",
    "find_spec_file",
    "list_specs",
    "load_spec",
    "parse_spec",
    "resolve_symmetry",
]

#: the shipped specs: the top-level ``envs/`` folder (inside the wheel as ``equirl/assets/envs``)
SPEC_DIR = asset_path("envs")

_TOP_KEYS = {"env", "group", "description", "observation", "actions", "verify", "notes"}
_OBS_TYPES = ("signed_permutation", "image")
_VERIFY = ("state", "obs", "mujoco", "none")
_VERIFY_KEYS = {"method", "attribute", "generators", "atol", "reason"}
#: the tolerance of an exact symmetry check (float32 rounding of set states)
EXACT_ATOL = 1e-5
#: discrete actions are permuted, continuous (``Box``) action vectors get a signed permutation
_ACTION_TYPES = ("permutation", "signed_permutation")


def _fail(where: str, msg: str) -> SymmetryError:
    return SymmetryError(f"symmetry spec {where}: {msg}")


def _int_list(value: Any, where: str, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _fail(where, f"{what} must be a list of integers, got {value!r}")
    return tuple(int(v) for v in value)


def _check_bijection(p: Sequence[int], n: int, where: str, what: str) -> None:
    if len(p) != n:
        raise _fail(where, f"{what} has {len(p)} entries but the space has {n}")
    if sorted(p) != list(range(n)):
        raise _fail(where, f"{what} {list(p)} is not a bijection of 0..{n - 1}")


@dataclass(frozen=True)
class EnvSymmetry:
    """A validated environment symmetry (plain data: picklable, hashable, torch-free).

    :param env_id: the gymnasium id.
    :param group_name: a :func:`equirl.groups.get_group` string.
    :param obs_type: ``"signed_permutation"`` or ``"image"``.
    :param obs_generators: per generator, ``(src, signs)`` for signed permutations or ``(k, mirror)``
        image transforms (``None``: the group's default image action).
    :param layout: the raw image layout (``"HWC"`` or ``"CHW"``) for image specs.
    :param action_perms: per generator, where each discrete action goes (``perm[i]``); empty for
        continuous actions.
    :param action_names: per generator, swapped action meanings to check against the env (or empty).
    :param verify: how ``check-symmetry`` can set states: ``"state"``, ``"obs"``, ``"mujoco"`` (the
        ``[qpos, qvel]`` vector of a MuJoCo env, set with ``env.unwrapped.set_state``) or ``"none"``.
    :param state_attribute: the ``env.unwrapped`` attribute holding the state (``verify="state"``).
    :param state_generators: per generator, ``(src, signs)`` acting on that state vector.
    :param source: where the spec was read from.
    :param action_type: ``"permutation"`` (discrete actions) or ``"signed_permutation"`` (``Box``).
    :param action_generators: per generator, ``(src, signs)`` acting on continuous action vectors.
    :param verify_atol: the tolerance ``check-symmetry`` verifies against (``verify.atol``; 1e-5, i.e.
        exact, unless the spec declares the env only approximately symmetric).
    :param verify_reason: why the env is only approximately symmetric (``verify.reason``; required with a
        ``verify.atol`` above 1e-5).
    """

    env_id: str
    group_name: str
    obs_type: str
    obs_generators: tuple[Any, ...] | None
    action_perms: tuple[tuple[int, ...], ...]
    layout: str = "CHW"
    action_names: tuple[tuple[tuple[str, str], ...], ...] = ()
    verify: str = "none"
    state_attribute: str = "state"
    state_generators: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    description: str = ""
    source: str = field(default="", compare=False)
    action_type: str = "permutation"
    action_generators: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    verify_atol: float = EXACT_ATOL
    verify_reason: str = ""

    # -- derived ---------------------------------------------------------------------------------
    @property
    def group(self) -> Group:
        return get_group(self.group_name)

    @property
    def continuous(self) -> bool:
        """Whether the spec acts on continuous (``Box``) action vectors."""
        return self.action_type == "signed_permutation"

    @property
    def n_actions(self) -> int:
        """The number of discrete actions, or the dimension of a continuous action vector."""
        if self.continuous:
            return len(self.action_generators[0][0])
        return len(self.action_perms[0])

    def obs_action(self, image_dims: tuple[int, int] | None = None) -> Any:
        """The :class:`~equirl.actions.GroupAction` on observation tensors.

        :param image_dims: (height, width) dims for image specs; default from :attr:`layout`.
        """
        from equirl.actions import ImageTransform, image_action, signed_permutation_action

        g = self.group
        if self.obs_type == "signed_permutation":
            assert self.obs_generators is not None
            return signed_permutation_action(
                g, [src for src, _ in self.obs_generators], signs=[list(s) for _, s in self.obs_generators]
            )
        dims = image_dims or ((-2, -1) if self.layout == "CHW" else (-3, -2))
        imgs = None if self.obs_generators is None else [ImageTransform(k, m) for k, m in self.obs_generators]
        return image_action(g, imgs, dims=dims)

    def action_action(self, absolute: bool = False) -> Any:
        """The group action on actions: for discrete actions the permutation of the action axis (the
        last axis of Q-values, quantiles or logits); for continuous ones the signed permutation of the
        action vector (Gaussian means, deterministic actions).

        :param absolute: drop the signs (``|P_g|``): how a Gaussian's ``log_std`` must transform so that
            its standard deviation is equivariant (discrete actions: the same permutation).
        """
        from equirl.actions import permutation_action, signed_permutation_action

        if not self.continuous:
            return permutation_action(self.group, [list(p) for p in self.action_perms])
        return signed_permutation_action(
            self.group,
            [src for src, _ in self.action_generators],
            signs=None if absolute else [list(s) for _, s in self.action_generators],
        )

    def state_action(self) -> Any:
        """The signed-permutation action on the env's internal state vector (``verify="state"``)."""
        from equirl.actions import signed_permutation_action

        return signed_permutation_action(
            self.group,
            [src for src, _ in self.state_generators],
            signs=[list(s) for _, s in self.state_generators],
        )

    def action_table(self) -> list[list[int]]:
        """``table[g][a]`` = the action ``g·a`` for every group element (discrete actions only)."""
        if self.continuous:
            raise _fail(self.env_id, "continuous actions have no action table")
        act = self.action_action()
        table = []
        for t in act.transforms:
            inv = [0] * len(t.src)
            for j, s in enumerate(t.src):  # (g·y)[j] = y[src[j]] -> index src[j] goes to j
                inv[s] = j
            table.append(inv)
        return table

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain (JSON / YAML) data that :func:`parse_spec` reads back into an equal spec.

        Actions are written as permutations (``perm``); ``swap_names`` pairs are kept only as those
        permutations (the env's action meanings, needed to re-check the names, are not part of a spec).
        """
        obs: dict[str, Any] = {"type": self.obs_type}
        if self.obs_type == "signed_permutation":
            assert self.obs_generators is not None
            obs["generators"] = [
                {"src": list(src), "signs": [int(s) for s in signs]} for src, signs in self.obs_generators
            ]
        else:
            obs["layout"] = self.layout
            if self.obs_generators is None:
                obs["generators"] = "default"
            else:
                obs["generators"] = [
                    {"mirror": "left-right" if k == 0 else "top-bottom"} if m else {"rotate": int(k)}
                    for k, m in self.obs_generators
                ]
        verify: dict[str, Any] = {"method": self.verify}
        if self.verify in ("state", "mujoco"):
            if self.verify == "state":
                verify["attribute"] = self.state_attribute
            verify["generators"] = [
                {"src": list(src), "signs": [int(s) for s in signs]} for src, signs in self.state_generators
            ]
        if self.verify_atol != EXACT_ATOL:
            verify["atol"] = self.verify_atol
        if self.verify_reason:
            verify["reason"] = self.verify_reason
        actions: dict[str, Any]
        if self.continuous:
            actions = {
                "type": "signed_permutation",
                "generators": [
                    {"src": list(src), "signs": [int(s) for s in signs]}
                    for src, signs in self.action_generators
                ],
            }
        else:
            actions = {"n": self.n_actions, "generators": [{"perm": list(p)} for p in self.action_perms]}
        return {
            "env": self.env_id,
            "group": self.group_name,
            "description": self.description,
            "observation": obs,
            "actions": actions,
            "verify": verify,
        }

    # -- validation against an env ----------------------------------------------------------------
    def check_fits(
        self, observation_space: Any, action_space: Any, action_meanings: Sequence[str] | None = None
    ) -> None:
        """Raise :class:`SymmetryError` unless the spec fits these (gymnasium) spaces."""

        where = self.env_id
        self.check_action_space(action_space)
        shape = tuple(observation_space.shape or ())
        if self.obs_type == "signed_permutation":
            assert self.obs_generators is not None
            n = len(self.obs_generators[0][0])
            if len(shape) != 1 or shape[0] != n:
                raise _fail(where, f"acts on {n} observation features but the observation shape is {shape}")
        else:
            if len(shape) < 2:
                raise _fail(where, f"an image action needs an image observation, got shape {shape}")
            h, w = (shape[-2], shape[-1]) if self.layout == "CHW" else (shape[-3], shape[-2])
            quarter = self.obs_generators is None or any(k % 2 for k, _ in self.obs_generators)
            if quarter and h != w:
                raise _fail(where, f"quarter turns need square frames, got {h}x{w}")
        if action_meanings is not None and self.action_names:
            for gi, pairs in enumerate(self.action_names):
                for a, b in pairs:
                    for name in (a, b):
                        if name not in action_meanings:
                            raise _fail(
                                where, f"action {name!r} is not one of the env's {list(action_meanings)}"
                            )
                    ia, ib = action_meanings.index(a), action_meanings.index(b)
                    if self.action_perms[gi][ia] != ib:
                        raise _fail(
                            where, f"{a}<->{b} does not match the permutation {list(self.action_perms[gi])}"
                        )

    def check_action_space(self, action_space: Any) -> None:
        """Raise :class:`SymmetryError` (one line) unless the action map fits ``action_space``: a
        ``Discrete`` space of the permuted size, or a 1-D ``Box`` of the signed permutation's size whose
        bounds every generator maps onto themselves (``low``/``high`` permuted, swapped where negated)."""
        import numpy as np
        from gymnasium import spaces

        where = self.env_id
        if not self.continuous:
            if not isinstance(action_space, spaces.Discrete):
                raise _fail(where, f"needs a discrete action space, the env has {action_space}")
            if int(action_space.n) != self.n_actions:
                raise _fail(
                    where,
                    f"permutes {self.n_actions} actions but the env's action space has {int(action_space.n)}",
                )
            return
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise _fail(where, f"needs a 1-D continuous (Box) action space, the env has {action_space}")
        if action_space.shape[0] != self.n_actions:
            raise _fail(
                where,
                f"acts on {self.n_actions} action dimensions but the env's action space has "
                f"{action_space.shape[0]}",
            )
        low = np.asarray(action_space.low, dtype=np.float64)
        high = np.asarray(action_space.high, dtype=np.float64)
        for src, signs in self.action_generators:
            s = np.asarray(signs)
            idx = list(src)
            lo = np.where(s > 0, low[idx], -high[idx])
            hi = np.where(s > 0, high[idx], -low[idx])
            if not (np.allclose(lo, low) and np.allclose(hi, high)):
                raise _fail(
                    where,
                    f"the action map {{src: {list(src)}, signs: {[int(v) for v in signs]}}} does not map "
                    f"the action box [{low.tolist()}, {high.tolist()}] onto itself",
                )


def _parse_signed(gen: Any, where: str, what: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if not isinstance(gen, Mapping) or set(gen) - {"src", "signs"} or "src" not in gen:
        raise _fail(
            where, f"each {what} generator must be a mapping with 'src' and optional 'signs', got {gen!r}"
        )
    src = _int_list(gen["src"], where, f"{what} src")
    _check_bijection(src, len(src), where, f"{what} src")
    signs_raw = gen.get("signs", [1] * len(src))
    if (
        not isinstance(signs_raw, list)
        or len(signs_raw) != len(src)
        or any(s not in (1, -1) or isinstance(s, bool) for s in signs_raw)
    ):
        raise _fail(where, f"{what} signs must be {len(src)} values of +1/-1, got {signs_raw!r}")
    return src, tuple(float(s) for s in signs_raw)


def _parse_image(gen: Any, where: str) -> tuple[int, bool]:
    if not isinstance(gen, Mapping) or len(gen) != 1 or next(iter(gen)) not in ("rotate", "mirror"):
        raise _fail(
            where, f"an image generator is {{rotate: k}} or {{mirror: left-right|top-bottom}}, got {gen!r}"
        )
    if "rotate" in gen:
        k = gen["rotate"]
        if not isinstance(k, int) or isinstance(k, bool):
            raise _fail(where, f"rotate takes a number of quarter turns, got {k!r}")
        return (k % 4, False)
    axis = str(gen["mirror"]).lower().replace("_", "-")
    if axis == "left-right":
        return (0, True)
    if axis == "top-bottom":
        return (2, True)
    raise _fail(where, f"mirror axis must be left-right or top-bottom, got {gen['mirror']!r}")


def _parse_action_gen(
    gen: Any, where: str, n: int | None
) -> tuple[tuple[int, ...] | None, tuple[tuple[str, str], ...]]:
    if not isinstance(gen, Mapping) or len(gen) != 1 or next(iter(gen)) not in ("perm", "swap", "swap_names"):
        raise _fail(
            where,
            f"an action generator is {{perm: [...]}}, {{swap: [[a, b], ...]}} or {{swap_names: ...}}, got {gen!r}",
        )
    key, val = next(iter(gen.items()))
    if key == "perm":
        p = _int_list(val, where, "action perm")
        _check_bijection(p, len(p), where, "action perm")
        return p, ()
    if not isinstance(val, list) or not all(isinstance(pr, list) and len(pr) == 2 for pr in val):
        raise _fail(where, f"{key} must be a list of pairs, got {val!r}")
    if key == "swap_names":
        return None, tuple((str(a), str(b)) for a, b in val)
    if n is None:
        raise _fail(where, "actions.n is required with swap")
    from equirl.actions import swap_permutation

    try:
        return swap_permutation(n, [(int(a), int(b)) for a, b in val]), ()
    except (GroupError, ValueError, TypeError) as exc:
        raise _fail(where, str(exc)) from None


def parse_spec(data: Mapping[str, Any], source: str = "<dict>") -> EnvSymmetry:
    """Validate a spec mapping and build an :class:`EnvSymmetry` (one-line :class:`SymmetryError` on error)."""
    if not isinstance(data, Mapping):
        raise _fail(source, "must be a mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(source, f"unknown keys {sorted(map(str, unknown))} (allowed: {sorted(_TOP_KEYS)})")
    for key in ("env", "group", "observation", "actions"):
        if key not in data:
            raise _fail(source, f"missing key {key!r}")
    env_id = str(data["env"])
    where = f"{env_id} ({source})"
    try:
        group = get_group(str(data["group"]))
    except GroupError as exc:
        raise _fail(where, str(exc)) from None
    n_gen = len(group.generator_indices)

    obs = data["observation"]
    if not isinstance(obs, Mapping) or obs.get("type") not in _OBS_TYPES:
        raise _fail(where, f"observation.type must be one of {list(_OBS_TYPES)}")
    if set(obs) - {"type", "generators", "layout"}:
        raise _fail(
            where,
            f"unknown observation keys {sorted(map(str, set(obs) - {'type', 'generators', 'layout'}))} "
            "(allowed: generators, layout, type)",
        )
    layout = str(obs.get("layout", "CHW")).upper()
    if layout not in ("CHW", "HWC"):
        raise _fail(where, f"observation.layout must be CHW or HWC, got {layout!r}")
    gens = obs.get("generators", "default")
    obs_gens: tuple[Any, ...] | None
    if obs["type"] == "image" and gens == "default":
        obs_gens = None
    else:
        if not isinstance(gens, list) or len(gens) != n_gen:
            raise _fail(
                where, f"{group.name} has {n_gen} generator(s): give {n_gen} observation generator(s)"
            )
        if obs["type"] == "signed_permutation":
            obs_gens = tuple(_parse_signed(gn, where, "observation") for gn in gens)
            if len({len(s) for s, _ in obs_gens}) != 1:
                raise _fail(where, "observation generators act on different numbers of features")
        else:
            obs_gens = tuple(_parse_image(gn, where) for gn in gens)

    acts = data["actions"]
    if not isinstance(acts, Mapping) or acts.get("type", "permutation") not in _ACTION_TYPES:
        raise _fail(where, f"actions.type must be one of {list(_ACTION_TYPES)}")
    if acts.get("type") == "signed_permutation":
        if "generators" not in acts or set(acts) - {"type", "generators"}:
            raise _fail(where, "signed_permutation actions must be a mapping with 'type' and 'generators'")
        cgens = acts["generators"]
        if not isinstance(cgens, list) or len(cgens) != n_gen:
            raise _fail(where, f"{group.name} has {n_gen} generator(s): give {n_gen} action generator(s)")
        act_gens = tuple(_parse_signed(gn, where, "action") for gn in cgens)
        if len({len(s) for s, _ in act_gens}) != 1:
            raise _fail(where, "action generators act on different numbers of action dimensions")
        return _finish_spec(data, source, where, group, n_gen, obs, obs_gens, layout, (), (), act_gens)
    if "generators" not in acts or set(acts) - {"type", "n", "generators", "meanings"}:
        raise _fail(where, "actions must be a mapping with 'generators' (and optional 'n', 'meanings')")
    n = acts.get("n")
    meanings = acts.get("meanings")
    if meanings is not None:
        if not isinstance(meanings, list):
            raise _fail(where, "actions.meanings must be a list of action names")
        meanings = [str(m) for m in meanings]
        n = n if n is not None else len(meanings)
    if n is not None and (not isinstance(n, int) or n < 1):
        raise _fail(where, f"actions.n must be a positive integer, got {n!r}")
    agens = acts["generators"]
    if not isinstance(agens, list) or len(agens) != n_gen:
        raise _fail(where, f"{group.name} has {n_gen} generator(s): give {n_gen} action generator(s)")
    perms: list[tuple[int, ...]] = []
    names: list[tuple[tuple[str, str], ...]] = []
    for gn in agens:
        p, nm = _parse_action_gen(gn, where, n)
        if p is None:
            if meanings is None:
                raise _fail(where, "swap_names needs actions.meanings (the env's action names in order)")
            from equirl.actions import swap_permutation

            for a, b in nm:
                for name in (a, b):
                    if name not in meanings:
                        raise _fail(where, f"action {name!r} is not one of {meanings}")
            try:
                p = swap_permutation(len(meanings), [(meanings.index(a), meanings.index(b)) for a, b in nm])
            except GroupError as exc:
                raise _fail(where, str(exc)) from None
        if n is not None and len(p) != n:
            raise _fail(where, f"action permutation {list(p)} has {len(p)} entries but actions.n is {n}")
        perms.append(p)
        names.append(nm)
    if len({len(p) for p in perms}) != 1:
        raise _fail(where, "action generators permute different numbers of actions")
    return _finish_spec(
        data, source, where, group, n_gen, obs, obs_gens, layout, tuple(perms), tuple(names), ()
    )


def _finish_spec(
    data: Mapping[str, Any],
    source: str,
    where: str,
    group: Group,
    n_gen: int,
    obs: Mapping[str, Any],
    obs_gens: tuple[Any, ...] | None,
    layout: str,
    perms: tuple[tuple[int, ...], ...],
    names: tuple[tuple[tuple[str, str], ...], ...],
    act_gens: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...],
) -> EnvSymmetry:
    """The verify section, then the :class:`EnvSymmetry` (checked to define group actions)."""
    verify = data.get("verify", {"method": "none"})
    if not isinstance(verify, Mapping) or verify.get("method", "none") not in _VERIFY:
        raise _fail(where, f"verify.method must be one of {list(_VERIFY)}")
    if set(verify) - _VERIFY_KEYS:
        raise _fail(
            where,
            f"unknown verify keys {sorted(map(str, set(verify) - _VERIFY_KEYS))} "
            f"(allowed: {', '.join(sorted(_VERIFY_KEYS))})",
        )
    vmethod = str(verify.get("method", "none"))
    attribute = verify.get("attribute", "state")
    if not isinstance(attribute, str) or not attribute.isidentifier() or attribute.startswith("_"):
        raise _fail(
            where,
            f"verify.attribute must name a public attribute of env.unwrapped (such as state), got {attribute!r}",
        )
    atol = verify.get("atol", EXACT_ATOL)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not 0 < atol < float("inf"):
        raise _fail(where, f"verify.atol must be a positive number, got {atol!r}")
    reason = str(verify.get("reason", "")).strip()
    if atol > EXACT_ATOL and not reason:
        raise _fail(
            where, "verify.atol above 1e-5 declares the env only approximately symmetric: give verify.reason"
        )
    state_gens: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    if vmethod in ("state", "mujoco"):
        vg = verify.get("generators")
        if not isinstance(vg, list) or len(vg) != n_gen:
            raise _fail(where, f"verify.generators must give {n_gen} signed permutation(s) of the state")
        state_gens = tuple(_parse_signed(gn, where, "state") for gn in vg)

    sym = EnvSymmetry(
        env_id=str(data["env"]),
        group_name=str(data["group"]),
        obs_type=str(obs["type"]),
        obs_generators=obs_gens,
        action_perms=perms,
        layout=layout,
        action_names=names if any(names) else (),
        verify=vmethod,
        state_attribute=attribute,
        state_generators=state_gens,
        description=str(data.get("description", "")),
        source=source,
        action_type="signed_permutation" if act_gens else "permutation",
        action_generators=act_gens,
        verify_atol=float(atol),
        verify_reason=reason,
    )
    # the generator images must define actions of the group (homomorphism check, exact)
    try:
        sym.obs_action()
        sym.action_action()
        if state_gens:
            sym.state_action()
    except GroupError as exc:
        raise _fail(where, str(exc)) from None
    return sym


#: the environment variable listing extra spec folders (``os.pathsep``-separated), searched first
ENVS_PATH_VAR = "EQUIRL_ENVS_PATH"


def _search_dirs() -> list[Path]:
    """``$EQUIRL_ENVS_PATH``'s folders, then the shipped specs; one line when an entry is not a folder
    (a file, or missing: its specs would otherwise be silently skipped)."""
    dirs = [Path(p) for p in os.environ.get(ENVS_PATH_VAR, "").split(os.pathsep) if p.strip()]
    for d in dirs:
        shown = printable(d, 200)
        if d.is_dir():
            continue
        if d.exists():
            raise ConfigError(
                f"{ENVS_PATH_VAR} entry {shown} is a file, not a folder: list folders of spec YAML files "
                f"(separated by {os.pathsep!r})"
            )
        raise ConfigError(
            f"{ENVS_PATH_VAR} entry {shown} not found: it must be an existing folder of spec YAML files"
        )
    return [*dirs, SPEC_DIR]


def _file_key(env_id: str) -> str:
    return env_id.replace("/", "_")


def find_spec_file(env_id: str) -> Path | None:
    """The spec file for ``env_id`` (``ALE/Pong-v5`` is stored as ``ALE_Pong-v5.yaml``), or ``None``."""
    for d in _search_dirs():
        for ext in (".yaml", ".yml"):
            p = d / f"{_file_key(env_id)}{ext}"
            if p.is_file():
                return p
    return None


def list_specs() -> list[EnvSymmetry]:
    """All specs found on the search path (``$EQUIRL_ENVS_PATH`` then the packaged ``envs/``)."""
    seen: dict[str, EnvSymmetry] = {}
    for d in _search_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.y*ml")):
            sym = load_spec(p)
            seen.setdefault(sym.env_id, sym)
    return sorted(seen.values(), key=lambda s: s.env_id)


def load_spec(spec: str | Path | Mapping[str, Any] | EnvSymmetry) -> EnvSymmetry:
    """A spec from an env id (``CartPole-v1``), a YAML path, a mapping, or an :class:`EnvSymmetry`.

    :raises SymmetryError: unknown env or invalid spec (one line).
    """
    if isinstance(spec, EnvSymmetry):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(spec)
    s = str(spec)
    path = Path(s)
    if s.endswith((".yaml", ".yml")) or path.is_file():
        from equirl.config import load_yaml

        try:
            data = load_yaml(path)
        except ConfigError as exc:
            raise SymmetryError(str(exc)) from None
        return parse_spec(data, source=str(path))
    found = find_spec_file(s)
    if found is None:
        known = []
        for d in _search_dirs():
            if d.is_dir():
                known += [
                    p.stem.replace("_", "/", 1) if p.stem.startswith(("ALE_", "equirl_")) else p.stem
                    for p in d.glob("*.y*ml")
                ]
        raise SymmetryError(f"unknown env {s!r}: no symmetry spec; known: {', '.join(sorted(set(known)))}")
    return load_spec(found)


def resolve_symmetry(symmetry: Any) -> EnvSymmetry:
    """Accept what ``policy_kwargs["symmetry"]`` may hold (env id, path, mapping or spec)."""
    try:
        return load_spec(symmetry)
    except EquirlError:
        raise
    except Exception as exc:  # pragma: no cover - defensive
        raise SymmetryError(f"cannot read symmetry {symmetry!r}: {exc}") from None
