"""The life of a run directory: ``run.json``, checkpoints, graceful stops and the non-finite guard.

``run.json`` (rewritten atomically at each change) says what a run is doing::

    {"status": "running" | "interrupted" | "failed" | "finished", "steps_done": 3072,
     "total_timesteps": 30000, "best": {"timestep": 7500, "mean_return": 500.0},
     "last_eval": {...}, "checkpoint": {"step": 3000, "path": "checkpoint/model_3000.zip"},
     "resume_command": "equirl train --resume runs/...", "pid": 123, "host": "...",
     "started_at": "...", "updated_at": "...", "ended_at": null, "error": null}

A run whose status is still ``running`` but whose process is gone (SIGKILL, power loss) is reported as
``stale`` by :func:`list_runs`.

``checkpoint/`` holds ``model_{step}.zip``, ``replay_buffer_{step}.pkl`` (optional), ``extra_{step}.pkl``
(the RNG states and, when picklable, the training env: what makes a resumed run continue exactly) and
``state.json`` naming them, written last: each file is written to a temporary file in the same folder and
renamed, and ``state.json`` is the commit point, so a kill at any moment leaves the previous checkpoint
whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from equirl.config import Range, from_dict
from equirl.errors import CheckpointError, ConfigError
from equirl.utils.io import (
    atomic_write_bytes,
    atomic_write_stream,
    contained,
    file_digest,
    pickle_bytes,
    read_json,
    read_signed,
    remove_file,
    trusted_loads,
    write_json,
)

__all__ = [
    "AUTO_BUFFER_BYTES",
    "CHECKPOINT_DIR",
    "RUN_JSON",
    "Checkpoint",
    "RunRecord",
    "graceful_stop",
    "list_runs",
    "load_checkpoint",
    "nonfinite_reason",
    "read_run",
    "replay_buffer_bytes",
    "run_lock",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
CHECKPOINT_DIR = "checkpoint"
#: the largest estimated replay buffer saved with each checkpoint when ``checkpoint.replay_buffer`` is unset
AUTO_BUFFER_BYTES = 256 * 2**20


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunRecord:
    """The ``run.json`` of one run, rewritten atomically at each :meth:`update`.

    A run directory that became unwritable does not stop training: the failed write is logged.

    :param run_dir: the run directory.
    :param data: the initial fields (``status`` defaults to ``running``).
    """

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.data: dict[str, Any] = {
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": _now(),
            "ended_at": None,
            "error": None,
            **data,
        }
        self._last_write = 0.0

    def update(self, **fields: Any) -> None:
        """Set ``fields`` and rewrite ``run.json``."""
        self.data.update(fields)
        self.data["updated_at"] = _now()
        if fields.get("status") in ("interrupted", "failed", "finished"):
            self.data["ended_at"] = self.data["updated_at"]
        try:
            write_json(self.run_dir / RUN_JSON, self.data)
        except OSError as exc:
            log.warning("could not write %s: %s", self.run_dir / RUN_JSON, exc)
        self._last_write = time.monotonic()

    def tick(self, steps_done: int, every: float = 1.0) -> None:
        """Record ``steps_done``, rewriting the file at most every ``every`` seconds."""
        self.data["steps_done"] = int(steps_done)
        if time.monotonic() - self._last_write >= every:
            self.update()


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run directory (one-line :class:`CheckpointError` when missing or corrupt)."""
    p = Path(run_dir) / RUN_JSON
    if not p.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no {RUN_JSON})")
    try:  # size-, depth- and UTF-8-checked, one line
        data = read_json(p, "run record")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"corrupt {p}: not a mapping")
    return data


def pid_alive(pid: int | None, host: str | None = None) -> bool:
    """Whether process ``pid`` exists (on another host: assumed alive, it cannot be checked)."""
    if host is not None and host != socket.gethostname():
        return True
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


