"""Building SB3 models: a fresh one from a run config (:func:`build_model`), or one wrapped around a
pretrained agent (:func:`load_pretrained`).

:func:`load_pretrained` reads a plain agent's zip (ours, an RL-zoo folder, a Hugging Face hub agent, SB3
1.x zips with old ``gym`` spaces) without unpickling code, makes the env it ran in, builds the same
algorithm (:data:`equirl.rl.algos.ALGOS`) with an equivariant policy (:mod:`equirl.rl.policies`) around
the same networks, and copies the weights: *strictly* for equitune / equizero / base (the parameter
names are SB3's), allowing only the new λ-net / scorer parameters to be missing for the methods that add
them. The result is a regular SB3 model: ``predict``, ``learn`` (finetuning), ``save``.
:func:`build_model` is what a run (:mod:`equirl.rl.train`) trains: a fresh model of the config's
algorithm and method, or :func:`load_pretrained` of its ``init_from``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from equirl.config import FieldError
from equirl.errors import CheckpointError, EquirlError, SymmetryError, first_cause
from equirl.registry import (
    BASE,
    EQUITUNE,
    MIRROR_LOSS,
    canonical_method,
    get_method,
    method_names,
    validate_method_kwargs,
)
from equirl.rl.algos import ALGOS, AlgoSpec, feature_extractor, get_algo
from equirl.rl.config import RLConfig, TD3HyperParams, check_buffer_memory
from equirl.rl.envs import current_env_id, make_env, make_vec_env
from equirl.rl.safe_load import check_tensor_files, safe_custom_objects
from equirl.rl.spec import EnvSymmetry, load_spec
from equirl.rl.zipinfo import check_agent_zip, inspect_agent_zip
from equirl.rl.zoo import find_agent_zip, open_agent, remember_env
from equirl.utils.io import printable

__all__ = [
    "attach_training_hooks",
    "build_model",
    "load_plain",
    "load_pretrained",
    "make_train_env",
    "policy_alias",
    "policy_net_kwargs",
    "sb3_algo_kwargs",
    "spec_of_agent",
]

log = logging.getLogger(__name__)

#: the methods actor-critic agents load with (the learned canonicalizers are DQN-only)
AC_METHODS_LOADABLE = method_names(learned_scorer=False)


def _model_observation_space(space: Any) -> Any:
    """The observation space an SB3 model of an env with ``space`` has: channel-last images are seen
    channel-first (SB3 wraps such envs in ``VecTransposeImage`` and saves the transposed space)."""
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    if is_image_space(space) and not is_image_space_channels_first(space):
        return VecTransposeImage.transpose_space(space)
    return space


@dataclass(frozen=True)
class _Algo:
    """What building a model reads of an algorithm (:data:`equirl.rl.algos.ALGOS`), read from the table in
    one go (:func:`_algo`) and handed down."""

    spec: AlgoSpec
    name: str
    cls: Any
    on_policy: bool
    value_based: bool


def _algo(name: str) -> _Algo:
    """The :class:`_Algo` of ``name``; one line listing the algorithms for an unknown one."""
    spec = get_algo(name)
    return _Algo(spec, spec.name, spec.cls, spec.on_policy, spec.value_based)


def _overrides(algo: str | _Algo, env: Any) -> dict[str, Any]:
    """``custom_objects`` every algorithm gets: the env's spaces (as the model sees them), constant
    schedules (old zips pickle schedules as functions), no replay buffer (nor its memory option)."""
    info = algo if isinstance(algo, _Algo) else _algo(algo)
    algo = info.name
    custom: dict[str, Any] = {
        "observation_space": _model_observation_space(env.observation_space),
        "action_space": env.action_space,
        "lr_schedule": _constant(1e-4),
        "learning_rate": 1e-4,
    }
    if info.on_policy:
        custom["clip_range"] = _constant(0.2)
        custom["clip_range_vf"] = None
    else:
        custom["buffer_size"] = 1
        # SB3 1.x zips (the zoo's Atari DQN / QR-DQN) saved optimize_memory_usage=True, which SB3 2 refuses
        # together with its default handle_timeout_termination; the buffer is not loaded anyway
        custom["optimize_memory_usage"] = False
    if algo == "dqn" or algo == "qrdqn":
        custom["exploration_schedule"] = _constant(0.0)
    return custom


def _constant(value: float) -> Any:
    from stable_baselines3.common.utils import ConstantSchedule

    return ConstantSchedule(value)


def load_plain(
    path: str | Path,
    env: Any,
    algo: str = "dqn",
    device: str = "cpu",
    which: str = "best",
    trust_checkpoint: bool = False,
    symmetry: Any = None,
) -> Any:
    """Load an agent zip for its weights, overriding spaces and schedules (SB3 1.x / old-gym zips too).

    Nothing in the zip is unpickled unless ``trust_checkpoint``: see :mod:`equirl.rl.safe_load`.

    :param path: zip, equirl run directory or RL-zoo folder (see :func:`equirl.rl.zoo.find_agent_zip`).
    :param env: a VecEnv (its spaces replace the saved ones, after a shape check).
    :param algo: an algorithm of :data:`equirl.rl.algos.ALGOS`.
    :param which: in a folder, ``"best"`` (``best_model.zip`` when present) or ``"final"``.
    :param trust_checkpoint: let SB3 unpickle the zip's ``data`` entries (runs any code they hold).
    :param symmetry: replaces a saved ``policy_kwargs["symmetry"]`` (an equivariant agent's).
    :raises CheckpointError: missing / corrupt file, or an entry that would need unpickling (one line).
    """
    info = _algo(algo)
    env_id = _env_id(env)
    return _load_plain(
        find_agent_zip(path, env_id, which=which), env, info, env_id, device, trust_checkpoint, symmetry
    )


def _load_plain(
    zpath: Path, env: Any, info: _Algo, env_id: str | None, device: str, trust_checkpoint: bool, symmetry: Any
) -> Any:
    """:func:`load_plain` of the zip ``zpath`` (found), as ``info``'s algorithm."""
    custom = _overrides(info, env)
    # unreadable / corrupt / the other algorithm / another observation size: one line naming the cause
    check_agent_zip(zpath, info.name, env.observation_space, env_id)
    if trust_checkpoint:
        log.warning("loading %s with --trust-checkpoint: its pickled entries are unpickled", zpath)
    else:
        check_tensor_files(zpath)
        custom = safe_custom_objects(zpath, info.cls, custom, symmetry=symmetry)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SB3 < 2.4 optimizer-state notice
            model = info.cls.load(zpath, device=device, custom_objects=custom)
    except EquirlError:
        raise
    except KeyError as exc:  # SB3 restores each module its data names, from "{name}.pth"
        what = exc.args[0] if exc.args else "?"
        raise CheckpointError(
            f"cannot load {info.name} checkpoint {zpath}: it has no {printable(what, 60)}.pth entry (SB3 restores "
            "every module the zip's data lists; the zip is incomplete)"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"cannot load {info.name} checkpoint {zpath}: {first_cause(exc)}") from None
    return model


def _env_id(env: Any) -> str | None:
    try:
        spec = env.envs[0].spec if hasattr(env, "envs") else getattr(env, "spec", None)
        return spec.id if spec is not None else None
    except Exception:  # pragma: no cover
        return None


def load_pretrained(
    path: str | Path,
    env: Any,
    method: str = EQUITUNE,
    algo: str | None = None,
    symmetry: Any = None,
    method_kwargs: dict[str, Any] | None = None,
    freeze_backbone: bool | None = None,
    device: str = "cpu",
    seed: int | None = None,
    which: str = "best",
    trust_checkpoint: bool = False,
    n_envs: int = 1,
    **algo_kwargs: Any,
) -> Any:
    """Wrap a plain pretrained agent into an equivariant one.

    Actor-critic agents (PPO, A2C, SAC, TD3, DDPG, TQC) get the policies of
    :mod:`equirl.rl.ac_policies` around the same networks. Agents trained with gSDE (``use_sde``) load
    as they are for ``base``, and for the symmetrizing methods sample the diagonal Gaussian of the
    symmetrized mean and gSDE variance (see :mod:`equirl.rl.ac_policies`). When the agent's
    folder holds ``VecNormalize`` statistics (an RL-zoo run's ``{env}/vecnormalize.pkl``), they are read
    as plain data (:func:`equirl.rl.safe_load.read_vecnormalize`) and the model's env normalises with
    them: as saved for ``base``, group-symmetrized (:class:`~equirl.rl.normalize.SymmetricVecNormalize`)
    for the symmetrizing methods, so that *normalise → policy* is equivariant. :func:`evaluate` applies
    the model's normalisation to its evaluation env.

    An RL-zoo folder runs as its authors ran it (:mod:`equirl.rl.zoo`): given an env id, the env is made
    with the folder's ``env_kwargs`` and allowlisted ``env_wrapper`` (others need ``trust_checkpoint``),
    then normalised, then frame-stacked, as rl_zoo3 does; the spec is extended to the time feature
    (invariant) and the stacked frames (acted on one by one), and :func:`evaluate` makes the same env. An
    agent trained on an older env id (``Swimmer-v3``) runs on the current one (``Swimmer-v5``, see
    :data:`equirl.rl.envs.LEGACY_ENV_IDS`) with one warning; a folder whose ``config.yml`` says
    ``normalize`` but holds no statistics is refused. A VecEnv passed as ``env`` is used as given (the
    normalisation is added on top).

    :param path: the agent: a zip, an equirl run directory or an RL-zoo folder.
    :param env: env id or VecEnv.
    :param method: ``base``, ``equitune``, ``equizero``, ``lambda``, ``canonicalize`` or ``multigroup``
        (the last three add weights: a λ-net / scorer, fresh unless the agent was saved with that method;
        canonicalize / multigroup: DQN / QR-DQN only).
    :param algo: an algorithm of :data:`equirl.rl.algos.ALGOS` (``dqn``, ``qrdqn``, ``ppo``, ``a2c``, ``sac``, ``td3``, ``ddpg``,
        ``tqc``; ``None``: the one the zip was saved with, :func:`equirl.rl.zipinfo.read_algo`).
    :param symmetry: spec (default: the env id's packaged spec).
    :param method_kwargs: symmetrizer options.
    :param freeze_backbone: train only the λ-net (default: ``True`` for λ, else ``False``).
    :param which: in a folder, ``"best"`` (``best_model.zip`` when present) or ``"final"``.
    :param trust_checkpoint: let SB3 unpickle the zip's pickled ``data`` entries, which can run code
        (default: they are read as plain data only, see :mod:`equirl.rl.safe_load`); the same for the
        normalisation statistics.
    :param n_envs: copies of the env made from an env id (finetuning PPO / A2C on several).
    :param algo_kwargs: hyperparameters of the new algorithm (for finetuning), e.g. ``learning_rate``.
    :returns: an SB3 model of ``algo`` with an equivariant policy and the pretrained weights.
    """
    get_method(method)  # one-line error listing the methods
    info = _algo(algo) if algo is not None else None  # one-line error for an unknown algo
    return _load_pretrained(
        path,
        env,
        method,
        info,
        symmetry,
        method_kwargs,
        freeze_backbone,
        device,
        seed,
        which,
        trust_checkpoint,
        n_envs,
        algo_kwargs,
    )


def _load_pretrained(
    path: str | Path,
    env: Any,
    method: str,
    info: _Algo | None,
    symmetry: Any,
    method_kwargs: dict[str, Any] | None,
    freeze_backbone: bool | None,
    device: str,
    seed: int | None,
    which: str,
    trust_checkpoint: bool,
    n_envs: int,
    algo_kwargs: dict[str, Any],
) -> Any:
    """:func:`load_pretrained`, the algorithm read already (``None``: the one the zip was saved with).

    The agent is read in one go (:func:`equirl.rl.zoo.open_agent`: its folder, the env it ran in, the
    spec extended to its wrappers, its zip), then its zip is checked, then the env made, then the models
    built: each module visited once where the order allows.
    """
    spec = get_method(method)
    method = spec.name
    method_kwargs = validate_method_kwargs(method, method_kwargs, adapter="rl")
    named = isinstance(env, str)
    env_id = current_env_id(env) if named else _env_id(env)
    if symmetry is None and env_id is None:
        raise EquirlError("pass symmetry=...: the env has no id to look its symmetry spec up")
    # unknown env: one line first (a spec read already is taken as it is; an agent equirl saved carries its own)
    base_sym = (
        symmetry
        if isinstance(symmetry, EnvSymmetry)
        else load_spec(symmetry)
        if symmetry is not None
        else spec_of_agent(str(env_id), path)
    )
    # the agent's folder, the (current) env id, the env as the zoo run made it (env wrappers -> VecEnv ->
    # normalisation -> frame stack), the spec extended to it, the zip
    agent = open_agent(
        path, env if named else None, env_id, base_sym, which=which, trust_checkpoint=trust_checkpoint
    )
    env_id, recipe, sym = agent.env_id, agent.recipe, agent.sym
    # a missing or corrupt zip is the real cause of a failure: named before its statistics are read
    inspect_agent_zip(agent.zip)
    stats = agent.folder.statistics(agent.zip)  # refuses a normalised agent without its statistics
    vec = recipe.make_base(n_envs=n_envs, seed=seed or 0) if named else env
    if stats is not None:
        from equirl.rl.normalize import load_vecnormalize

        vec = load_vecnormalize(
            stats,
            vec,
            symmetry=agent.norm_sym if spec.symmetrizes else None,
            trust_checkpoint=trust_checkpoint,
        )
        log.info("normalising observations with %s%s", stats, " (symmetrized)" if spec.symmetrizes else "")
    if named and recipe.frame_stack:
        vec = recipe.stack(vec)
    if info is None:  # the algorithm the zip was saved with
        from equirl.rl.zipinfo import read_algo

        info = _algo(read_algo(path, None, env_id, which))
    vec_id = _env_id(vec)
    zpath = agent.zip if vec_id == env_id else find_agent_zip(path, vec_id, which=which)
    plain = _load_plain(zpath, vec, info, vec_id, device, trust_checkpoint, sym)
    req = _WrapRequest(
        plain,
        path,
        vec,
        sym,
        spec,
        info.name,
        method_kwargs,
        freeze_backbone,
        device,
        seed,
        algo_kwargs,
        info,
    )
    model = _wrap_q(req) if info.value_based else _wrap_actor_critic(req)
    if named:  # evaluate(model, env_id) makes the same env (a given VecEnv is the caller's)
        remember_env(model, recipe)
    return model


@dataclass
class _WrapRequest:
    """What :func:`load_pretrained` hands :func:`_wrap_q` / :func:`_wrap_actor_critic`: the plain agent
    (loaded from ``path``), the env, the symmetry spec, the method's spec and the load options."""

    plain: Any
    path: Any
    vec: Any
    sym: Any
    spec: Any
    algo: str
    method_kwargs: dict[str, Any] | None
    freeze_backbone: bool | None
    device: str
    seed: int | None
    algo_kwargs: dict[str, Any]
    info: _Algo | None = None

    @property
    def algo_info(self) -> _Algo:
        """The algorithm's facts (read from the table unless :func:`load_pretrained` handed them down)."""
        return self.info if self.info is not None else _algo(self.algo)

    def add_equi_options(self, pk: dict[str, Any]) -> None:
        """Put the equivariant policy's options in ``pk`` (plain data only, the spec as a mapping, so
        the saved zip needs no pickled policy_kwargs).

        :param pk: the policy kwargs, updated in place.
        """
        spec, freeze = self.spec, self.freeze_backbone
        pk.update(
            symmetry=self.sym.to_dict(),
            method=spec.name,
            method_kwargs=dict(self.method_kwargs or {}),
            freeze_backbone=spec.learned_weights if freeze is None else freeze,
        )


def _construct(path: Any, sym: Any, make: Callable[[], Any]) -> Any:
    """``make()``, an SB3 model built around a checkpoint's networks; SB3's / torch's shape and type
    errors become one line naming the checkpoint (equirl's own errors, e.g. a bad method option, pass)."""
    try:
        return make()
    except EquirlError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit {sym.env_id}: {first_cause(exc)}") from None


def _finetune_defaults(algo: str | _Algo, algo_kwargs: dict[str, Any]) -> dict[str, Any]:
    """An off-policy agent loaded without these hyperparameters gets a modest replay buffer and no
    warm-up (SB3's defaults are a 1M buffer and random warm-up actions)."""
    if (algo if isinstance(algo, _Algo) else _algo(algo)).on_policy:
        return algo_kwargs
    return {"buffer_size": 50_000, "learning_starts": 0, **algo_kwargs}


def _equivariant_model(req: _WrapRequest, alias: str, pk: dict[str, Any], algo_kwargs: dict[str, Any]) -> Any:
    """A new model of the agent's algorithm with the equivariant policy ``alias`` (``policy_kwargs`` ``pk``),
    the plain agent's weights copied in (see :func:`_copy_weights`)."""
    info = req.algo_info
    cls = info.cls
    model = _construct(
        req.path,
        req.sym,
        lambda: cls(
            alias,
            req.vec,
            policy_kwargs=pk,
            device=req.device,
            seed=req.seed,
            **_finetune_defaults(info, algo_kwargs),
        ),
    )
    _copy_weights(req.plain, model, req.spec, req.path, req.algo)
    _carry_entropy_coef(req.plain, model, algo_kwargs)
    return model


def _carry_entropy_coef(plain: Any, model: Any, algo_kwargs: dict[str, Any]) -> None:
    """SAC / TQC: a model that learns its entropy coefficient from ``auto`` (no start value given) starts
    from the one the agent had learned, as ``SAC.load`` would continue, rather than from SB3's 1.0, which
    can wreck a trained gait in a few thousand steps (an agent trained with a fixed coefficient: from that
    one). ``auto_<x>`` starts from x; a number fixes it."""
    target = getattr(model, "log_ent_coef", None)
    if target is None or algo_kwargs.get("ent_coef", "auto") != "auto":
        return
    import torch

    learned = getattr(plain, "log_ent_coef", None)
    if learned is None:  # an agent trained with a fixed coefficient: learning starts from that value
        fixed = getattr(plain, "ent_coef_tensor", None)
        if fixed is None:
            return
        learned = torch.log(fixed.detach().float())
    with torch.no_grad():  # in place: the coefficient's optimizer holds this tensor
        target.copy_(learned.detach().reshape(target.shape).to(target.device))


def _wrap_q(req: _WrapRequest) -> Any:
    """DQN / QR-DQN: the same network under an equivariant Q-policy."""
    plain, path, sym, spec, algo, algo_kwargs = (
        req.plain,
        req.path,
        req.sym,
        req.spec,
        req.algo,
        req.algo_kwargs,
    )
    import torch
    from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN

    pk = dict(plain.policy_kwargs or {})
    for k in ("symmetry", "method", "method_kwargs", "freeze_backbone"):
        pk.pop(k, None)
    # plain data only (the spec as a mapping), so the saved zip needs no pickled policy_kwargs
    req.add_equi_options(pk)
    # the same network as the plain agent: its feature extractor (Flatten / NatureCNN...) and quantiles;
    # the two standard ones are named by the policy alias rather than stored as a class
    extractor = pk.pop("features_extractor_class", plain.policy.features_extractor_class)
    alias = "EquiCnnPolicy" if extractor is NatureCNN else "EquiMlpPolicy"
    if extractor not in (NatureCNN, FlattenExtractor):
        pk["features_extractor_class"] = extractor
    if algo == "qrdqn":
        pk.setdefault("n_quantiles", plain.policy.n_quantiles)
    model = _equivariant_model(req, alias, pk, algo_kwargs)
    with torch.no_grad():
        if algo == "dqn":
            model.policy.q_net_target.load_state_dict(model.policy.q_net.state_dict())
        else:
            model.policy.quantile_net_target.load_state_dict(model.policy.quantile_net.state_dict())
    log.info("loaded %s into a %s policy (%s)", path, spec.name, sym.env_id)
    return model


def spec_of_agent(env_id: str, agent: Any) -> EnvSymmetry:
    """The spec of ``env_id``: the one a folder or ``--env`` file gives, else the one an agent equirl saved
    carries for that env (a spec the user wrote once, when the agent was symmetrized).

    :raises SymmetryError: neither has one (the unknown-env line).
    """
    from equirl.rl.safe_load import saved_symmetry

    try:
        return load_spec(env_id)
    except SymmetryError as err:
        missing = err
    try:
        saved = saved_symmetry(find_agent_zip(agent, env_id))
    except EquirlError:
        saved = None  # a missing agent is reported where it is loaded; the spec is the cause here
    if saved is None or current_env_id(saved.env_id) != env_id:
        raise missing
    log.info("%s: using the symmetry spec saved with the agent", env_id)
    return saved


def _saved_method(plain: Any) -> str | None:
    """The method an agent equirl saved was symmetrized with (canonical name), ``None`` for SB3's own."""
    saved = getattr(plain.policy, "_equi_kwargs", {}).get("method")
    return canonical_method(saved) if saved is not None else None  # aliases: "lambda_equitune", "plain"


def _say_base_of(path: Any, saved_method: str) -> None:
    log.warning(
        "%s is an equirl agent saved with %s: base runs its network without the symmetrizer (the agent as "
        "saved is the %s row)",
        printable(path, 200),
        saved_method,
        saved_method,
    )


def _is_equi_key(key: str) -> bool:
    """A parameter of a symmetrizer (λ-net / scorer), not of the plain network."""
    return key.startswith("equi.") or ".equi." in key


def _copy_weights(plain: Any, model: Any, spec: Any, path: Any, algo: str) -> None:
    """Load the plain agent's weights into ``model``'s policy: strictly, except that the symmetrizer's own
    weights (λ-net / scorer) may be missing (they start fresh unless the agent was saved with the method)."""
    state = plain.policy.state_dict()
    own = spec.own_weights  # methods with their own (λ / scorer) weights
    saved_method = _saved_method(plain)
    if not own or saved_method != spec.name:  # keep only the backbone (the new λ-net / scorer starts fresh)
        state = {k: v for k, v in state.items() if not _is_equi_key(k)}
    if saved_method not in (None, BASE) and spec.name == BASE:
        _say_base_of(path, saved_method)
    try:
        missing, unexpected = model.policy.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit the {algo} network: {first_cause(exc)}"
        ) from None
    bad_missing = [k for k in missing if not _is_equi_key(k)]
    if unexpected or bad_missing or (not own and missing):
        raise CheckpointError(
            f"checkpoint {path} does not fit the {algo} network: missing {bad_missing[:3]}, unexpected {unexpected[:3]}"
        )


