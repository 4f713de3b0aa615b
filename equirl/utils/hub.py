"""Loading Hugging Face hub models without long retry loops when there is no network.

One rule for every hub download in equirl (CLIP, GPT-2, text classifiers):

1. a local folder is loaded as it is;
2. otherwise the local hub cache is tried first (``local_files_only=True``), which needs no network;
3. if it is not cached and the hub client is in offline mode (its own
   :func:`huggingface_hub.is_offline_mode`, i.e. ``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``
   when ``huggingface_hub`` was imported), or a single short probe of the hub endpoint fails, a one-line
   :class:`~equirl.errors.OfflineError` is raised at once;
4. only then the real ``from_pretrained`` runs with the network (downloads, retries and all).

So a model request without network ends in about a second instead of after the hub client's
retries, and with network nothing changes.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from equirl.errors import EquirlError, OfflineError

__all__ = [
    "PROBE_TIMEOUT",
    "hub_agent_folder",
    "hub_endpoint",
    "hub_offline",
    "hub_reachable",
    "in_hub_cache",
    "is_hub_ref",
    "load_from_hub",
    "require_hub_model",
    "snapshot_folder",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds the connectivity probe may take (name resolution included)
PROBE_TIMEOUT = 1.0

#: an agent on the hub: ``hf://ORG/REPO``, optionally ``@REVISION`` (a branch, tag or commit)
_HUB_REF = re.compile(
    r"hf:/{1,2}([A-Za-z0-9][\w.-]{0,95})/([A-Za-z0-9][\w.-]{0,95})(?:@([\w.-][\w./-]{0,199}))?"
)
#: what of an agent's repository is read (its model zips, YAML files and statistics; not its video, nor
#: its training metrics)
AGENT_FILES = ["*.zip", "*.yml", "*.yaml", "*.pkl"]
_AGENT_IGNORE = ["train_eval_metrics.zip", "*.mp4"]


def hub_offline() -> bool:
    """Whether the hub client is in offline mode (its own setting, read when it was imported)."""
    from huggingface_hub import constants

    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The hub URL the client uses (``$HF_ENDPOINT``, default ``https://huggingface.co``)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """One ``HEAD`` request to the hub endpoint through the hub client's own HTTP session (so its proxy
    and certificate settings apply), bounded by ``timeout`` seconds in all, name resolution included.

    The hub answers its root page with a success (or a redirect, or an authorisation refusal); a
    connection error, no answer in time, or another error status (e.g. a gateway's 404 or 502 for a
    host it cannot reach) counts as unreachable.
    """
    from huggingface_hub.utils import get_session

    url = hub_endpoint()
    result: list[bool] = []

    def probe() -> None:
        try:
            status = int(get_session().head(url, timeout=timeout).status_code)
            log.debug("hub probe of %s: HTTP %d", url, status)
            result.append(status < 400 or status in (401, 403, 405))
        except Exception as exc:  # any transport error means "no hub": requests and httpx differ
            log.debug("hub probe of %s failed: %s", url, exc)
            result.append(False)

    t = threading.Thread(target=probe, name="equirl-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.25)
    return bool(result and result[0])


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def in_hub_cache(name: str, cache_dir: str | Path | None = None) -> bool:
    """Whether the local hub cache holds a snapshot of the repository ``name`` (no network)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(str(name), local_files_only=True, cache_dir=cache_dir)
        return True
    except (OSError, ValueError) as exc:  # not cached, or not a valid repository id
        log.debug("%r is not in the local hub cache: %s", name, exc)
        return False


def require_hub_model(name: str | Path, what: str, cache_dir: str | Path | None = None) -> None:
    """Fail at once, with one :class:`~equirl.errors.OfflineError` line, when ``name`` is neither a local
    folder nor in the local hub cache and the hub is offline or unreachable. Needs only
    ``huggingface_hub`` (no torch, no transformers), so a command can call it before its heavy imports.

    :param name: a hub id or a local folder.
    :param what: how the error line names it (``"CLIP"``, ``"GPT-2 model"``...).
    :param cache_dir: the hub cache folder (default: the standard one).
    """
    name = str(name)
    if Path(name).is_dir() or in_hub_cache(name, cache_dir):
        return
    _require_hub(name, what)


def _require_hub(name: str, what: str) -> None:
    hint = "download it once with network access, or pass a local folder"
    if hub_offline():
        raise OfflineError(
            f"cannot load {what} {name!r}: not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE=1); {hint}"
        )
    if not hub_reachable():
        raise OfflineError(
            f"cannot load {what} {name!r}: not in the local Hugging Face cache and the hub "
            f"({hub_endpoint()}) is unreachable (offline?); {hint}"
        )


