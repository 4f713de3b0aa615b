"""Hostile agent files: a pickled entry that would hang in hashing, an object array that would crash the
interpreter, or a zip bomb is refused in one line, quickly, with nothing run."""

from __future__ import annotations

import base64
import json
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from equirl.errors import CheckpointError
from equirl.rl.build import load_pretrained
from equirl.rl.safe_load import read_vecnormalize
from tests.core.test_file_layer import _hash_bomb

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agents" / "dqn" / "CartPole-v1" / "CartPole-v1.zip"


def _with_entry(tmp_path: Path, key: str, blob: bytes) -> Path:
    with zipfile.ZipFile(AGENT) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = json.loads(members["data"])
    data[key] = {":type:": "<class 'dict'>", ":serialized:": base64.b64encode(blob).decode()}
    members["data"] = json.dumps(data).encode()
    out = tmp_path / "crafted.zip"
    with zipfile.ZipFile(out, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return out


@pytest.mark.parametrize(
    "blob, match",
    [
        (_hash_bomb(), "expands to more than"),
        (pickle.dumps({"net_arch": np.array([64, "x"], dtype=object)}), "object arrays"),
        (b"\x80\x04\x95garbage", "malformed pickle"),
    ],
    ids=["hash-bomb", "object-array", "garbage"],
)
def test_hostile_policy_kwargs_are_refused(tmp_path: Path, blob: bytes, match: str) -> None:
    z = _with_entry(tmp_path, "policy_kwargs", blob)
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match=match) as info:
        load_pretrained(z, "CartPole-v1", method="base")
    assert time.monotonic() - t0 < 5 and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "blob, match",
    [(_hash_bomb(), "expands to more than"), (pickle.dumps(np.array([None], dtype=object)), "object arrays")],
    ids=["hash-bomb", "object-array"],
)
def test_hostile_vecnormalize_is_refused(tmp_path: Path, blob: bytes, match: str) -> None:
    p = tmp_path / "vecnormalize.pkl"
    p.write_bytes(blob)
    with pytest.raises(CheckpointError, match=match) as info:
        read_vecnormalize(p)
    assert "\n" not in str(info.value)


def test_zip_bomb_agent_is_refused_before_decompressing(tmp_path: Path) -> None:
    with zipfile.ZipFile(AGENT) as z:
        members = {n: z.read(n) for n in z.namelist()}
    out = tmp_path / "bomb.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, b in members.items():
            z.writestr(n, b)
        z.writestr("extra.pth", b"\0" * (80 * 2**20))
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_pretrained(out, "CartPole-v1", method="base")