#: plain-policy constructor options carried over to the equivariant policy (the network's shape)
_AC_POLICY_KEYS = (
    "net_arch",
    "activation_fn",
    "share_features_extractor",
    "n_critics",
    "n_quantiles",
    "normalize_images",
    "log_std_init",
    "full_std",
    "use_expln",
    "clip_mean",
    "squash_output",
)


def _wrap_actor_critic(req: _WrapRequest) -> Any:
    """PPO / A2C / SAC / TD3 / DDPG / TQC: the same networks under an equivariant actor-critic policy
    (a gSDE agent as it is for ``base``: its own gSDE exploration)."""
    plain, path, vec, sym, spec, algo = req.plain, req.path, req.vec, req.sym, req.spec, req.algo
    device, seed, algo_kwargs = req.device, req.seed, req.algo_kwargs
    from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN

    pk_saved = dict(plain.policy_kwargs or {})
    use_sde = bool(getattr(plain, "use_sde", False) or pk_saved.get("use_sde", False))
    if use_sde and not spec.symmetrizes:  # the plain agent, with its own gSDE exploration
        saved_method = _saved_method(plain)
        if saved_method not in (None, BASE):  # an agent equirl saved symmetrized: its network alone
            _say_base_of(path, saved_method)
            pk_saved.update(method=BASE, method_kwargs={})
        if algo_kwargs or saved_method not in (None, BASE):  # the same policy, rebuilt
            info = req.algo_info
            cls = info.cls
            kw = _finetune_defaults(info, {**algo_kwargs, "use_sde": True})
            model = _construct(
                path,
                sym,
                lambda: cls(type(plain.policy), vec, policy_kwargs=pk_saved, device=device, seed=seed, **kw),
            )
            state = {k: v for k, v in plain.policy.state_dict().items() if not _is_equi_key(k)}
            _construct(path, sym, lambda: model.policy.load_state_dict(state))
            _carry_entropy_coef(plain, model, kw)
            log.info("loaded %s as it is (trained with gSDE), with the given hyperparameters", path)
            return model
        plain.n_envs = vec.num_envs
        plain.set_env(vec)
        log.info("loaded %s as it is (trained with gSDE)", path)
        return plain
    if spec.name not in AC_METHODS_LOADABLE:
        raise SymmetryError(
            f"method {spec.name} is not available for {algo} agents; choose one of {', '.join(AC_METHODS_LOADABLE)}"
        )
    params = plain.policy._get_constructor_parameters()
    pk: dict[str, Any] = {k: params[k] for k in _AC_POLICY_KEYS if k in params}
    for k in ("optimizer_class", "optimizer_kwargs"):
        if k in pk_saved:
            pk[k] = pk_saved[k]
    # SB3's two standard feature extractors, named by the policy alias (MlpPolicy / CnnPolicy)
    extractor = plain.policy.features_extractor_class
    if extractor not in (FlattenExtractor, NatureCNN) and not spec.symmetrizes and not algo_kwargs:
        plain.n_envs = vec.num_envs  # base needs no symmetrizer: the agent as it is, its own extractor
        plain.set_env(vec)
        log.info("loaded %s as it is (feature extractor %s)", path, getattr(extractor, "__name__", extractor))
        return plain
    if extractor not in (FlattenExtractor, NatureCNN):
        raise CheckpointError(
            f"{path}: only MlpPolicy / CnnPolicy actor-critic agents can be symmetrized (its feature "
            f"extractor is {getattr(extractor, '__name__', extractor)})"
        )
    alias = "EquiCnnPolicy" if extractor is NatureCNN else "EquiMlpPolicy"
    if params.get("features_extractor_kwargs"):
        pk["features_extractor_kwargs"] = dict(params["features_extractor_kwargs"])
    req.add_equi_options(pk)
    if use_sde:  # the algorithm passes it to the policy (the policy's gSDE parameters are the agent's)
        algo_kwargs.setdefault("use_sde", True)
    model = _equivariant_model(req, alias, pk, algo_kwargs)
    log.info("loaded %s into a %s %s policy (%s)", path, spec.name, algo, sym.env_id)
    return model


