"""Every file equirl reads that could run code, and every file it writes, goes through one guarded layer:
:mod:`equirl.utils.io` (files) and :mod:`equirl.config` (the schema layer's YAML). This test walks the
package's syntax trees and fails on a pickle, a ``torch.load`` / ``torch.save``, a YAML load, a raw
write (``open(..., "w")``, ``write_text``, ``write_bytes``), a rename or a delete anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "equirl"
#: the file layer and the schema layer: the only modules allowed the calls below
ALLOWED = {"utils/io.py", "config.py"}

#: modules whose import means unpickling or raw serialization
BANNED_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
#: dotted calls banned outside the layers (the left part is matched on the last name: ``torch.load``,
#: ``th.load``... are caught through the import alias table below)
BANNED_CALLS = {
    ("torch", "load"),
    ("torch", "save"),
    ("numpy", "load"),
    ("yaml", "load"),
    ("yaml", "safe_load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "load_all"),
    ("yaml", "safe_load_all"),
    ("os", "replace"),
    ("os", "rename"),
    ("os", "remove"),
    ("os", "unlink"),
    ("shutil", "rmtree"),
    ("shutil", "move"),
    ("shutil", "copyfile"),
    ("shutil", "copy"),
    ("shutil", "copy2"),
    ("shutil", "copytree"),
}
#: method names that write or delete whatever object they are called on
BANNED_METHODS = {"write_text", "write_bytes", "unlink", "rmdir", "rename", "replace_file"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> module for ``import numpy as np`` / ``import torch``."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name
    return out


def _write_mode(call: ast.Call, index: int) -> bool:
    """Whether ``open(path, mode)`` (``index`` 1) or ``path.open(mode)`` (``index`` 0) writes."""
    mode = None
    if len(call.args) > index and isinstance(call.args[index], ast.Constant):
        mode = call.args[index].value
    for kw in call.keywords:
        if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
            mode = kw.value.value
    return isinstance(mode, str) and any(c in mode for c in "wax+")


def _is_os(f: ast.Attribute) -> bool:
    """``io.open`` / ``os.fdopen``-style module functions take the path first."""
    return isinstance(f.value, ast.Name) and f.value.id in ("io", "os", "gzip", "bz2", "lzma", "codecs")


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    alias = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        shown = path.relative_to(PKG.parent) if path.is_relative_to(PKG.parent) else path.name
        where = f"{shown}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"{where} imports {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in BANNED_MODULES:
                found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute):
                if isinstance(f.value, ast.Name):
                    mod = alias.get(f.value.id, f.value.id).split(".")[0]
                    if (mod, f.attr) in BANNED_CALLS:
                        found.append(f"{where} calls {mod}.{f.attr}")
                if f.attr in BANNED_METHODS:
                    found.append(f"{where} calls .{f.attr}()")
                if f.attr == "open" and _write_mode(node, 0 if not _is_os(f) else 1):
                    found.append(f"{where} opens a file for writing")
            elif isinstance(f, ast.Name) and f.id == "open" and _write_mode(node, 1):
                found.append(f"{where} opens a file for writing")
    return found


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The walker itself: each banned form is found (so a green run means something)."""
    src = tmp_path / "probe.py"
    src.write_text(
        "import pickle\nimport torch as th\nimport numpy as np\nimport yaml\nfrom cloudpickle import loads\n"
        "th.load('x')\nnp.load('x', allow_pickle=True)\nyaml.safe_load('a')\nopen('f', 'w')\n"
        "open('f', mode='ab')\nfrom pathlib import Path\nPath('x').write_text('y')\nPath('x').unlink()\n"
        "Path('x').open('w')\nPath('x').open(mode='wb')\nimport shutil\nshutil.rmtree('d')\nopen('f')\n"
    )
    got = offences(src)
    assert len(got) == 12, got


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PKG.rglob("*.py") if str(p.relative_to(PKG)) not in ALLOWED),
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_no_raw_file_access_outside_the_layers(path: Path) -> None:
    assert offences(path) == []


# --- the file layer's guards on hostile bytes ------------------------------------------------------------