#: the file a process holds an exclusive ``flock`` on while it trains the run (released by the OS when
#: the process ends, however it ends): "is this run still running?" is asked of the lock, not of a pid
#: that a reboot may have given to another process
LOCK_FILE = "run.lock"


def _open_lock(run_dir: Path) -> int:
    try:  # O_NOFOLLOW: a crafted folder's ``run.lock`` symlink is not followed
        return os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise CheckpointError(
            f"cannot lock run {run_dir} ({exc.strerror or exc}: {run_dir / LOCK_FILE})"
        ) from None


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run's lock (``{run_dir}/run.lock``, an exclusive ``flock``) for the body: a second process
    training the same run (two ``--resume`` at once) is refused at once.

    :raises CheckpointError: another process holds it, or the lock file cannot be made.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): the pid check of ``run.json`` only
        yield
        return
    run_dir = Path(run_dir)
    fd = _open_lock(run_dir)
    try:
        deadline = time.monotonic() + 0.5  # `equirl runs` holds a shared lock for an instant: not a trainer
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CheckpointError(
                        f"{run_dir} is being trained by another process; wait for it or stop it first"
                    ) from None
                time.sleep(0.05)
            except OSError as exc:  # a filesystem without locks (some network ones): go on, unlocked
                log.warning("cannot lock %s (%s): two trainers of it would not be stopped", run_dir, exc)
                break
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_held(run_dir: Path) -> bool | None:
    """Whether another process holds the run's lock (``None``: no lock file, or it cannot be checked)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return None
    path = run_dir / LOCK_FILE
    if path.is_symlink() or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        return False
    finally:
        os.close(fd)


def effective_status(info: dict[str, Any], run_dir: str | Path | None = None) -> str:
    """``info["status"]``, or ``stale`` for a ``running`` run whose process is gone (or whose ``pid`` is
    not a process id: it cannot be checked); ``unknown`` for a status that is not text.

    :param run_dir: the run's folder: its lock (:func:`run_lock`) decides on this host when it has one,
        so a pid reused by another process after a reboot does not keep a dead run "running".
    """
    status = info.get("status", "unknown")
    if not isinstance(status, str):
        return "unknown"
    if status == "running":
        pid, host = info.get("pid"), info.get("host")
        on_this_host = not isinstance(host, str) or host == socket.gethostname()
        held = _lock_held(Path(run_dir)) if run_dir is not None and on_this_host else None
        if held is not None:
            return status if held else "stale"
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31:
            return "stale"
        if not pid_alive(pid, host if isinstance(host, str) else None):
            return "stale"
    return status


def list_runs(root: str | Path, nested: bool = False) -> list[dict[str, Any]]:
    """The runs under ``root`` (folders holding a ``run.json``), oldest first, with ``status`` made
    effective (``stale``), ``run_dir`` set, every field checked (a bad value is ``None`` and named in
    ``invalid``: :func:`equirl.utils.runs.clean_run_info`) and ``resume_command`` made from the folder's
    path, never taken from the file. ``root`` may also be a run directory itself (that run), or, with
    ``nested`` (``equirl runs``; not a sweep report, which would pool sweeps), a folder of sweep folders
    without runs of its own (the runs one level down). A ``run.json`` that cannot be
    read is listed too, with status ``unreadable`` and the reason in ``error``.

    :raises ConfigError: ``root`` does not exist or is not a folder.
    """
    from equirl.utils.runs import clean_run_info, resume_command

    root = Path(root)
    if not root.exists():
        raise ConfigError(f"folder {root} does not exist (no runs there)")
    if not root.is_dir():
        raise ConfigError(f"{root} is a file, not a folder of run directories")

    def holds_run(d: Path) -> bool:
        return d.is_dir() and (d / RUN_JSON).exists()

    if holds_run(root):  # a run directory itself
        dirs = [root]
    else:
        dirs = sorted(p for p in root.iterdir() if holds_run(p))
        if not dirs and nested:  # a folder of sweep folders: their runs, one level down
            dirs = sorted(
                q
                for p in root.iterdir()
                if p.is_dir() and not p.is_symlink()
                for q in p.iterdir()
                if holds_run(q)
            )
    out = []
    for d in dirs:
        try:
            info, bad = clean_run_info(read_run(d))
        except CheckpointError as exc:
            out.append({"run_dir": str(d), "status": "unreadable", "error": str(exc)})
            continue
        info["run_dir"] = str(d)
        info["status"] = effective_status(info, d)
        info["resume_command"] = resume_command(d, info.get("command"))
        if bad:
            info["invalid"] = bad
        out.append(info)
    out.sort(key=lambda i: str(i.get("started_at") or ""))
    return out


# --- graceful SIGINT / SIGTERM ----------------------------------------------------------------------


@dataclass
class SignalMode:
    """How :func:`graceful_stop` answers a signal: ``polling`` while training checks the stop event at
    each rollout boundary; once off (the final evaluation, which checks nothing), the first signal raises
    :class:`KeyboardInterrupt` at once."""

    polling: bool = True


@contextmanager
def graceful_stop(stop: threading.Event) -> Iterator[SignalMode]:
    """While the block runs, SIGINT / SIGTERM set ``stop`` (training then checkpoints at the next rollout
    boundary and ends); a second signal, or the first once the yielded :class:`SignalMode` is no longer
    ``polling``, raises :class:`KeyboardInterrupt` at once. The previous handlers are restored on exit.
    Outside the main thread (where handlers cannot be set) nothing is installed."""
    mode = SignalMode()
    if threading.current_thread() is not threading.main_thread():
        yield mode
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set() or not mode.polling:
            stop.set()
            raise KeyboardInterrupt
        log.info("%s: stopping at the next checkpoint boundary", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield mode
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- non-finite guard ---------------------------------------------------------------------------------


def _q_net(model: Any) -> Any:
    pol = model.policy
    return pol.q_net if hasattr(pol, "q_net") else getattr(pol, "quantile_net", None)


def nonfinite_reason(model: Any, check_q: bool = True) -> str | None:
    """What is non-finite in ``model`` (a parameter, or the Q-values of up to 64 recent replay
    observations: of the Q-network, or of SAC / TD3's critic at the stored actions), or ``None`` when
    everything is finite."""
    import torch

    for name, p in model.policy.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return f"parameter {name}"
    buf = getattr(model, "replay_buffer", None)
    net = _q_net(model)
    critic: Any = getattr(model.policy, "critic", None)
    if not check_q or buf is None or (net is None and critic is None) or buf.size() == 0:
        return None
    end = buf.pos if not buf.full else buf.buffer_size
    obs = torch.as_tensor(np.asarray(buf.observations[max(0, end - 64) : end, 0]), device=model.device)
    with torch.no_grad():
        if net is not None:
            q = net(obs)
        else:
            act = torch.as_tensor(np.asarray(buf.actions[max(0, end - 64) : end, 0]), device=model.device)
            q = torch.cat(critic(obs.float(), act.float()), dim=1)
    if not bool(torch.isfinite(q).all()):
        return "Q-values"
    return None


# --- checkpoints --------------------------------------------------------------------------------------


def replay_buffer_bytes(model: Any) -> int:
    """The estimated size of ``model``'s replay buffer once full (observations stored twice)."""
    buf = getattr(model, "replay_buffer", None)
    if buf is None:
        return 0
    obs = int(np.prod(buf.obs_shape)) * np.dtype(buf.observations.dtype).itemsize
    act = int(np.prod(buf.actions.shape[2:] or (1,))) * np.dtype(buf.actions.dtype).itemsize
    per = 2 * obs + act + 4 + 4 + 4
    return int(buf.buffer_size * buf.n_envs * per)


@dataclass
class Checkpoint:
    """A checkpoint read back by :func:`load_checkpoint` (its files' bytes, signatures checked).

    :param step: env steps done.
    :param model: the model zip's path.
    :param model_bytes: the model zip, as verified.
    :param replay_buffer: the replay buffer pickle, as verified (``None``: not saved).
    :param extra: the RNG states and training env (``None`` when not saved).
    :param state: the callbacks' state (eval history, best, partial flag...).
    """

    step: int
    model: Path
    model_bytes: bytes
    replay_buffer: bytes | None
    extra: dict[str, Any] | None
    state: dict[str, Any]


def _rng_state(model: Any) -> dict[str, Any]:
    import torch

    space_rng = getattr(model.action_space, "_np_random", None)
    return {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "action_space": None if space_rng is None else space_rng.bit_generator.state,
    }


def restore_rng(model: Any, rng: dict[str, Any]) -> None:
    """Restore the RNG states saved with a checkpoint (after ``load``, which seeds them afresh)."""
    import torch

    random.setstate(rng["random"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("action_space") is not None:
        model.action_space.seed(0)  # creates the generator, whose state is then replaced
        model.action_space.np_random.bit_generator.state = rng["action_space"]


#: the names :func:`save_checkpoint` gives its files (the only ones it ever deletes)
_CKPT_FILE = re.compile(r"^(model|replay_buffer|extra)_\d+\.(zip|pkl)$")


def save_checkpoint(
    model: Any,
    run_dir: Path,
    state: dict[str, Any],
    replay_buffer: bool,
    exact: bool,
) -> Path:
    """Write a checkpoint of ``model`` at ``model.num_timesteps`` into ``run_dir/checkpoint/``.

    Every file is signed (:func:`~equirl.utils.io.file_digest`, the signatures kept in ``state.json``):
    :func:`load_checkpoint` restores only files this user's equirl wrote.

    :param model: the SB3 model (its parameters must be finite: checked by the caller).
    :param run_dir: the run directory.
    :param state: the callbacks' state, stored in ``state.json``.
    :param replay_buffer: also save the replay buffer.
    :param exact: also save the RNG states and (when picklable) the training env: only at a rollout
        boundary, where they agree with the model and the buffer.
    :returns: the model zip written.
    """
    d = Path(run_dir) / CHECKPOINT_DIR
    d.mkdir(parents=True, exist_ok=True)
    step = int(model.num_timesteps)
    files: dict[str, str | None] = {"model": f"model_{step}.zip", "replay_buffer": None, "extra": None}
    old = _read_state(d, strict=False)
    kept = {n for n in ((old or {}).get("files") or {}).values() if isinstance(n, str)}
    try:
        atomic_write_stream(d / str(files["model"]), model.save)
        if replay_buffer and getattr(model, "replay_buffer", None) is not None:
            files["replay_buffer"] = buf_name = f"replay_buffer_{step}.pkl"
            atomic_write_stream(d / buf_name, model.save_replay_buffer)
        if exact:
            extra: dict[str, Any] = {"rng": _rng_state(model), "env": None}
            try:
                extra["env"] = pickle_bytes(model.get_env())
            except Exception as exc:  # Atari emulators and the like: the env is reset on resume
                log.info("training env not picklable (%s): a resumed run starts a new episode", exc)
            files["extra"] = extra_name = f"extra_{step}.pkl"
            atomic_write_bytes(d / extra_name, pickle_bytes(extra))
        digests = {key: file_digest(d / name) for key, name in files.items() if name}
        write_json(
            d / "state.json",
            {"step": step, "files": files, "digests": digests, "state": state, "written_at": _now()},
        )
    except BaseException:
        # a checkpoint is whole or not at all: this one's files go (the previous checkpoint, which
        # state.json still names, stays resumable), so a full disk is not filled further by halves
        for name in files.values():
            if isinstance(name, str) and name not in kept:
                with contextlib.suppress(OSError):
                    remove_file(d / name)
        raise
    if old is not None:  # the previous checkpoint's files, now superseded
        for name in (old.get("files") or {}).values():
            if isinstance(name, str) and _CKPT_FILE.match(name) and name not in files.values():
                remove_file(d / name)
    return d / str(files["model"])


def _read_state(d: Path, strict: bool = True) -> dict[str, Any] | None:
    """``checkpoint/state.json`` (``None`` when there is none). ``strict``: a corrupt one, or model files
    without one, is a one-line :class:`CheckpointError` -- never "no checkpoint", which would train again
    from step 0 over a run's work."""
    p = d / "state.json"
    if not p.exists() and not p.is_symlink():
        leftovers = sorted(q.name for q in d.glob("model_*.zip")) if d.is_dir() else []
        if strict and leftovers:
            raise CheckpointError(
                f"{d} holds {leftovers[-1]} but no state.json: the checkpoint is incomplete; not resumed "
                "(nothing was changed)"
            )
        return None
    try:
        data = read_json(contained(d, "state.json", "checkpoint"), "checkpoint state")
    except (ConfigError, CheckpointError) as exc:
        if not strict:
            return None
        raise CheckpointError(f"{exc}; not resumed (nothing was changed)") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        if not strict:
            return None
        raise CheckpointError(f"corrupt {p}: not a checkpoint state; not resumed (nothing was changed)")
    return data


@dataclass(frozen=True)
class CheckpointFiles:
    """``state.json``'s ``files``: the checkpoint's file names inside ``checkpoint/``."""

    model: str
    replay_buffer: str | None = None
    extra: str | None = None


@dataclass(frozen=True)
class CheckpointState:
    """The schema of ``checkpoint/state.json`` (validated by :func:`equirl.config.from_dict`).

    :param step: env steps done.
    :param files: the files of this checkpoint.
    :param digests: each file's signature, by ``files`` key (:func:`~equirl.utils.io.file_digest`).
    :param state: the callbacks' state (evaluation history, best...).
    :param written_at: when it was written.
    """

    step: Annotated[int, Range(ge=0)]
    files: CheckpointFiles
    digests: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    written_at: str | None = None


def load_checkpoint(run_dir: str | Path, trust: bool = False) -> Checkpoint | None:
    """The last checkpoint of a run directory (``None`` when it has none).

    Paths in ``state.json`` must stay inside ``checkpoint/`` (no ``..``, no symlinks), and each file must
    carry this user's signature (see :func:`~equirl.utils.io.read_signed`) unless ``trust``.

    :param run_dir: the run directory.
    :param trust: skip the signature check (``--trust-checkpoint``): the files are unpickled as they are.
    :raises CheckpointError: a corrupt or incomplete checkpoint, a path outside the folder, or an unsigned
        file; in one line.
    """
    d = Path(run_dir) / CHECKPOINT_DIR
    if d.is_symlink():
        raise CheckpointError(f"{d} is a symbolic link: refused (links are not followed)")
    data = _read_state(d)
    if data is None:
        return None
    try:
        st = from_dict(CheckpointState, data, "state.json")
    except ConfigError as exc:
        raise CheckpointError(
            f"corrupt {d / 'state.json'}: {exc}; not resumed (nothing was changed)"
        ) from None
    files = {"model": st.files.model, "replay_buffer": st.files.replay_buffer, "extra": st.files.extra}
    step, digests = st.step, st.digests

    def signed(key: str) -> bytes | None:
        name = files[key]
        if not name:
            return None
        return read_signed(contained(d, name, "checkpoint state"), digests.get(key), trust)

    model = signed("model")
    assert model is not None
    buf = signed("replay_buffer")
    extra_blob = signed("extra")
    extra = None
    if extra_blob is not None:
        extra = trusted_loads(extra_blob)  # signed by this user's equirl (or trusted by the user)
        if not isinstance(extra, dict):
            raise CheckpointError(f"corrupt {d / str(files['extra'])}: not a checkpoint's extra state")
    return Checkpoint(step, d / st.files.model, model, buf, extra, dict(st.state))