def sb3_algo_kwargs(cfg: RLConfig, action_space: Any) -> dict[str, Any]:
    """The SB3 algorithm's keyword arguments from ``cfg.hyperparams`` (TD3's exploration noise made here,
    from the action space)."""
    hp = cfg.hyperparams
    kw: dict[str, Any] = hp.sb3_kwargs()
    if isinstance(hp, TD3HyperParams) and hp.action_noise_std > 0:
        from stable_baselines3.common.noise import NormalActionNoise

        n = int(np.prod(action_space.shape))
        kw["action_noise"] = NormalActionNoise(np.zeros(n), hp.action_noise_std * np.ones(n))
    return kw


def policy_net_kwargs(cfg: RLConfig) -> dict[str, Any]:
    """The network part of the policy's keyword arguments from ``cfg.hyperparams`` (``net_arch``; QR-DQN's
    ``n_quantiles``; a named feature extractor), for equirl's policies and SB3's own alike."""
    hp = cfg.hyperparams
    pk: dict[str, Any] = {"net_arch": list(hp.net_arch)}
    if cfg.algo == "qrdqn":
        pk["n_quantiles"] = hp.n_quantiles
    extractor = feature_extractor(getattr(hp, "features_extractor", "auto"))
    if extractor is not None:
        pk["features_extractor_class"] = extractor
    return pk


