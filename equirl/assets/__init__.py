"""The files equirl ships beside its code: ``agents/``, ``envs/`` and ``configs/``.

They live once, at the top of the source tree (the design card's layout). A built wheel carries them
inside the package as ``equirl/assets/{agents,envs,configs}`` (a setuptools ``package_dir`` mapping in
``setup.py``), so an installed equirl finds them wherever it runs; a source checkout (an editable
install, or ``PYTHONPATH``) reads the top-level folders directly. There is no second copy.
"""

from __future__ import annotations

from pathlib import Path

from equirl.errors import ConfigError, EquirlError

__all__ = ["ASSET_KINDS", "asset_path", "find_config", "list_configs"]

#: the shipped folders
ASSET_KINDS = ("agents", "envs", "configs")

_HERE = Path(__file__).resolve().parent


def asset_path(kind: str) -> Path:
    """The folder of shipped ``kind`` files (``"agents"``, ``"envs"`` or ``"configs"``).

    :raises EquirlError: ``kind`` is unknown, or this installation lacks the folder.
    """
    if kind not in ASSET_KINDS:
        raise EquirlError(f"unknown asset folder {kind!r}; choose one of {', '.join(ASSET_KINDS)}")
    packaged = _HERE / kind  # inside an installed wheel
    if packaged.is_dir():
        return packaged
    source = _HERE.parents[1] / kind  # a source checkout: <root>/equirl/assets -> <root>/kind
    if source.is_dir():
        return source
    raise EquirlError(
        f"this equirl installation has no {kind}/ folder (reinstall equirl from a wheel or a clone)"
    )


def list_configs(section: str | None = None) -> list[str]:
    """Names of the shipped configs (``rl/dqn-CartPole-v1``...), optionally those of one ``section``."""
    root = asset_path("configs")
    names = sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.y*ml"))
    return [n for n in names if section is None or n.startswith(f"{section}/")]


def find_config(name: str | Path, section: str | None = None) -> Path:
    """A config file from a path, or the name of a shipped one.

    ``name`` is tried as a path first; otherwise as a shipped config, with or without the ``configs/``
    and section folders and the ``.yaml`` suffix: ``dqn-CartPole-v1-finetune-equizero``,
    ``rl/dqn-CartPole-v1.yaml``, ``configs/rl/dqn-CartPole-v1.yaml`` (the README's paths, from any folder).

    :param name: a path or a shipped config's name.
    :param section: the config family to look in first (``"rl"``, ``"language"``, ``"vision"``).
    :raises ConfigError: neither a file nor a shipped config (one line listing the shipped names).
    """
    path = Path(name)
    if path.is_file():
        return path
    root = asset_path("configs")
    stem = Path(name).as_posix().removeprefix("./").removeprefix("configs/")  # README paths work anywhere
    for suffix in (".yaml", ".yml"):
        stem = stem.removesuffix(suffix)
    candidates = [root / section / stem] if section else []
    candidates += [root / stem, *(d / stem for d in sorted(root.iterdir()) if d.is_dir())]
    for cand in candidates:
        for suffix in (".yaml", ".yml"):
            if cand.with_name(cand.name + suffix).is_file():
                return cand.with_name(cand.name + suffix)
    if path.exists():
        raise ConfigError(f"config {name} is not a file")
    shipped = [n.split("/", 1)[-1] for n in list_configs(section)] or list_configs()
    kind = f"shipped {section} configs" if section and list_configs(section) else "shipped configs"
    raise ConfigError(f"config file not found: {name} (nor one of the {kind}: {', '.join(shipped)})")
