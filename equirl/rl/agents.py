"""The shipped agents in ``agents/`` (zoo-like layout) and exporting a run there.

Layout: ``agents/{algo}/{env}/`` with ``{env}.zip`` (fully trained), ``{env}_partial.zip`` (a
checkpoint after ``partial_fraction`` of the budget), ``config.yaml`` (the resolved run config) and
``eval.json`` (the measured evaluation returns). ``{env}`` replaces ``/`` by ``_``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, NamedTuple

from equirl.assets import asset_path
from equirl.config import load_yaml
from equirl.errors import CheckpointError, ConfigError
from equirl.rl.zoo import STATISTICS_KEY
from equirl.utils.io import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_stream,
    atomic_write_text,
    check_output_path,
    json_dumps,
    pickle_bytes,
    printable,
    read_json,
    read_text,
    refuse_existing,
    remove_file,
)

__all__ = [
    "ShippedAgent",
    "agent_dir",
    "agent_path",
    "check_export",
    "compact_agent_zip",
    "export_agent",
    "save_symmetrized",
    "shipped_agents",
]


def _slug(env_id: str) -> str:
    return env_id.replace("/", "_")


class ShippedAgent(NamedTuple):
    """One agent zip of ``agents/``: its algorithm, env id (from ``eval.json``), path and whether it is
    the partial checkpoint."""

    algo: str
    env: str
    path: Path
    partial: bool


def shipped_agents(root: str | Path | None = None) -> list[ShippedAgent]:
    """Every agent under ``root`` (default: the shipped ``agents/``), full then partial, of every
    algorithm; a folder without ``eval.json`` (or without its ``env``) is skipped."""
    base = Path(root) if root is not None else asset_path("agents")
    found: list[ShippedAgent] = []
    for d in sorted(p for p in base.glob("*/*") if (p / "eval.json").is_file()):
        info = read_json(d / "eval.json", "agent eval.json")
        env = info.get("env") if isinstance(info, dict) else None
        if not env:
            continue
        for partial in (False, True):
            z = d / f"{d.name}{'_partial' if partial else ''}.zip"
            if z.is_file():
                found.append(ShippedAgent(d.parent.name, str(env), z, partial))
    return found


def agent_dir(env_id: str, algo: str = "dqn", root: str | Path | None = None) -> Path:
    """``{root}/{algo}/{env}`` (default root: the shipped ``agents/``)."""
    base = Path(root) if root is not None else asset_path("agents")
    return base / algo / _slug(env_id)


def agent_path(env_id: str, algo: str = "dqn", partial: bool = False, root: str | Path | None = None) -> Path:
    """The shipped agent zip for ``env_id`` (raises :class:`CheckpointError` when absent)."""
    base = Path(root) if root is not None else asset_path("agents")
    p = base / algo / _slug(env_id) / f"{_slug(env_id)}{'_partial' if partial else ''}.zip"
    if not p.is_file():
        raise CheckpointError(f"no shipped agent {p} (run `equirl pretrain configs/rl/... --export agents`)")
    return p


def _export_files(dest: Path, env_id: str) -> list[Path]:
    slug = _slug(env_id)
    return [dest / f"{slug}.zip", dest / f"{slug}_partial.zip", dest / "config.yaml", dest / "eval.json"]


def check_export(cfg: Any, root: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any training, an export that would replace an agent already in
    ``{root}/{algo}/{env}/`` (unless ``overwrite``); returns that folder.

    :param cfg: the run config (its ``env`` and ``algo``).
    :param root: the export root (``agents/``).
    :param overwrite: replace an existing agent (``--overwrite``).
    """
    dest = Path(root) / str(cfg.algo) / _slug(str(cfg.env))
    check_output_path(dest, "--export")
    refuse_existing(_export_files(dest, str(cfg.env)), overwrite, "exported agent")
    return dest


#: an exported agent zip larger than this is compacted (:func:`compact_agent_zip`): the size a git
#: repository carries comfortably per file
SHIP_MAX_BYTES = 8 * 1024 * 1024


