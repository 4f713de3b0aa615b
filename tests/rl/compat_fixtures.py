"""Builders of the agents of the compatibility matrix (``tests/rl/test_compat_matrix.py``, documented in
``docs/compatibility.md``): each convention of SB3 agents "from the wild" is reproduced by a tiny agent
trained for a few hundred steps here and saved as its authors' tools save it.

* :func:`build_zoo_time_feature`: an RL-zoo folder with ``TimeFeatureWrapper`` + ``VecNormalize`` and an
  old env id (``Pendulum-v0``, run as ``Pendulum-v1``): ``tests/rl/test_zoo_folders.py``'s builder.
* :func:`build_device_kwargs`: a zip whose ``policy_kwargs`` hold ``device: torch.device('cpu')``
  (pickled, as the zoo's SAC agents have it): ``tests/rl/test_wild_agents.py``'s rewriter.
* :func:`build_zoo_atari`: an RL-zoo folder of a pixel agent: ``AtariWrapper`` and ``frame_stack: 4`` on
  ``ALE/Breakout-v5`` (``--env-kwargs frameskip:1``), a DQN with a tiny NatureCNN.
* :func:`build_sb3_1x`: a zip as SB3 1.x saved it: a freshly saved 2.x zip whose entries are rewritten
  (:func:`to_sb3_1x`), weights kept.
* :func:`shared_zoo_agent`: the real RL-zoo agents saved with SB3 1.0 in the shared data folder.

Each builder returns an :class:`Agent`: what a user passes to ``load_pretrained``, and the reference: the
plain agent as SB3 itself loads it, in the env rl_zoo3 makes for it (its wrappers, SB3's own
``VecNormalize`` with the saved statistics, its frame stack).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import pickle
import pickletools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import torch

from equirl.rl.algos import get_algo
from tests.rl.test_wild_agents import _with_policy_kwargs
from tests.rl.test_zoo_folders import NEW_ID, OLD_ID, _build_folder, _make_env, _zoo_yaml

ATARI_WRAPPER = "stable_baselines3.common.atari_wrappers.AtariWrapper"
ATARI_ID = "ALE/Breakout-v5"
#: rl_zoo3's ``--env-kwargs frameskip:1``: the ALE v5 env's own frame skip off, AtariWrapper's 4 instead
ATARI_ENV_KWARGS = {"frameskip": 1}


@dataclass(frozen=True)
class Agent:
    """An agent of the matrix.

    :param path: what ``load_pretrained`` is given (a zip, an RL-zoo folder or ``hf://ORG/REPO``).
    :param env_id: the env id a user passes (the current one).
    :param algo: the algorithm the zip was saved with (``load_pretrained`` reads it from the zip).
    :param reference: the plain agent, loaded by SB3 itself (as rl_zoo3's ``enjoy`` would).
    :param reference_env: ``seed -> VecEnv``: the env rl_zoo3 makes for it (SB3's own wrappers and
        normalisation), seeded.
    """

    path: Path | str
    env_id: str
    algo: str
    reference: Callable[[], Any]
    reference_env: Callable[[int], Any]


def _plain_env(env_id: str) -> Callable[[int], Any]:
    def make(seed: int) -> Any:
        from stable_baselines3.common.env_util import make_vec_env

        vec = make_vec_env(env_id, n_envs=1, seed=seed)
        vec.seed(seed)
        return vec

    return make


# -- 1. the RL-zoo folder of tests/rl/test_zoo_folders.py ------------------------------------------------


def build_zoo_time_feature(root: Path) -> Agent:
    """``ppo/Pendulum-v0_1/``: PPO on ``TimeFeatureWrapper(Pendulum)`` with ``VecNormalize(norm_obs)``."""
    from stable_baselines3 import PPO

    folder = _build_folder(root, 0)
    stats = folder / OLD_ID / "vecnormalize.pkl"

    def env(seed: int) -> Any:
        vec = _make_env(0, stats=stats)  # SB3's VecNormalize.load of the saved statistics
        vec.seed(seed)
        return vec

    return Agent(folder, NEW_ID, "ppo", lambda: PPO.load(folder / f"{OLD_ID}.zip", device="cpu"), env)


# -- 2. a torch.device in policy_kwargs -----------------------------------------------------------------


def _train_pendulum(algo: str, steps: int = 300) -> Any:
    from stable_baselines3.common.env_util import make_vec_env

    cls = get_algo(algo).cls
    vec = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = cls(
        "MlpPolicy",
        vec,
        learning_starts=100,
        buffer_size=1000,
        batch_size=32,
        seed=0,
        policy_kwargs={"net_arch": [16]},
    )
    return model.learn(steps)


def build_device_kwargs(root: Path, algo: str) -> Agent:
    """A SAC / TD3 zip whose ``policy_kwargs`` hold ``torch.device('cpu')`` (cloudpickled, as SB3 stores a
    mapping holding objects)."""
    root.mkdir(parents=True, exist_ok=True)
    _train_pendulum(algo).save(root / "plain.zip")
    path = _with_policy_kwargs(
        root / "plain.zip", root / f"{algo}-device.zip", {"device": torch.device("cpu")}
    )
    cls = get_algo(algo).cls
    return Agent(path, "Pendulum-v1", algo, lambda: cls.load(path, device="cpu"), _plain_env("Pendulum-v1"))


# -- 3. a frame-stacked pixel agent in an RL-zoo folder ----------------------------------------------------


def _atari_env(seed: int, env_id: str = ATARI_ID, env_kwargs: dict[str, Any] | None = None) -> Any:
    """What rl_zoo3 makes for the folder: ``make(env_id, **env_kwargs)`` -> Monitor -> AtariWrapper ->
    VecEnv -> VecFrameStack(4) (``ALE/Breakout-v5`` with ``frameskip=1``, or the zoo's own
    ``BreakoutNoFrameskip-v4`` as it is)."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    vec = make_vec_env(env_id, n_envs=1, seed=seed, wrapper_class=AtariWrapper, env_kwargs=env_kwargs)
    vec = VecFrameStack(vec, 4)
    vec.seed(seed)
    return vec


#: the RL zoo's own Atari ids (``{Game}NoFrameskip-v4``; its published Atari agents all use them)
ATARI_V4_ID = "BreakoutNoFrameskip-v4"


def build_zoo_atari(root: Path, env_id: str = ATARI_ID, algo: str = "dqn") -> Agent:
    """``{algo}/ALE-Breakout-v5_1/`` (or ``{algo}/BreakoutNoFrameskip-v4_1/``): a DQN / QR-DQN (300 steps)
    or PPO (128 steps) ``CnnPolicy`` (NatureCNN with 16 features) trained in the zoo's Atari setting,
    saved in the zoo's layout."""
    cls = get_algo(algo).cls
    env_kwargs = ATARI_ENV_KWARGS if env_id.startswith("ALE/") else None
    name = env_id.replace("/", "-")  # rl_zoo3 writes "/" as "-" in paths
    make = functools.partial(_atari_env, env_id=env_id, env_kwargs=env_kwargs)
    features = {"features_extractor_kwargs": {"features_dim": 16}}
    if get_algo(algo).family == "q":
        hyper: dict[str, Any] = {
            "buffer_size": 500,
            "learning_starts": 100,
            "train_freq": 4,
            "batch_size": 16,
        }
        model = cls("CnnPolicy", make(0), seed=0, policy_kwargs=features | {"net_arch": []}, **hyper)
        model.learn(300)
        kwargs_text = "dict(features_extractor_kwargs=dict(features_dim=16), net_arch=[])"
    else:
        hyper = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
        model = cls("CnnPolicy", make(0), seed=0, policy_kwargs=features, **hyper)
        model.learn(128)
        kwargs_text = "dict(features_extractor_kwargs=dict(features_dim=16))"
    folder = root / algo / f"{name}_1"
    sub = folder / name
    sub.mkdir(parents=True)
    model.save(folder / f"{name}.zip")
    config = {
        **hyper,
        "env_wrapper": [ATARI_WRAPPER],
        "frame_stack": 4,
        "n_timesteps": 300 if get_algo(algo).family == "q" else 128,
        "policy": "CnnPolicy",
        "policy_kwargs": kwargs_text,
    }
    (sub / "config.yml").write_text(_zoo_yaml(config))
    args = {"algo": algo, "env": env_id, "seed": 0} | ({"env_kwargs": env_kwargs} if env_kwargs else {})
    (sub / "args.yml").write_text(_zoo_yaml(args))
    path = folder / f"{name}.zip"
    return Agent(folder, env_id, algo, lambda: cls.load(path, device="cpu"), make)


# -- 5. the Hugging Face hub cache ----------------------------------------------------------------------

#: the organisation of the matrix's hub agents (a seeded cache: no network)
HUB_ORG = "equirl-test"


def build_hub(root: Path, algo: str, cache: Path) -> Agent:
    """An agent of the zoo rows pushed to the hub as rl_zoo3's ``push_to_hub`` lays it out (the model as
    ``{algo}-{env}.zip``, the ``{env}/`` files at the top, ``vec_normalize.pkl``), in the hub cache
    ``cache``, named ``hf://equirl-test/{algo}-{env}``: DQN, the frame-stacked Atari folder on the zoo's
    own id with its zip in SB3 1.x's form (as the hub's ``sb3/dqn-BreakoutNoFrameskip-v4`` was saved);
    PPO, the time feature + ``VecNormalize`` folder of an old env id."""
    import warnings

    from tests.rl.hub_cache import hub_files_of_zoo_folder, seed_hub_cache

    local = build_zoo_atari(root, ATARI_V4_ID) if algo == "dqn" else build_zoo_time_feature(root)
    name = ATARI_V4_ID if algo == "dqn" else OLD_ID
    reference = local.reference
    if algo == "dqn":
        zpath = Path(local.path) / f"{name}.zip"
        new = zpath.rename(root / "saved-by-2x.zip")
        to_sb3_1x(new, zpath, algo, SB3_1X_VERSIONS[algo])

        def reference() -> Any:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SB3 < 2.4's DQN optimizer state
                from stable_baselines3.common.vec_env import VecTransposeImage

                # the space SB3 saved: channel-first, as it wraps a channel-last env in VecTransposeImage
                custom = sb3_1x_custom_objects(algo, VecTransposeImage(local.reference_env(0)))
                return get_algo(algo).cls.load(zpath, device="cpu", custom_objects=custom)

    repo = f"{HUB_ORG}/{algo}-{name}"
    seed_hub_cache(cache, repo, hub_files_of_zoo_folder(Path(local.path), algo, name))
    return Agent(f"hf://{repo}", local.env_id, algo, reference, local.reference_env)


# -- 4. SB3 1.x zips ------------------------------------------------------------------------------------

#: module paths as SB3 1.x zips pickle them: gym's spaces, numpy 1.x's ``numpy.core``
OLD_MODULES = (("gymnasium.spaces.", "gym.spaces."), ("numpy._core.", "numpy.core."))
_TEXT_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8")


def _renamed(text: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if text.startswith(old):
            return new + text[len(old) :]
    return text


def rename_modules(blob: bytes, renames: tuple[tuple[str, str], ...] = OLD_MODULES) -> bytes:
    """The pickle ``blob`` with the module paths it names renamed (``gymnasium.spaces.box`` ->
    ``gym.spaces.box``...): its opcodes are copied, the strings that name a module re-encoded, and the
    (optional) protocol-4 frames dropped, since their lengths change."""
    ops = list(pickletools.genops(blob))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        assert pos is not None
        end = ops[i + 1][2] if i + 1 < len(ops) else len(blob)
        assert end is not None
        if op.name == "FRAME":
            continue
        if op.name in _TEXT_OPS and isinstance(arg, str) and _renamed(arg, renames) != arg:
            raw = _renamed(arg, renames).encode()
            out += (
                b"\x8c" + bytes([len(raw)]) if len(raw) < 256 else b"X" + len(raw).to_bytes(4, "little")
            ) + raw
            continue
        if op.name == "GLOBAL" and isinstance(arg, str):
            module, name = arg.split(" ", 1)
            out += b"c" + f"{_renamed(module, renames)}\n{name}\n".encode()
            continue
        out += blob[pos:end]
    return bytes(out)


def old_pickle(obj: Any) -> str:
    """``obj`` as SB3 1.x stored a ``data`` entry: cloudpickle protocol 4 (Python 3.6 - 3.8), the module
    paths of gym 0.21 / numpy 1.x, base64."""
    return base64.b64encode(rename_modules(cloudpickle.dumps(obj, protocol=4))).decode()


def constant_fn(val: float) -> Callable[[float], float]:
    """SB3 1.x's ``constant_fn``: a closure, which cloudpickle stores by value (its code object)."""

    def func(_: float) -> float:
        return val

    return func


def get_linear_fn(start: float, end: float, end_fraction: float) -> Callable[[float], float]:
    """SB3 1.x's ``get_linear_fn`` (DQN's exploration schedule), a closure as well."""

    def func(progress_remaining: float) -> float:
        if (1 - progress_remaining) > end_fraction:
            return end
        return start + (1 - progress_remaining) * (end - start) / end_fraction

    return func


def _function_entry(fn: Callable[[float], float]) -> dict[str, Any]:
    return {":type:": "<class 'function'>", ":serialized:": old_pickle(fn)}


def _space_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A gymnasium space entry as gym 0.21 / SB3 1.x stored it: the class ``gym.spaces.*``, its fields
    (``shape``, not ``_shape``) in the JSON beside the pickle and in the pickle."""
    space = cloudpickle.loads(base64.b64decode(entry[":serialized:"]))  # our own file
    kind = type(space).__name__
    old = object.__new__(type(space))  # pickled by its class path, renamed to gym.spaces below
    if kind == "Box":
        fields = {
            "dtype": space.dtype,
            "shape": tuple(space.shape),
            "low": space.low,
            "high": space.high,
            "bounded_below": space.bounded_below,
            "bounded_above": space.bounded_above,
            "_np_random": None,
        }
        shown = {
            k: str(v) for k, v in fields.items() if k in ("low", "high", "bounded_below", "bounded_above")
        }
        text = {"dtype": str(space.dtype), "shape": list(space.shape), **shown, "_np_random": None}
    elif kind == "Discrete":
        fields = {
            "n": int(space.n),
            "shape": (),
            "dtype": space.dtype,
            "_np_random": np.random.RandomState(0),
        }
        text = {
            "n": int(space.n),
            "shape": [],
            "dtype": str(space.dtype),
            "_np_random": "RandomState(MT19937)",
        }
    else:  # pragma: no cover - the matrix has Box and Discrete spaces only
        raise AssertionError(kind)
    old.__dict__.update(fields)
    return {":type:": f"<class 'gym.spaces.{kind.lower()}.{kind}'>", ":serialized:": old_pickle(old), **text}


def _repickled(entry: dict[str, Any], change: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    value = cloudpickle.loads(base64.b64decode(entry[":serialized:"]))  # our own file
    if change is not None:
        value = change(value)
    meta = {k: v for k, v in entry.items() if k not in (":serialized:", "__annotations__", "_abc_impl")}
    return {**meta, ":serialized:": old_pickle(value)}


def _old_net_arch(pk: dict[str, Any]) -> dict[str, Any]:
    """SB3 < 1.8's on-policy ``net_arch``: ``[dict(pi=..., vf=...)]``."""
    arch = pk.get("net_arch")
    return {**pk, "net_arch": [arch]} if isinstance(arch, dict) else pk


#: keys SB3 2.x writes that 1.x zips lack
_NEW_KEYS = (
    "_num_timesteps_at_start",
    "_stats_window_size",
    "replay_buffer_class",
    "replay_buffer_kwargs",
    "rollout_buffer_class",
    "rollout_buffer_kwargs",
    "batch_norm_stats",
    "batch_norm_stats_target",
    "_n_calls",
)
#: off-policy n-step returns (SB3 2.x); on-policy ``n_steps`` is the rollout length, in 1.x as well
_NEW_OFF_POLICY_KEYS = ("n_steps",)

#: ``system_info.txt`` of an SB3 1.x zip (1.2 and later; 1.0 wrote none)
SYSTEM_INFO_1X = (
    "- OS: Linux-5.15.0-1019-gcp-x86_64-with-glibc2.31 # 22~20.04.1-Ubuntu SMP\n"
    "- Python: 3.8.10\n"
    "- Stable-Baselines3: {version}\n"
    "- PyTorch: 1.12.1+cu113\n"
    "- GPU Enabled: False\n"
    "- Numpy: 1.23.4\n"
    "- Gym: 0.21.0\n"
)


def to_sb3_1x(src: Path, dst: Path, algo: str, version: str) -> Path:
    """Rewrite a zip saved by SB3 2.x into the form SB3 ``version`` (1.x) saved, keeping its weights:

    * the spaces are ``gym.spaces`` classes (gym 0.21), with ``shape`` instead of ``_shape``;
    * every pickled entry is cloudpickle protocol 4 naming ``numpy.core`` (numpy 1.x);
    * the schedules (``lr_schedule``; PPO's ``clip_range``; DQN's ``exploration_schedule``; off-policy
      ``learning_rate``) are closures pickled by value (their code objects), as 1.x's ``constant_fn`` /
      ``get_linear_fn``;
    * the keys 2.x added are gone (:data:`_NEW_KEYS`); on-policy ``net_arch`` is ``[dict(pi=..., vf=...)]``;
    * SB3 1.0 (``version`` ``"1.0"``): ``_last_dones`` instead of ``_last_episode_starts``, off-policy
      ``remove_time_limit_termination``, SAC's ``target_entropy`` a pickled ``numpy.float32``, no
      ``system_info.txt``; later 1.x: a 1.x ``system_info.txt`` (``Gym: 0.21.0``);
    * DQN: the optimizer state holds the target network's parameters too (SB3 < 2.4);
    * ``_stable_baselines3_version`` says ``version``.
    """
    one_zero = version.startswith("1.0")
    with zipfile.ZipFile(src) as z:
        files = {name: z.read(name) for name in z.namelist()}
    data = json.loads(files["data"])
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _NEW_KEYS or (algo not in ("ppo", "a2c") and key in _NEW_OFF_POLICY_KEYS):
            continue
        if key in ("observation_space", "action_space"):
            value = _space_entry(value)
        elif key == "lr_schedule":
            value = _function_entry(constant_fn(float(data["learning_rate"])))
        elif key == "learning_rate" and algo in ("dqn", "sac", "td3"):
            value = _function_entry(constant_fn(float(value)))
        elif key == "clip_range":
            value = _function_entry(constant_fn(0.2))
        elif key == "exploration_schedule":
            value = _function_entry(
                get_linear_fn(
                    data["exploration_initial_eps"],
                    data["exploration_final_eps"],
                    data["exploration_fraction"],
                )
            )
        elif key == "target_entropy" and one_zero:
            value = {":type:": "<class 'numpy.float32'>", ":serialized:": old_pickle(np.float32(value))}
        elif key == "policy_kwargs" and algo in ("ppo", "a2c"):
            if isinstance(value, dict) and ":serialized:" in value:
                value = _repickled(value, _old_net_arch)
            else:
                value = _old_net_arch(value)
        elif key == "start_time":
            value = value / 1e9 if value > 1e12 else value
        elif isinstance(value, dict) and ":serialized:" in value:
            value = _repickled(value)
        if key == "_last_episode_starts" and one_zero:
            key = "_last_dones"
        out[key] = value
    if one_zero and algo in ("dqn", "sac", "td3"):
        out["remove_time_limit_termination"] = False
    files["data"] = json.dumps(out, indent=4).encode()
    files["_stable_baselines3_version"] = version.encode()
    files.pop("system_info.txt", None)
    if not one_zero:
        files["system_info.txt"] = SYSTEM_INFO_1X.format(version=version).encode()
    if algo == "dqn":  # SB3 < 2.4: Adam over q_net and q_net_target
        state = torch.load(io.BytesIO(files["policy.optimizer.pth"]), weights_only=True)  # our own file
        group = state["param_groups"][0]
        group["params"] = list(range(2 * len(group["params"])))
        buf = io.BytesIO()
        torch.save(state, buf)
        files["policy.optimizer.pth"] = buf.getvalue()
    order = ["data", *[n for n in files if n not in ("data", "_stable_baselines3_version")]]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for name in [*order, "_stable_baselines3_version"]:
            z.writestr(name, files[name])
    return dst


#: the 1.x flavour of each algorithm's zip: SB3 1.0 (the zoo's trained agents) or a later 1.x
SB3_1X_VERSIONS = {"dqn": "1.0", "sac": "1.0", "ppo": "1.6.2", "a2c": "1.6.2"}
SB3_1X_ENVS = {"dqn": "CartPole-v1", "ppo": "CartPole-v1", "a2c": "CartPole-v1", "sac": "Pendulum-v1"}


def _train_1x(algo: str) -> Any:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    vec = make_vec_env(SB3_1X_ENVS[algo], n_envs=1, seed=0)
    cls = get_algo(algo).cls
    if algo == "sac":
        return _train_pendulum("sac")
    if algo == "dqn":
        kw: dict[str, Any] = {"learning_starts": 100, "buffer_size": 1000, "train_freq": 4, "batch_size": 32}
        kw["policy_kwargs"] = {"net_arch": [16]}
        steps = 300
    elif algo == "ppo":
        kw = {
            "n_steps": 64,
            "batch_size": 32,
            "n_epochs": 1,
            "policy_kwargs": {"net_arch": {"pi": [16], "vf": [16]}},
        }
        steps = 128
    else:  # the zoo's A2C: RMSpropTFLike in policy_kwargs (pickled: it holds a class)
        kw = {
            "n_steps": 8,
            "policy_kwargs": {
                "net_arch": {"pi": [16], "vf": [16]},
                "optimizer_class": RMSpropTFLike,
                "optimizer_kwargs": {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0},
            },
        }
        steps = 128
    return cls("MlpPolicy", vec, seed=0, **kw).learn(steps)


def sb3_1x_custom_objects(algo: str, env: Any) -> dict[str, Any]:
    """What rl_zoo3's ``enjoy`` passes to load an old zip (its schedules replaced), and the env's spaces
    (gym is not installed: the zip's ``gym.spaces`` cannot be unpickled)."""
    custom: dict[str, Any] = {
        "learning_rate": 0.0,
        "lr_schedule": lambda _: 0.0,
        "clip_range": lambda _: 0.0,
        "observation_space": env.observation_space,
        "action_space": env.action_space,
    }
    if algo == "dqn":
        custom["exploration_schedule"] = lambda _: 0.0
    return custom


def build_sb3_1x(root: Path, algo: str) -> Agent:
    """A tiny agent of ``algo`` saved by SB3 2.x, rewritten as SB3 1.x saved it (:func:`to_sb3_1x`)."""
    import warnings

    root.mkdir(parents=True, exist_ok=True)
    env_id = SB3_1X_ENVS[algo]
    _train_1x(algo).save(root / "new.zip")
    path = to_sb3_1x(root / "new.zip", root / f"{algo}-sb3-1x.zip", algo, SB3_1X_VERSIONS[algo])
    cls, env = get_algo(algo).cls, _plain_env(env_id)

    def reference() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SB3 < 2.4's DQN optimizer state
            return cls.load(path, device="cpu", custom_objects=sb3_1x_custom_objects(algo, env(0)))

    return Agent(path, env_id, algo, reference, env)


# -- 6. the real RL-zoo agents saved with SB3 1.0 ------------------------------------------------------------

#: the shared folder's SB3 1.0 agents the matrix loads: algo -> (folder, env id)
SHARED_AGENTS = {"dqn": ("dqn/CartPole-v1_1", "CartPole-v1"), "ppo": ("ppo/Acrobot-v1_1", "Acrobot-v1")}


class _Fields:
    """A stand-in for the gym 0.21 objects of an old ``vecnormalize.pkl`` (it keeps their fields)."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


class _OldPickle(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("gym."):
            return _Fields
        return super().find_class(module, name)


def _old_vecnormalize(path: Path, venv: Any) -> Any:
    """SB3's own ``VecNormalize`` with the running statistics of an SB3 1.0 ``vecnormalize.pkl`` (unpickled
    trusted: the shared file; its gym spaces as plain fields, gym is not installed)."""
    from stable_baselines3.common.vec_env import VecNormalize

    with path.open("rb") as f:
        old = _OldPickle(f).load()
    vec = VecNormalize(venv, training=False, norm_obs=True, norm_reward=False, clip_obs=old.clip_obs)
    vec.obs_rms, vec.epsilon = old.obs_rms, old.epsilon
    return vec


def shared_zoo_agent(shared: Path, algo: str) -> Agent:
    """The shared folder's real SB3 1.0 agent of ``algo`` (see :data:`SHARED_AGENTS`)."""
    import warnings

    rel, env_id = SHARED_AGENTS[algo]
    folder = shared / "rl-zoo" / rel
    cls, plain = get_algo(algo).cls, _plain_env(env_id)
    stats = folder / env_id / "vecnormalize.pkl"

    def env(seed: int) -> Any:
        vec = plain(seed)
        return _old_vecnormalize(stats, vec) if stats.is_file() else vec

    def reference() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.load(
                folder / f"{env_id}.zip", device="cpu", custom_objects=sb3_1x_custom_objects(algo, plain(0))
            )

    return Agent(folder, env_id, algo, reference, env)
