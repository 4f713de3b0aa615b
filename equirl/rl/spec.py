"""Declarative environment symmetry specs (YAML): group, action on observations, permutation of actions.

A spec names a finite group and gives, per generator, its action on observations and on the discrete
actions; the action of every other element follows by composition (checked to be a homomorphism by
:mod:`equirl.actions`). Supported observation actions need no Python code:

* ``signed_permutation`` -- ``(g·s)[i] = sign[i] * s[src[i]]`` on a feature vector (CartPole, Acrobot,
  LunarLander);
* ``image`` -- quarter turns (``rotate: k``) and real mirrors (``mirror: left-right|top-bottom``) of
  the image's spatial dims, given for the *raw* observation layout (``HWC`` or ``CHW``); the policy
  side automatically acts on SB3's channel-first tensor layout. A mirror of a band only
  (``{mirror: top-bottom, band: [34, 194], size: 210}``: the rows 34-193 of a 210-row frame, Pong's
  playfield, whose centre is not the frame's) is a group ``flip`` of its own, scaled to resized frames
  (:class:`~equirl.actions.BandMirror`);

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from equirl.assets import asset_path
from equirl.config import FieldError, Range, from_dict
from equirl.errors import ConfigError, EquirlError, GroupError, SymmetryError
from equirl.groups import Group, get_group
from equirl.utils.io import printable

__all__ = [
    "SPEC_DIR",
    "EnvSymmetry",
    "Score",
    "SpecFile",
    "env_scores",
    "find_spec_file",
    "list_specs",
    "load_spec",
    "parse_spec",
    "resolve_symmetry",
    "spec_twin",
]

#: the shipped specs: the top-level ``envs/`` folder (inside the wheel as ``equirl/assets/envs``)
SPEC_DIR = asset_path("envs")

#: the tolerance of an exact symmetry check (float32 rounding of set states)
EXACT_ATOL = 1e-5
#: how observations are acted on: signed permutations of a feature vector, or image turns / mirrors
ObsType = Literal["signed_permutation", "image"]
#: discrete actions are permuted, continuous (``Box``) action vectors get a signed permutation
ActionType = Literal["permutation", "signed_permutation"]
#: how ``check-symmetry`` checks the spec (see :attr:`EnvSymmetry.verify`): it sets the env's state
#: (``state``, ``obs``, ``mujoco``, ``minatar``), plays conjugate policies on real frames
#: (``statistical-frames``: Atari), or only checks the spaces (``none``)
VerifyMethod = Literal["state", "obs", "mujoco", "minatar", "statistical-frames", "none"]

_T = TypeVar("_T")


def _fail(where: str, msg: str) -> SymmetryError:
    return SymmetryError(f"symmetry spec {where}: {msg}")


@dataclass(frozen=True)
class EnvSymmetry:
    """A validated environment symmetry (plain data: picklable, hashable, torch-free).

    :param env_id: the gymnasium id.
    :param group_name: a :func:`equirl.groups.get_group` string.
    :param obs_type: ``"signed_permutation"`` or ``"image"``.
    :param obs_generators: per generator, ``(src, signs)`` for signed permutations or ``(k, mirror)``
        image transforms (``None``: the group's default image action).
    :param obs_band: ``(start, stop, size)``: the one mirror generator acts on the band ``[start, stop)`` of
        its axis, in pixels of a ``size``-pixel raw frame, only (``None``: on the whole frame).
    :param layout: the raw image layout (``"HWC"`` or ``"CHW"``) for image specs.
    :param action_perms: per generator, where each discrete action goes (``perm[i]``); empty for
        continuous actions.
    :param action_names: per generator, swapped action meanings to check against the env (or empty).
    :param verify: how ``check-symmetry`` checks the spec: it sets states (``"state"``, ``"obs"``,
        ``"mujoco"``: the ``[qpos, qvel]`` vector of a MuJoCo env, set with ``env.unwrapped.set_state``,
        ``"minatar"``: a MinAtar game's state mirrored by :data:`equirl.rl.check.MINATAR_MIRRORS`), compares
        the real frames of conjugate policies (``"statistical-frames"``: image envs whose state cannot be
        set, Atari; see :func:`equirl.rl.check.check_symmetry`) or checks the spaces only (``"none"``).
    :param state_attribute: the ``env.unwrapped`` attribute holding the state (``verify="state"``).
    :param state_generators: per generator, ``(src, signs)`` acting on that state vector.
    :param source: where the spec was read from.
    :param action_type: ``"permutation"`` (discrete actions) or ``"signed_permutation"`` (``Box``).
    :param action_generators: per generator, ``(src, signs)`` acting on continuous action vectors.
    :param verify_atol: the tolerance ``check-symmetry`` verifies against (``verify.atol``; 1e-5, i.e.
        exact, unless the spec declares the env only approximately symmetric).
    :param verify_reason: why the env is only approximately symmetric (``verify.reason``; required with a
        ``verify.atol`` above 1e-5).
    :param scores: the env's score range and success threshold (:class:`Score`), if the spec gives them.
    :param verify_region: the part of the frame ``statistical-frames`` compares, ``((row start, row stop),
        (col start, col stop))`` in pixels of the raw frame (``verify.region``; ``None``: the whole frame).
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
    scores: Score | None = None
    verify_region: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None
    obs_band: tuple[int, int, int] | None = None

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
        from equirl.actions import ImageTransform, band_mirror_action, image_action, signed_permutation_action

        g = self.group
        if self.obs_type == "signed_permutation":
            assert self.obs_generators is not None
            return signed_permutation_action(
                g, [src for src, _ in self.obs_generators], signs=[list(s) for _, s in self.obs_generators]
            )
        dims = image_dims or ((-2, -1) if self.layout == "CHW" else (-3, -2))
        if self.obs_band is not None:
            assert self.obs_generators is not None
            return band_mirror_action(*self.obs_band, axis=self._band_axis, dims=dims, group=g)
        imgs = None if self.obs_generators is None else [ImageTransform(k, m) for k, m in self.obs_generators]
        return image_action(g, imgs, dims=dims)

    def policy_obs_action(self, observation_space: Any) -> Any:
        """The group action on the observation tensor *as a policy sees it* (after SB3's transposition of
        channel-last images to channel-first), checked against ``observation_space``
        (:func:`equirl.rl.policies.policy_obs_action`, here so that a policy reads everything it needs
        from the spec in one go).

        :raises SymmetryError: the space does not fit the spec (size, image shape, square frames).
        """
        shape = tuple(observation_space.shape or ())
        if self.obs_type == "signed_permutation":
            assert self.obs_generators is not None
            n = len(self.obs_generators[0][0])
            if shape != (n,):
                raise SymmetryError(
                    f"{self.env_id}: the spec acts on {n} features but the observation shape is {shape}"
                )
            return self.obs_action()
        if len(shape) == 3:
            from stable_baselines3.common.preprocessing import is_image_space_channels_first

            dims = (-2, -1) if is_image_space_channels_first(observation_space) else (-3, -2)
        elif len(shape) == 2:
            dims = (-2, -1)
        else:
            raise SymmetryError(
                f"{self.env_id}: an image symmetry needs image observations, got shape {shape}"
            )
        h, w = shape[dims[0]], shape[dims[1]]
        quarter = self.obs_generators is None or any(k % 2 for k, _ in self.obs_generators)
        if quarter and h != w:
            raise SymmetryError(f"{self.env_id}: quarter turns need square frames, got {h}x{w}")
        return self.obs_action(image_dims=dims)

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
                if self.obs_band is not None:
                    start, stop, size = self.obs_band
                    obs["generators"][0].update(band=[start, stop], size=size)
        verify: dict[str, Any] = {"method": self.verify}
        if self.verify in ("state", "mujoco"):
            if self.verify == "state":
                verify["attribute"] = self.state_attribute
            verify["generators"] = [
                {"src": list(src), "signs": [int(s) for s in signs]} for src, signs in self.state_generators
            ]
        if self.verify_region is not None:
            rows, cols = self.verify_region
            verify["region"] = {k: list(v) for k, v in (("rows", rows), ("cols", cols)) if v is not None}
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
        out = {
            "env": self.env_id,
            "group": self.group_name,
            "description": self.description,
            "observation": obs,
            "actions": actions,
            "verify": verify,
        }
        if self.scores is not None:
            out["scores"] = {
                "min": self.scores.min,
                "max": self.scores.max,
                "threshold": self.scores.threshold,
            }
        return out

    # -- validation against an env ----------------------------------------------------------------
    def check_region(self, frame_shape: Sequence[int]) -> None:
        """Raise :class:`SymmetryError` unless ``verify.region`` and a band mirror's reference size fit the
        raw frames of shape ``frame_shape`` (``self.layout``; leading axes allowed)."""
        shape = tuple(frame_shape)
        h, w = (shape[-2], shape[-1]) if self.layout == "CHW" else (shape[-3], shape[-2])
        self._check_band(h, w)
        if self.verify_region is None:
            return
        for key, span, size in zip(("rows", "cols"), self.verify_region, (h, w)):
            if span is not None and span[1] > size:
                raise _fail(self.env_id, f"verify.region.{key} {list(span)} does not fit the {h}x{w} frames")

    @property
    def _band_axis(self) -> str:
        """The mirrored axis of a band mirror: its generator's ``(0, True)`` is left-right, ``(2, True)``
        top-bottom."""
        assert self.obs_generators is not None
        return "left-right" if self.obs_generators[0][0] == 0 else "top-bottom"

    def _check_band(self, h: int, w: int) -> None:
        """A band mirror's ``size`` must be the raw frames' length along its axis (the policy's frames are
        then a resize of the whole raw frame, which the band scales with)."""
        if self.obs_band is None or self.obs_generators is None:
            return
        length = w if self._band_axis == "left-right" else h
        if length != self.obs_band[2]:
            raise _fail(
                self.env_id,
                f"observation.generators[0].size is {self.obs_band[2]} pixels but the raw frames are {h}x{w}",
            )

    def check_fits(
        self, observation_space: Any, action_space: Any, action_meanings: Sequence[str] | None = None
    ) -> None:
        """Raise :class:`SymmetryError` unless the spec fits these (gymnasium) spaces (``verify.region``
        is in pixels of the raw frame, not the policy's preprocessed one: :meth:`check_region` checks it)."""

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
            self._check_band(h, w)
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


# -- the spec file's schema -------------------------------------------------------------------------
# Types, bounds and choices are declared in the annotations and checked by equirl.config.from_dict (one
# line per error, naming the dotted key); each class's __post_init__ adds the rules within one mapping
# (bijections, signs, one kind of generator), and parse_spec the rules across the file (one generator
# per group generator, sizes, swaps and action names, the homomorphism check).


def _bijection(p: Sequence[int]) -> str | None:
    """Why ``p`` is not a permutation of ``0..len(p)-1`` (``None``: it is one)."""
    if not p:
        return "must list at least one index"
    if sorted(p) != list(range(len(p))):
        return f"is not a bijection of 0..{len(p) - 1}: must list each index once"
    return None


@dataclass(frozen=True)
class SignedPermGen:
    """A signed permutation ``{src, signs}``: ``(g·x)[i] = signs[i] * x[src[i]]`` (``signs`` all +1
    when left out); of observation features, continuous actions or the env's state."""

    src: list[int]
    signs: list[int] | None = None

    def __post_init__(self) -> None:
        why = _bijection(self.src)
        if why is not None:
            raise FieldError("src", self.src, why)
        if self.signs is not None and (
            len(self.signs) != len(self.src) or any(s not in (1, -1) for s in self.signs)
        ):
            raise FieldError("signs", self.signs, f"must be {len(self.src)} values, each +1 or -1")

    def parsed(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        signs = self.signs if self.signs is not None else [1] * len(self.src)
        return tuple(self.src), tuple(float(s) for s in signs)


#: the image mirrors as ``(k, mirror)`` image transforms (see :class:`~equirl.actions.ImageTransform`)
_MIRRORS = {"left-right": (0, True), "top-bottom": (2, True)}


def _axis(mirror: str) -> str:
    return mirror.lower().replace("_", "-")


@dataclass(frozen=True)
class ImageGen:
    """An image generator: ``{rotate: k}`` (``k`` quarter turns) or ``{mirror: left-right|top-bottom}``,
    optionally of a band of the mirrored axis only (``band: [start, stop]`` in pixels of a ``size``-pixel
    raw frame)."""

    rotate: int | None = None
    mirror: str | None = None
    band: list[int] | None = None
    size: Annotated[int, Range(ge=1, le=1 << 20)] | None = None

    def __post_init__(self) -> None:
        if self.rotate is None and self.mirror is None:
            raise FieldError(
                "rotate",
                None,
                "must be given (a number of quarter turns), or else mirror: left-right|top-bottom",
            )
        if self.rotate is not None and self.mirror is not None:
            raise FieldError(
                "mirror", self.mirror, "must not be given with rotate: one transform per generator"
            )
        if self.mirror is not None and _axis(self.mirror) not in _MIRRORS:
            raise FieldError("mirror", self.mirror, "must be left-right or top-bottom")
        if (self.band is None) != (self.size is None):
            raise FieldError(
                "band" if self.band is None else "size",
                None,
                "band [start, stop] and size (the raw frame's pixels along the mirrored axis) go together",
            )
        if self.band is not None and self.mirror is None:
            raise FieldError("band", self.band, "is a band of a mirror: give mirror: left-right|top-bottom")
        span = _pixel_range("band", self.band)
        if span is not None and self.size is not None and span[1] > self.size:
            raise FieldError("band", self.band, f"must end within the frame's size ({self.size} pixels)")

    def band_spec(self) -> tuple[int, int, int] | None:
        """``(start, stop, size)`` of a band mirror, or ``None``."""
        span = _pixel_range("band", self.band)
        if span is None or self.size is None:
            return None
        return (*span, int(self.size))

    def parsed(self) -> tuple[int, bool]:
        if self.mirror is not None:
            return _MIRRORS[_axis(self.mirror)]
        assert self.rotate is not None
        return (self.rotate % 4, False)


_ACTION_GEN_KINDS = ("perm", "swap", "swap_names")


@dataclass(frozen=True)
class ActionGen:
    """A discrete-action generator, one of ``{perm: [...]}`` (action ``i`` goes to ``perm[i]``),
    ``{swap: [[a, b], ...]}`` (needs ``actions.n``) or ``{swap_names: [[A, B], ...]}`` (needs
    ``actions.meanings``)."""

    perm: list[int] | None = None
    swap: list[tuple[int, int]] | None = None
    swap_names: list[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        given = [k for k in _ACTION_GEN_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            key = given[1] if given else "perm"
            raise FieldError(
                key,
                getattr(self, key),
                "an action generator is exactly one of {perm: [...]}, {swap: [[a, b], ...]}, "
                "{swap_names: [[A, B], ...]}",
            )
        if self.perm is not None and (why := _bijection(self.perm)) is not None:
            raise FieldError("perm", self.perm, why)


@dataclass(frozen=True)
class ObservationSection:
    """``observation``: the group's action on observations. ``generators``: one entry per group
    generator (:class:`SignedPermGen` or :class:`ImageGen`, checked in :func:`parse_spec`), or
    ``default`` (image observations: the group's default image action); ``layout``: the raw image
    layout."""

    type: ObsType
    generators: list[Any] | str = "default"
    layout: str = "CHW"

    def __post_init__(self) -> None:
        layout = self.layout.upper()
        if layout not in ("CHW", "HWC"):
            raise FieldError("layout", self.layout, "must be CHW or HWC (the raw image layout)")
        object.__setattr__(self, "layout", layout)
        if isinstance(self.generators, str) and not (self.generators == "default" and self.type == "image"):
            raise FieldError(
                "generators",
                self.generators,
                "must be a list of generators (or default, for image observations)",
            )


@dataclass(frozen=True)
class ActionsSection:
    """``actions``: the group's action on actions. Discrete actions (``type: permutation``): one
    :class:`ActionGen` per group generator, with the number of actions ``n`` and / or their names
    ``meanings``; continuous ones (``type: signed_permutation``): one :class:`SignedPermGen` each."""

    generators: list[Any]
    type: ActionType = "permutation"
    n: Annotated[int, Range(ge=1)] | None = None
    meanings: list[str] | None = None

    def __post_init__(self) -> None:
        if self.type == "signed_permutation":
            for key in ("n", "meanings"):
                if getattr(self, key) is not None:
                    raise FieldError(
                        key, getattr(self, key), "applies to discrete (permutation) actions only"
                    )
        if self.meanings is not None and not self.meanings:
            raise FieldError("meanings", self.meanings, "must list the env's action names, in order")


def _pixel_range(key: str, value: list[int] | None) -> tuple[int, int] | None:
    """``[start, stop]`` as a tuple (``None`` stays ``None``); one line unless ``0 <= start < stop``."""
    if value is None:
        return None
    if len(value) != 2 or not 0 <= value[0] < value[1]:
        raise FieldError(key, value, "must be [start, stop] pixels with 0 <= start < stop")
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class RegionSection:
    """``verify.region``: the rows ``[start, stop)`` and columns ``[start, stop)`` of the raw frame that
    ``statistical-frames`` compares (each optional: all of them); e.g. the playfield, without a score
    display that is not mirrored."""

    rows: list[int] | None = None
    cols: list[int] | None = None

    def __post_init__(self) -> None:
        _pixel_range("rows", self.rows)
        _pixel_range("cols", self.cols)

    def parsed(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        return _pixel_range("rows", self.rows), _pixel_range("cols", self.cols)


@dataclass(frozen=True)
class VerifySection:
    """``verify``: how ``check-symmetry`` checks the spec against the env (see :class:`EnvSymmetry`).
    ``generators``: per group generator a :class:`SignedPermGen` of the state (``state`` / ``mujoco``);
    ``atol`` above :data:`EXACT_ATOL` needs a ``reason``; ``region`` (``statistical-frames`` only): the
    part of the frame compared (:class:`RegionSection`)."""

    method: VerifyMethod = "none"
    attribute: str = "state"
    generators: list[Any] | None = None
    atol: Annotated[float, Range(gt=0)] = EXACT_ATOL
    reason: str = ""
    region: RegionSection | None = None

    def __post_init__(self) -> None:
        if not self.attribute.isidentifier() or self.attribute.startswith("_"):
            raise FieldError(
                "attribute", self.attribute, "must name a public attribute of env.unwrapped (such as state)"
            )
        object.__setattr__(self, "reason", self.reason.strip())
        if self.atol > EXACT_ATOL and not self.reason:
            raise FieldError(
                "atol",
                self.atol,
                "above 1e-5 declares the env only approximately symmetric: give verify.reason",
            )
        if self.method in ("state", "mujoco") and self.generators is None:
            raise FieldError(
                "generators", None, f"must give the signed permutation(s) of the state (method {self.method})"
            )
        if self.region is not None and self.method != "statistical-frames":
            raise FieldError(
                "region", "{...}", f"applies to method statistical-frames only, not {self.method}"
            )


@dataclass(frozen=True)
class Score:
    """An env's score range and success threshold (``scores`` of a spec, or ``scores.<env>`` of a sweep
    file overriding it): the range normalises returns (0 = ``min``, 1 = ``max``; sweep reports, ``auto``'s
    ties and collapses), ``threshold`` is the "solved" return of steps-to-threshold (sweep reports, the
    sample-efficiency benchmark). Finite numbers with ``min < max``."""

    min: float
    max: float
    threshold: float

    def __post_init__(self) -> None:
        if not self.min < self.max:
            raise FieldError("min", self.min, f"must be less than max ({self.max:g})")


@dataclass(frozen=True)
class SpecFile:
    """A symmetry spec as written (YAML / a mapping); :func:`parse_spec` makes it an :class:`EnvSymmetry`.
    ``notes``: free text, not read."""

    env: str
    group: str
    observation: ObservationSection
    actions: ActionsSection
    description: str = ""
    verify: VerifySection = field(default_factory=VerifySection)
    scores: Score | None = None
    notes: Any = None

    def __post_init__(self) -> None:
        if not self.env.strip():
            raise FieldError("env", self.env, "must be a gymnasium env id")


def _schema(cls: type[_T], data: Any, key: str, where: str) -> _T:
    """``from_dict(cls, data, key)`` with its error as one :class:`SymmetryError` line (``symmetry spec
    <where>: <key>...``); a missing key is named with its entry."""
    try:
        return from_dict(cls, data, key)
    except FieldError as exc:
        raise _fail(where, printable(exc, 1000)) from None
    except ConfigError as exc:
        msg = str(exc)
        if key and msg.startswith("missing required key") and f"{key}." not in msg:
            msg = f"{key}: {msg}"
        raise _fail(where, printable(msg, 1000)) from None


def _parse_signed(gen: Any, where: str, key: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    return _schema(SignedPermGen, gen, key, where).parsed()


def _parse_image(gen: Any, where: str, key: str) -> ImageGen:
    return _schema(ImageGen, gen, key, where)


def _parse_action_gen(
    gen: ActionGen, where: str, key: str, n: int | None, meanings: list[str] | None
) -> tuple[tuple[int, ...], tuple[tuple[str, str], ...]]:
    """The permutation of one discrete-action generator (and the swapped names, for ``swap_names``)."""
    from equirl.actions import swap_permutation

    if gen.perm is not None:
        return tuple(gen.perm), ()
    try:
        if gen.swap is not None:
            if n is None:
                raise _fail(where, f"{key}.swap needs actions.n (the number of actions)")
            return swap_permutation(n, gen.swap), ()
        assert gen.swap_names is not None
        pairs = tuple((a, b) for a, b in gen.swap_names)
        if meanings is None:
            raise _fail(where, f"{key}.swap_names needs actions.meanings (the env's action names in order)")
        for name in (x for pair in pairs for x in pair):
            if name not in meanings:
                raise _fail(where, f"{key}.swap_names: action {name!r} is not one of {meanings}")
        index = [(meanings.index(a), meanings.index(b)) for a, b in pairs]
        return swap_permutation(len(meanings), index), pairs
    except GroupError as exc:
        raise _fail(where, f"{key}: {exc}") from None


def _generators(gens: list[Any] | str, group: Group, n_gen: int, where: str, what: str) -> list[Any]:
    """``gens``, one per generator of ``group`` (one line otherwise)."""
    if not isinstance(gens, list) or len(gens) != n_gen:
        raise _fail(where, f"{group.name} has {n_gen} generator(s): give {n_gen} {what} generator(s)")
    return gens


def _obs_generators(
    obs: ObservationSection, group: Group, n_gen: int, where: str
) -> tuple[tuple[Any, ...] | None, tuple[int, int, int] | None]:
    """The observation generators and, for a band mirror, its ``(start, stop, size)``."""
    if obs.type == "image" and obs.generators == "default":
        return None, None
    gens = enumerate(_generators(obs.generators, group, n_gen, where, "observation"))
    if obs.type == "image":
        images = [_parse_image(g, where, f"observation.generators[{i}]") for i, g in gens]
        band = images[0].band_spec() if len(images) == 1 else None
        if band is None and any(im.band is not None for im in images):
            i = next(i for i, im in enumerate(images) if im.band is not None)
            raise _fail(
                where,
                f"observation.generators[{i}].band: a band mirror is the one generator of a group of order "
                "2 (it does not compose with other generators)",
            )
        if band is not None and group.order != 2:
            raise _fail(
                where,
                f"observation.generators[0].band: a band mirror generates a group of order 2, not {group.name}",
            )
        return tuple(im.parsed() for im in images), band
    signed = tuple(_parse_signed(g, where, f"observation.generators[{i}]") for i, g in gens)
    if len({len(s) for s, _ in signed}) != 1:
        raise _fail(where, "observation generators act on different numbers of features")
    return signed, None


def _discrete_actions(
    acts: ActionsSection, group: Group, n_gen: int, where: str
) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[tuple[str, str], ...], ...]]:
    """Per generator, the permutation of the discrete actions and the swapped names (or none)."""
    meanings = acts.meanings
    n = acts.n if acts.n is not None else (len(meanings) if meanings is not None else None)
    perms: list[tuple[int, ...]] = []
    names: list[tuple[tuple[str, str], ...]] = []
    for i, raw in enumerate(_generators(acts.generators, group, n_gen, where, "action")):
        key = f"actions.generators[{i}]"
        p, nm = _parse_action_gen(_schema(ActionGen, raw, key, where), where, key, n, meanings)
        if n is not None and len(p) != n:
            raise _fail(
                where, f"{key}: action permutation {list(p)} has {len(p)} entries but actions.n is {n}"
            )
        perms.append(p)
        names.append(nm)
    if len({len(p) for p in perms}) != 1:
        raise _fail(where, "action generators permute different numbers of actions")
    return tuple(perms), tuple(names)


def parse_spec(data: Mapping[str, Any], source: str = "<dict>") -> EnvSymmetry:
    """Validate a spec mapping through the :class:`SpecFile` schema and the rules across it, and build
    an :class:`EnvSymmetry` (one-line :class:`SymmetryError` ``symmetry spec <env> (<source>): ...``
    naming the dotted key on error)."""
    if not isinstance(data, Mapping):
        raise _fail(source, "must be a mapping")
    env = data.get("env")
    where = f"{printable(env, 200)} ({source})" if isinstance(env, str) and env.strip() else source
    spec = _schema(SpecFile, data, "", where)
    try:
        group = get_group(spec.group)
    except GroupError as exc:
        raise _fail(where, str(exc)) from None
    n_gen = len(group.generator_indices)
    obs_gens, band = _obs_generators(spec.observation, group, n_gen, where)
    acts = spec.actions
    perms: tuple[tuple[int, ...], ...] = ()
    names: tuple[tuple[tuple[str, str], ...], ...] = ()
    act_gens: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    if acts.type == "signed_permutation":
        gens = enumerate(_generators(acts.generators, group, n_gen, where, "action"))
        act_gens = tuple(_parse_signed(g, where, f"actions.generators[{i}]") for i, g in gens)
        if len({len(s) for s, _ in act_gens}) != 1:
            raise _fail(where, "action generators act on different numbers of action dimensions")
    else:
        perms, names = _discrete_actions(acts, group, n_gen, where)
    return _finish_spec(spec, source, where, n_gen, obs_gens, perms, names, act_gens, band)


def _finish_spec(
    spec: SpecFile,
    source: str,
    where: str,
    n_gen: int,
    obs_gens: tuple[Any, ...] | None,
    perms: tuple[tuple[int, ...], ...],
    names: tuple[tuple[tuple[str, str], ...], ...],
    act_gens: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...],
    band: tuple[int, int, int] | None = None,
) -> EnvSymmetry:
    """The verify section's state generators, then the :class:`EnvSymmetry` (checked to define group
    actions)."""
    verify = spec.verify
    state_gens: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    if verify.method in ("state", "mujoco"):
        vg = verify.generators or []
        if len(vg) != n_gen:
            raise _fail(where, f"verify.generators must give {n_gen} signed permutation(s) of the state")
        state_gens = tuple(_parse_signed(g, where, f"verify.generators[{i}]") for i, g in enumerate(vg))
    if verify.method == "statistical-frames" and (spec.observation.type != "image" or act_gens):
        raise _fail(
            where,
            "verify method statistical-frames compares image frames under discrete actions: it needs "
            "observation.type image and permuted (discrete) actions",
        )

    sym = EnvSymmetry(
        env_id=spec.env,
        group_name=spec.group,
        obs_type=spec.observation.type,
        obs_generators=obs_gens,
        action_perms=perms,
        layout=spec.observation.layout,
        action_names=names if any(names) else (),
        verify=verify.method,
        state_attribute=verify.attribute,
        state_generators=state_gens,
        description=spec.description,
        source=source,
        action_type="signed_permutation" if act_gens else "permutation",
        action_generators=act_gens,
        verify_atol=float(verify.atol),
        verify_reason=verify.reason,
        scores=spec.scores,
        verify_region=None if verify.region is None else verify.region.parsed(),
        obs_band=band,
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


#: ALE's ids from before v5 that the RL zoo's Atari agents were trained on: ``{Game}NoFrameskip-v4`` (no
#: ``-ram``: RAM observations are not frames)
_ALE_V4 = re.compile(r"([A-Z][A-Za-z]*)NoFrameskip-v4")
#: older ids gymnasium still registers whose dynamics equal a later version's (only the time limit or
#: the reward threshold differ, which no symmetry sees): the later version's spec serves them as they are
SAME_DYNAMICS: dict[str, str] = {"CartPole-v0": "CartPole-v1"}


def spec_twin(env_id: str) -> str | None:
    """The env whose spec serves ``env_id`` when ``env_id`` has no spec file of its own, else ``None``:

    * an old id that equirl runs as its current version (:data:`equirl.rl.envs.LEGACY_ENV_IDS`:
      ``LunarLander-v2``, ``Walker2d-v3``...): that version's spec, env and all;
    * the RL zoo's Atari ids ``{Game}NoFrameskip-v4``: ``ALE/{Game}-v5``'s spec, for the v4 env itself
      (:func:`load_spec` names it so). It is the same game with the same frames and minimal action set;
      the two differ only in sticky actions and frame skip, which commute with any mirror of the screen;
    * an older version gymnasium still registers with the same dynamics (:data:`SAME_DYNAMICS`:
      ``CartPole-v0``, whose episodes end at 200 steps instead of 500): the current version's spec, for
      the older env itself.

    Example::

        >>> spec_twin("BreakoutNoFrameskip-v4"), spec_twin("Walker2d-v3"), spec_twin("Pong-ramNoFrameskip-v4")
        ('ALE/Breakout-v5', 'Walker2d-v5', None)
    """
    from equirl.rl.envs import current_env_id

    current = current_env_id(env_id)
    if current != env_id:
        return current
    m = _ALE_V4.fullmatch(env_id)
    return f"ALE/{m.group(1)}-v5" if m else SAME_DYNAMICS.get(env_id)


def _own_spec_file(env_id: str) -> Path | None:
    for d in _search_dirs():
        for ext in (".yaml", ".yml"):
            p = d / f"{_file_key(env_id)}{ext}"
            if p.is_file():
                return p
    return None


def find_spec_file(env_id: str) -> Path | None:
    """The spec file for ``env_id`` (``ALE/Pong-v5`` is stored as ``ALE_Pong-v5.yaml``; an id without a
    file of its own takes its :func:`spec_twin`'s), or ``None``."""
    own = _own_spec_file(env_id)
    if own is not None:
        return own
    twin = spec_twin(env_id)
    return _own_spec_file(twin) if twin is not None else None


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


#: specs a user gave by file for this process (:func:`use_spec_file`), by env id: found before any folder
_USER_SPECS: dict[str, EnvSymmetry] = {}


def use_spec_file(path: str | Path) -> str:
    """Read the spec YAML at ``path`` and let ``load_spec(its env id)`` find it from now on in this process
    (as a folder in ``$EQUIRL_ENVS_PATH`` would); returns its env id. How ``--env my_spec.yaml`` works.

    :raises SymmetryError: the file is not a valid spec (one line).
    """
    sym = load_spec(Path(path))
    _USER_SPECS[sym.env_id] = sym
    return sym.env_id


def is_spec_path(value: Any) -> bool:
    """Whether an ``--env`` value names a spec file (``*.yaml`` / ``*.yml``) rather than an env id."""
    return isinstance(value, (str, Path)) and str(value).endswith((".yaml", ".yml"))


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
    if s in _USER_SPECS:
        return _USER_SPECS[s]
    found = find_spec_file(s)
    if found is None:
        known = []
        for d in _search_dirs():
            if d.is_dir():
                known += [
                    p.stem.replace("_", "/", 1)
                    if p.stem.startswith(("ALE_", "equirl_", "MinAtar_"))
                    else p.stem
                    for p in d.glob("*.y*ml")
                ]
        raise SymmetryError(
            f"unknown env {s!r}: no symmetry spec (known: {', '.join(sorted(set(known)))}); write one "
            f"(docs/rl.md, 'Environment symmetry specs') and pass its path as the env, or put it in a folder "
            f"named in ${ENVS_PATH_VAR}"
        )
    sym = load_spec(found)
    if sym.env_id != s and (_ALE_V4.fullmatch(s) or s in SAME_DYNAMICS):  # the twin's spec, for s as it is
        return replace(sym, env_id=s, source=f"{sym.source or found} (as {s})")
    return sym


def resolve_symmetry(symmetry: Any) -> EnvSymmetry:
    """Accept what ``policy_kwargs["symmetry"]`` may hold (env id, path, mapping or spec)."""
    try:
        return load_spec(symmetry)
    except EquirlError:
        raise
    except Exception as exc:  # pragma: no cover - defensive
        raise SymmetryError(f"cannot read symmetry {symmetry!r}: {exc}") from None


def env_scores(env_id: str) -> dict[str, float] | None:
    """The ``scores`` of ``env_id``'s spec as ``{min, max, threshold}``, or ``None`` when the env has no
    spec or its spec gives none (the one table of per-env score ranges and thresholds: the specs)."""
    if find_spec_file(env_id) is None:
        return None
    score = load_spec(env_id).scores
    return None if score is None else {"min": score.min, "max": score.max, "threshold": score.threshold}