def compact_agent_zip(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write ``src`` (an SB3 model zip) to ``dst`` with its weights in float16 and its optimizer's state
    dropped (the moment estimates; the parameter groups, learning rate among them, are kept): what a
    pixel agent needs to ship (NatureCNN DQN: 31 MB of weights and 31 MB of Adam moments in float32).
    Loading casts the weights back to float32 (``load_state_dict``), so every loader takes the file as
    it takes the original; a finetuning run starts Adam afresh, as it would from an RL-zoo agent. A
    target network (``q_net_target``, ``critic_target``, ``actor_target``) is stored as its online network
    (one copy in the file, as after a target update): acting never reads it, and a finetuning run starts
    its target from the online weights.

    :returns: ``{"weights": "float16", "optimizer_state": "dropped", "targets": "online", "bytes": ...}``
        for ``eval.json``.
    """
    import io
    import zipfile

    from equirl.utils.io import check_zip_members, torch_load_weights, torch_save_bytes

    with zipfile.ZipFile(src) as zin:
        check_zip_members(zin, f"agent {src}")
        members = [(info, zin.read(info)) for info in zin.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info, data in members:
            if info.filename == "policy.pth":
                weights = torch_load_weights(data, f"{src}: policy.pth")
                half = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
                data = torch_save_bytes({k: half[_online_key(k, half)] for k in half})
            elif info.filename == "policy.optimizer.pth":
                state = torch_load_weights(data, f"{src}: policy.optimizer.pth")
                data = torch_save_bytes({"state": {}, "param_groups": state["param_groups"]})
            zout.writestr(info.filename, data)
    atomic_write_bytes(dst, out.getvalue())
    return {
        "weights": "float16",
        "optimizer_state": "dropped",
        "targets": "online",
        "bytes": len(out.getvalue()),
    }


def _online_key(key: str, weights: dict[str, Any]) -> str:
    """The online network's key for a target network's weight (``q_net_target.0.weight`` ->
    ``q_net.0.weight``) when that weight exists with the same shape, else ``key``."""
    head, _, rest = key.partition(".")
    online = f"{head.removesuffix('_target')}.{rest}"
    if head.endswith("_target") and online in weights and weights[online].shape == weights[key].shape:
        return online
    return key


def export_agent(run_dir: str | Path, root: str | Path, overwrite: bool = False) -> Path:
    """Copy a pretraining run into ``{root}/{algo}/{env}/`` (each file written atomically); an agent
    already there is kept unless ``overwrite`` (the folder never mixes two agents: with ``overwrite``
    every file is replaced or removed). A zip above :data:`SHIP_MAX_BYTES` is compacted
    (:func:`compact_agent_zip`; ``eval.json`` says so under ``compacted``)."""
    run = Path(run_dir)
    cfg = load_yaml(run / "config.yaml")
    env_id, algo = str(cfg["env"]), str(cfg.get("algo", "dqn"))
    dest = Path(root) / algo / _slug(env_id)
    targets = _export_files(dest, env_id)
    refuse_existing(targets, overwrite, "exported agent")
    dest.mkdir(parents=True, exist_ok=True)
    compacted: dict[str, Any] = {}
    for src, dst in ((run / "model.zip", targets[0]), (run / "model_partial.zip", targets[1])):
        if src.is_file() and src.stat().st_size > SHIP_MAX_BYTES:
            compacted[dst.name] = compact_agent_zip(src, dst)
        elif src.is_file():
            atomic_copy(src, dst)
        else:
            remove_file(dst)  # a stale partial of an earlier agent would mix two agents
    atomic_write_text(targets[2], read_text(run / "config.yaml", "run config"))
    evals = read_json(run / "evaluations.json", "evaluations")
    final = evals["evaluations"][-1] if evals.get("evaluations") else {}
    atomic_write_text(
        targets[3],
        json_dumps(
            {
                "env": env_id,
                "algo": algo,
                "final": final,
                "train_seconds": evals.get("train_seconds"),
                "source_run": run.name,
                **({"compacted": compacted} if compacted else {}),
            },
            indent=2,
        ),
    )
    return dest


#: the statistics' file name beside a zip (rl_zoo3's ``-i agent.zip`` reads it from the zip's folder)
STATS_NAME = "vecnormalize.pkl"


def _env_description(
    agent: str | Path, env_id: str, sub: Path, overwrite: bool
) -> tuple[bool, list[tuple[Path, Path]]]:
    """An RL-zoo agent's env description (``config.yml``, ``args.yml``, ``env_kwargs.yml``: its wrappers,
    frame stack and env options), to go into the env folder ``sub`` beside the symmetrized zip so that it
    runs in the env its agent ran in: whether there is one, and the ``(source, destination)`` copies still
    to make (files already there with the same bytes are kept; others are refused without ``overwrite``,
    before any work)."""
    from equirl.rl.zoo import ARGS, CONFIG, ENV_KWARGS, read_zoo_folder

    zoo = read_zoo_folder(agent, env_id)
    if zoo.stats_dir is None:
        return False, []
    pairs = [
        (zoo.stats_dir / f, sub / f) for f in (CONFIG, ARGS, ENV_KWARGS) if (zoo.stats_dir / f).is_file()
    ]
    new = [(a, b) for a, b in pairs if not (b.is_file() and b.read_bytes() == a.read_bytes())]
    refuse_existing([b for _, b in new], overwrite, "output")
    return bool(pairs), new


def _owner_of(env_dir: Path, out: Path) -> Path | None:
    """Another zip beside ``out`` (written by equirl) whose record names files in ``env_dir``, if any."""
    from equirl.rl.zoo import _zip_record

    if not env_dir.is_dir():
        return None
    for z in sorted(out.parent.glob("*.zip")):
        if z.name == out.name:
            continue
        rec = _zip_record(z)
        if rec is None:
            continue
        stats_dir = rec.statistics[0].split("/", 1)[0] if rec.statistics else None
        if env_dir.name in (rec.env_dir, stats_dir):
            return z
    return None


def zoo_env_name(env_id: str) -> str:
    """The folder name rl_zoo3 gives an env id (``ALE/Breakout-v5`` -> ``ALE-Breakout-v5``): where its
    ``-i agent.zip`` reads ``{name}/vecnormalize.pkl`` beside the zip."""
    name = env_id.replace("/", "-")
    name = name.split(":", 1)[1] if name.count(":") == 1 else name
    return re.sub(r"[^\w.\-]", "-", name)


def save_symmetrized(
    agent: str | Path,
    out: str | Path,
    env_id: str,
    method: str,
    algo: str | None = None,
    method_kwargs: dict[str, Any] | None = None,
    which: str = "best",
    overwrite: bool = False,
    trust_checkpoint: bool = False,
) -> list[Path]:
    """Write ``agent`` symmetrized by ``method`` as an SB3 zip that SB3 loads by itself: ``PPO.load(out)``
    (or ``DQN.load``...) once ``equirl.rl`` is imported, and rl_zoo3's ``-i out --gym-packages equirl.rl``
    (rl_zoo3 keeps the policy a zip was saved with and drops the config's ``policy_kwargs``: a plain zip
    given to ``-i`` trains a plain policy, whatever the config says). When the agent normalises its
    observations, the statistics are written as ``{env}/vecnormalize.pkl`` beside ``out`` (where rl_zoo3's
    ``-i`` reads them: ``{env}`` is the env id with ``/`` made ``-``), group-symmetrized for the
    symmetrizing methods (pickled as :class:`~equirl.rl.normalize.SymmetricVecNormalize`, so they stay
    symmetric while rl_zoo3 finetunes), and the zip records them (or that it runs without); an RL-zoo
    agent's env description goes into the same ``{env}/`` (:func:`_env_description`).

    :param agent: a zip, run folder, RL-zoo folder or ``hf://ORG/REPO``.
    :param out: the zip to write (``.zip`` added when missing).
    :param env_id: the env the agent runs on.
    :param method: ``equitune``, ``equizero``, ``lambda``... (see :func:`~equirl.rl.build.load_pretrained`).
    :param overwrite: replace ``out`` (and the statistics beside it) when they exist.
    :returns: the files written.
    :raises EquirlError: a file exists (without ``overwrite``), or the agent does not load (one line).
    """
    from equirl.rl.build import load_pretrained
    from equirl.rl.zoo import find_vecnormalize

    out = Path(out)
    if out.is_dir():
        raise ConfigError(
            f"--out {printable(out, 200)} is a folder: give the zip to write (e.g. {out}/agent.zip)"
        )
    out = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
    check_output_path(out, "--out", kind="file")
    # the agent's env folder beside the zip, named as rl_zoo3 names it: its -i reads the statistics there
    name = zoo_env_name(env_id)
    stats = out.parent / name / STATS_NAME
    normalised = find_vecnormalize(agent, env_id, which=which) is not None
    # rl_zoo3 reads one agent per folder: files there that another zip equirl wrote runs with are never
    # replaced, not even on --overwrite (that zip would lose its statistics or its wrappers)
    owner = _owner_of(out.parent / name, out)
    if owner is not None:
        raise ConfigError(
            f"{printable(out.parent / name, 200)} holds the files {printable(owner, 200)} runs with (its "
            "statistics / env description; rl_zoo3 reads one agent per folder): write this agent into "
            "another folder"
        )
    # statistics there would be read with the zip (by rl_zoo3 -i): replaced only on --overwrite, also when
    # this agent runs without (they would be another agent's)
    if not normalised and not overwrite and (stats.exists() or stats.is_symlink()):
        raise ConfigError(
            f"{printable(stats, 200)} is where rl_zoo3 reads this agent's normalisation statistics, but the "
            "agent runs without: write into another folder, or pass --overwrite to remove it"
        )
    refuse_existing([out, stats], overwrite, "output")
    described, copies = _env_description(agent, env_id, out.parent / name, overwrite)
    model = load_pretrained(
        agent,
        env_id,
        method=method,
        algo=algo,
        method_kwargs=method_kwargs,
        which=which,
        trust_checkpoint=trust_checkpoint,
    )
    norm = model.get_vec_normalize_env()
    blob = pickle_bytes(norm) if norm is not None else None
    # the zip records the files it runs with (none, or these bytes): a later reader refuses another
    # agent's file in their place instead of running with it
    setattr(model, STATISTICS_KEY, {
        "file": f"{name}/{STATS_NAME}" if blob is not None else None,
        "sha256": hashlib.sha256(blob).hexdigest() if blob is not None else None,
        "env_dir": name if described else None,  # not another agent's description lying there
        "num_timesteps": int(model.num_timesteps),
    })  # fmt: skip
    written = [atomic_write_stream(out, model.save)]
    written += [atomic_copy(src, dst) for src, dst in copies]
    if blob is not None:
        written.append(atomic_write_bytes(stats, blob))
    else:  # another agent's, if any (refused above without --overwrite)
        remove_file(stats)
    return written