def load_from_hub(
    load: Callable[[str, bool], T],
    name: str | Path,
    what: str,
    valid: Callable[[T], bool] | None = None,
    cache_dir: str | Path | None = None,
) -> T:
    """Load ``name`` (a hub id or a local folder) with ``load(name, local_files_only)``, the rule above.

    :param load: e.g. ``lambda n, local: CLIPModel.from_pretrained(n, local_files_only=local)``; import
        the heavy library inside it, so that an offline failure does not wait for that import.
    :param name: a hub id (``"openai/clip-vit-base-patch32"``) or a local folder.
    :param what: how the error line names it (``"CLIP"``, ``"GPT-2 model"``...).
    :param valid: a check of a cache hit (e.g. a tokenizer that found no vocabulary); a failed check
        counts as not cached.
    :param cache_dir: the hub cache folder ``load`` uses (default: the standard one).
    :raises OfflineError: not local, not cached, and the hub offline or unreachable (one line, fast).
    :raises EquirlError: a local folder or a reachable hub that does not hold a loadable model.
    """
    name = str(name)
    if Path(name).is_dir():
        try:
            return load(name, True)
        except (OSError, ValueError) as exc:
            raise EquirlError(f"cannot load {what} from folder {name}: {_first_line(exc)}") from None
    if in_hub_cache(name, cache_dir):
        try:
            obj = load(name, True)
            if valid is None or valid(obj):
                return obj
            log.debug("%s %r: the cached copy is incomplete", what, name)
        except (OSError, ValueError) as exc:
            log.debug("%s %r: the cached copy does not load: %s", what, name, exc)
    _require_hub(name, what)
    try:
        obj = load(name, False)
    except (OSError, ValueError) as exc:
        raise EquirlError(f"cannot load {what} {name!r} from the hub: {_first_line(exc)}") from None
    if valid is not None and not valid(obj):
        raise EquirlError(f"cannot load {what} {name!r} from the hub: the download is incomplete")
    return obj


def snapshot_folder(
    repo_id: str,
    what: str,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
) -> Path:
    """The local folder of a hub repository's files, by the rule above: the local hub cache first (no
    network), else a one-line :class:`~equirl.errors.OfflineError` at once when the hub is offline or
    unreachable, else one download through ``huggingface_hub`` into its cache (reused next time).

    :param repo_id: ``ORG/REPO``.
    :param what: how an error line names it (``"agent"``).
    :param revision: a branch, tag or commit (default: the repository's default branch).
    :param allow_patterns: only files matching these (e.g. ``["*.zip", "*.yml"]``).
    :param ignore_patterns: leaving out files matching these.
    :raises OfflineError: not cached, and the hub offline or unreachable (one line, fast).
    :raises EquirlError: the hub answers but the repository or revision does not exist (one line).
    """
    from huggingface_hub import snapshot_download

    name = repo_id if revision is None else f"{repo_id}@{revision}"

    def download(local: bool) -> Path:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=allow_patterns,
                ignore_patterns=ignore_patterns,
                local_files_only=local,
            )
        )

    try:
        return download(True)
    except Exception as exc:  # not cached (the client's errors differ between versions)
        log.debug("%s %r is not in the local hub cache: %s", what, name, exc)
    _require_hub(name, what)
    from equirl.utils.progress import status

    status("downloading %s %s from the Hugging Face hub (once: it is cached)", what, name)
    try:
        return download(False)
    except Exception as exc:  # any client error: a missing repository, a revision, a lost connection
        raise EquirlError(f"cannot download {what} {name!r} from the hub: {_first_line(exc)}") from None


def is_hub_ref(path: str | Path) -> bool:
    """Whether ``path`` names an agent on the Hugging Face hub (``hf://ORG/REPO[@REVISION]``; a
    :class:`~pathlib.Path` made of one reads ``hf:/ORG/REPO``)."""
    return str(path).startswith("hf:/")


@functools.lru_cache(maxsize=32)
def hub_agent_folder(ref: str) -> Path:
    """The local folder of the hub agent ``ref`` (``hf://ORG/REPO[@REVISION]``): its :data:`AGENT_FILES`,
    from the hub cache or downloaded once into it (:func:`snapshot_folder`: offline, the cache or one line
    at once). Needs only ``huggingface_hub``, so a command can call it before its heavy imports.

    :raises ConfigError: ``ref`` is not of that form.
    :raises OfflineError: not cached and the hub offline or unreachable.
    """
    from equirl.errors import ConfigError
    from equirl.utils.io import printable

    m = _HUB_REF.fullmatch(str(ref))
    if m is None:
        raise ConfigError(
            f"{printable(ref, 200)} is not a hub agent: expected hf://ORG/REPO or hf://ORG/REPO@REVISION "
            "(e.g. hf://sb3/dqn-CartPole-v1)"
        )
    return snapshot_folder(
        f"{m.group(1)}/{m.group(2)}",
        "agent",
        revision=m.group(3),
        allow_patterns=AGENT_FILES,
        ignore_patterns=_AGENT_IGNORE,
    )