def make_train_env(cfg: RLConfig) -> Any:
    """The training VecEnv of ``cfg`` (``hyperparams.n_envs`` copies for PPO / A2C)."""
    return make_vec_env(cfg.env, n_envs=cfg.n_envs, seed=cfg.seed)


def _raw_spaces(vec: Any) -> tuple[Any, Any]:
    """The observation and action spaces of the env under a VecEnv's wrappers (what a spec describes)."""
    env = vec.unwrapped.envs[0].unwrapped
    return env.observation_space, env.action_space


def policy_alias(space: Any) -> str:
    """``EquiCnnPolicy`` for image observations (SB3's image spaces, channel-first or -last; NatureCNN needs
    frames of at least 36x36), else ``EquiMlpPolicy``."""
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

    if not is_image_space(space, check_channels=False):
        return "EquiMlpPolicy"
    shape = tuple(space.shape)
    h, w = shape[1:] if is_image_space_channels_first(space) else shape[:2]
    return "EquiCnnPolicy" if min(h, w) >= 36 else "EquiMlpPolicy"


def _check_action_space(cfg: RLConfig, space: Any, algo: AlgoSpec | None = None) -> None:
    """One line when ``cfg.algo`` cannot act in ``space`` (DQN on continuous actions, SAC on discrete).

    :param algo: ``cfg.algo``'s entry, when the caller has it.
    """
    need = (algo if algo is not None else get_algo(cfg.algo)).actions
    kind = type(space).__name__
    if need is not None and kind != need:
        what = "discrete" if need == "Discrete" else "continuous (Box)"
        fits = [a.name for a in ALGOS.values() if a.trainable and a.actions in (None, kind)]
        raise FieldError(
            "algo",
            cfg.algo,
            f"{cfg.algo.upper()} needs {what} actions but {cfg.env} has {kind} actions (use {', '.join(fits)})",
        )