def _hash_bomb(depth: int = 90) -> bytes:
    """A pickle of ``{t: 1}`` where ``t = (t', t')`` nested ``depth`` times: 1 KB on disk, 2**depth
    values to hash (it would never finish, and ignores SIGINT while it runs)."""
    import pickle

    t: tuple[object, ...] = ()
    for _ in range(depth):
        t = (t, t)
    body = pickle.dumps(t, protocol=2)[2:-1]  # without PROTO and STOP
    return b"\x80\x02}" + body + b"K\x01s."


def test_shared_tuple_hash_bomb_is_refused_before_loading() -> None:
    import time

    from equirl.utils.io import RefusedGlobal, find_global, restricted_loads

    t0 = time.monotonic()
    with pytest.raises(RefusedGlobal, match="expands to more than"):
        restricted_loads(_hash_bomb(), find_global)
    assert time.monotonic() - t0 < 2


def test_plain_shared_references_still_load() -> None:
    """Legitimate sharing (a list used twice) is fine."""
    import pickle

    from equirl.utils.io import find_global, restricted_loads

    shared = [1, 2, 3]
    assert restricted_loads(pickle.dumps({"a": shared, "b": shared, "t": (1, (2, 3))}), find_global) == {
        "a": [1, 2, 3],
        "b": [1, 2, 3],
        "t": (1, (2, 3)),
    }


def test_numpy_object_arrays_are_refused() -> None:
    import pickle

    import numpy as np

    from equirl.utils.io import RefusedGlobal, find_global, restricted_loads

    ok = restricted_loads(pickle.dumps(np.arange(4.0)), find_global)
    assert np.array_equal(ok, np.arange(4.0))
    with pytest.raises(RefusedGlobal, match="object arrays"):
        restricted_loads(pickle.dumps(np.array([1, "a"], dtype=object)), find_global)


@pytest.mark.parametrize("blob", [b"", b"\x80\x04", b"not a pickle", b"\x80\x02Q."])
def test_malformed_pickles_are_refused_in_one_line(blob: bytes) -> None:
    from equirl.utils.io import RefusedGlobal, check_pickle_structure

    with pytest.raises(RefusedGlobal) as info:
        check_pickle_structure(blob)
    assert "\n" not in str(info.value)


def test_zip_bomb_member_is_refused_from_its_declared_size(tmp_path: Path) -> None:
    import zipfile

    from equirl.errors import CheckpointError
    from equirl.rl.safe_load import read_zip_data

    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.writestr("data", "{}")
        f.writestr("policy.pth", b"\0" * (80 * 2**20))
    assert z.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match="zip bomb"):
        read_zip_data(z)


def test_huge_shapes_in_a_zip_are_refused(tmp_path: Path) -> None:
    import json
    import zipfile

    from equirl.errors import CheckpointError
    from equirl.rl.safe_load import _saved_shape

    with pytest.raises(CheckpointError, match="not a shape"):
        _saved_shape({"_shape": [10**30, 4]})
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("data", json.dumps({"observation_space": {"_shape": [2**40]}}))
    assert _saved_shape({"_shape": [4]}) == (4,)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a": ' * 5000 + "1" + "}" * 5000, '{"a": NaN}', '{"a": 1', "\ufeff{}"],
)
def test_json_over_deep_or_corrupt_is_one_line(text: str, tmp_path: Path) -> None:
    from equirl.errors import ConfigError
    from equirl.utils.io import read_json

    p = tmp_path / "run.json"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_json(p, "run state")
    assert "\n" not in str(info.value) and str(p) in str(info.value)


def test_contained_refuses_escapes_and_links(tmp_path: Path) -> None:
    from equirl.errors import CheckpointError
    from equirl.utils.io import contained

    (tmp_path / "ok.zip").write_text("x")
    assert contained(tmp_path, "ok.zip") == tmp_path / "ok.zip"
    (tmp_path / "link").symlink_to("/etc")
    for bad in ("../x", "/etc/passwd", "a/../../x", "link/passwd", "", "a\x00b"):
        with pytest.raises(CheckpointError):
            contained(tmp_path, bad)


