"""A Hugging Face hub cache seeded on disk, as ``huggingface_hub`` lays one out after a download, so that the
``hf://`` path is tested without network: ``models--ORG--REPO/refs/main`` names a commit, whose
``snapshots/<commit>/`` files link to ``blobs/<sha256>``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: the commit the seeded ``main`` points at (any 40 hex digits)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def seed_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Put ``files`` (name -> content) into ``cache`` as the snapshot of ``repo_id`` at ``main``.

    :returns: the snapshot folder.
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(repo / "blobs" / digest, link.parent), link)
    return snap


def hub_files_of_zoo_folder(folder: Path, algo: str, env_name: str) -> dict[str, bytes]:
    """The files rl_zoo3's ``push_to_hub`` uploads for the zoo run ``folder`` (``{algo}/{env}_{n}/``): the
    final model as ``{algo}-{env}.zip`` and the ``{env}/`` subfolder's files at the top (the statistics as
    ``vec_normalize.pkl``), plus a README and a metrics zip that equirl does not read."""
    sub = folder / env_name
    out = {f"{algo}-{env_name}.zip": (folder / f"{env_name}.zip").read_bytes()}
    for name in ("config.yml", "args.yml", "env_kwargs.yml"):
        if (sub / name).is_file():
            out[name] = (sub / name).read_bytes()
    if (sub / "vecnormalize.pkl").is_file():
        out["vec_normalize.pkl"] = (sub / "vecnormalize.pkl").read_bytes()
    out["README.md"] = b"---\nlibrary_name: stable-baselines3\n---\n"
    out["train_eval_metrics.zip"] = b"PK\x05\x06" + b"\0" * 18
    return out