def build_model(cfg: RLConfig, trust_checkpoint: bool = False) -> Any:
    """The SB3 model a config describes (fresh, or wrapped around ``init_from``).

    The symmetry spec is resolved once and the training env made once; an agent to finetune gets the env
    it ran in (its RL-zoo folder's wrappers, statistics and frame stack: see
    :func:`~equirl.rl.build.load_pretrained`).
    ``policy_kwargs`` are plain data (the spec as a mapping), so the saved zip pickles none of them.
    Method ``augment`` trains a plain policy on mirrored transitions too (:mod:`equirl.rl.augment`).

    :param trust_checkpoint: let SB3 unpickle ``init_from``'s pickled entries (see
        :mod:`equirl.rl.safe_load`).
    """

    info = _algo(cfg.algo)  # the algorithm's facts, read once
    algo, sym = info.spec, load_spec(cfg.symmetry or cfg.env)
    # a fresh model trains in the bare env; an agent to finetune in the env it ran in, which the loader
    # makes (its wrappers, statistics, frame stack): here only the bare env's spaces are checked
    if cfg.init_from:
        vec = None
        bare = make_env(cfg.env)
        try:
            obs_space, action_space = bare.unwrapped.observation_space, bare.unwrapped.action_space
        finally:
            bare.close()
    else:
        vec = make_train_env(cfg)
        obs_space, action_space = _raw_spaces(vec)
    _check_action_space(cfg, action_space, algo)
    sym.check_fits(obs_space, action_space)
    if getattr(cfg.hyperparams, "use_sde", False) and not sym.continuous:
        raise FieldError(
            "hyperparams.use_sde", True, f"gSDE needs continuous actions; {cfg.env} has discrete ones"
        )
    kw = sb3_algo_kwargs(cfg, action_space)
    if not info.on_policy:
        check_buffer_memory(
            vec.observation_space if vec is not None else obs_space, cfg.hyperparams.buffer_size
        )
    method, method_kwargs = cfg.method, dict(cfg.method_kwargs)
    if get_method(method).augments_data:  # a plain policy trained on mirrored transitions too
        from equirl.rl.augment import augment_kwargs

        kw.update(augment_kwargs(sym, cfg.algo, seed=cfg.seed))
    if get_method(method).training_baseline:  # the network stays plain (a penalty: attach_training_hooks)
        method, method_kwargs = BASE, {}
    if vec is None:
        model = _load_pretrained(
            str(cfg.init_from),
            cfg.env,
            method,
            info,
            sym,
            method_kwargs,
            cfg.freeze_backbone,
            "cpu",
            cfg.seed,
            "best",
            trust_checkpoint,
            cfg.n_envs,
            dict(kw),
        )
    else:
        pk: dict[str, Any] = {
            **policy_net_kwargs(cfg),
            "symmetry": sym.to_dict(),
            "method": method,
            "method_kwargs": method_kwargs,
            "freeze_backbone": bool(cfg.freeze_backbone),
        }
        model = info.cls(
            policy_alias(vec.observation_space), vec, policy_kwargs=pk, seed=cfg.seed, device="cpu", **kw
        )
    if cfg.method == MIRROR_LOSS:  # not a call on every path: the walk from a config to SB3 stays short
        attach_training_hooks(model, cfg, sym)
    return model


def attach_training_hooks(model: Any, cfg: RLConfig, sym: EnvSymmetry | None = None) -> None:
    """What a model of ``cfg`` trains with beyond SB3's own step: the mirror-symmetry loss of method
    ``mirror-loss`` (:mod:`equirl.rl.mirror_loss`). Hooks are not saved with a model, so a resumed run
    attaches them again.

    :param sym: the env's spec (default: ``cfg``'s).
    """
    if cfg.method == MIRROR_LOSS:
        from equirl.rl.mirror_loss import attach_mirror_loss

        weight = float(cfg.method_kwargs.get("weight", get_method(MIRROR_LOSS).defaults("rl")["weight"]))
        attach_mirror_loss(model, sym if sym is not None else load_spec(cfg.symmetry or cfg.env), weight)