def test_refuse_existing_names_the_file_and_the_flag(tmp_path: Path) -> None:
    from equirl.errors import ConfigError
    from equirl.utils.io import refuse_existing

    p = tmp_path / "agent.zip"
    refuse_existing([p], overwrite=False)
    p.write_text("x")
    with pytest.raises(ConfigError, match="--overwrite"):
        refuse_existing([p], overwrite=False)
    refuse_existing([p], overwrite=True)


def test_signatures_round_trip_and_catch_edits(tmp_path: Path) -> None:
    from equirl.errors import CheckpointError
    from equirl.utils.io import file_digest, read_signed

    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    sig = file_digest(p)
    assert read_signed(p, sig, trust=False) == b"abc"
    p.write_bytes(b"abd")
    with pytest.raises(CheckpointError, match="does not match"):
        read_signed(p, sig, trust=False)
    assert read_signed(p, None, trust=True) == b"abd"


@pytest.mark.parametrize(
    "text, match",
    [
        ("a: 1\na: 2", "appears twice"),
        ("a:\n  b: 1\n  b: 2", "appears twice"),
        ("a: &a [*a]", "recursive alias"),
        ("[" * 200 + "]" * 200, "deeper than"),
        ("x: !!python/object/apply:os.system ['touch MARK']", "constructor"),
        ("x: !!python/name:os.system", "constructor"),
        ("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2", r"merge keys .* are not supported: write the keys out"),
    ],
)
def test_strict_yaml(text: str, match: str) -> None:
    from equirl.config import parse_yaml
    from equirl.errors import ConfigError

    with pytest.raises(ConfigError, match=match) as info:
        parse_yaml(text)
    assert "\n" not in str(info.value)


def test_yaml_billion_laughs_is_refused_fast() -> None:
    import time

    from equirl.config import parse_yaml
    from equirl.errors import ConfigError

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for i in range(1, 10):
        name = f"n{i}"
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand"):
        parse_yaml("\n".join(lines))
    assert time.monotonic() - t0 < 2


def test_zoo_yaml_reads_only_the_ordered_dict_tag() -> None:
    from equirl.config import parse_yaml
    from equirl.errors import ConfigError

    text = "!!python/object/apply:collections.OrderedDict\n- - [n_timesteps, 1000]\n  - [policy, MlpPolicy]\n"
    assert parse_yaml(text, zoo=True) == {"n_timesteps": 1000, "policy": "MlpPolicy"}
    with pytest.raises(ConfigError):
        parse_yaml(text)
    with pytest.raises(ConfigError):
        parse_yaml("!!python/object/apply:os.system ['touch MARK']", zoo=True)


@pytest.mark.parametrize("kind", ["folder", "empty", "short", "parent-is-a-file"])
def test_an_unusable_signing_key_is_one_line_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A signing key that is a folder, too short, or cannot be made fails the run before it trains (and
    ``--dry-run`` too), in one line naming the key: every checkpoint would fail to be signed otherwise."""
    from equirl.cli import main
    from equirl.errors import ConfigError
    from equirl.utils.io import signing_key

    key = tmp_path / "key"
    if kind == "folder":
        key.mkdir()
    elif kind in ("empty", "short"):
        key.write_bytes(b"" if kind == "empty" else b"x" * 31)
    else:
        (tmp_path / "afile").write_text("x")
        key = tmp_path / "afile" / "key"
    monkeypatch.setenv("EQUIRL_SIGNING_KEY", str(key))
    with pytest.raises(ConfigError) as err:
        signing_key()
    assert "\n" not in str(err.value) and str(key) in str(err.value)
    out = tmp_path / "runs"
    for extra in (["--dry-run"], []):
        argv = ["train", "dqn-CartPole-v1", "--set", "timesteps=200", "--set", f"out={out}", "--no-progress"]
        assert main(argv + extra) == 2
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and str(key) in err_lines[0]
    assert not out.exists()
    # a good key works again
    monkeypatch.setenv("EQUIRL_SIGNING_KEY", str(tmp_path / "good" / "key"))
    assert len(signing_key()) == 32 and signing_key() == signing_key()
