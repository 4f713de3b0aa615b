"""Property-based fuzzing of every CLI entry point against the contract (see tests/fuzz_support.py):
exit 0 with a valid result, or exit 2 with exactly one ``error: `` line on stderr; no traceback, no ANSI
codes, no marker file (crafted pickles / YAML tags never run), no pre-existing file changed without
``--overwrite``, nothing written outside the working folder.

Strategies (one test each):

* ``test_fuzz_rl_config_mutations``: the shipped RL configs (DQN / PPO / SAC) with random mutations (set
  any key path to any value, delete keys, add unknown keys, random env / algo / method / method_kwargs),
  run with ``train|pretrain cfg.yaml --dry-run``.
* ``test_fuzz_rl_config_raw_yaml``: raw YAML text: random text, duplicated keys, alias bombs, 10,000-deep
  nesting, ``!!python/...`` tags, binary garbage, an empty file, a directory, huge files.
* ``test_fuzz_sweep_files``: mutated ``configs/sweeps/*.yaml`` run with ``sweep FILE --executor serial``;
  ``equirl sweep`` has no ``--dry-run``, so ``--out`` holds an unreadable ``sweep.json`` -- the sweep is
  fully validated (every trial's config) and then refused before anything runs or is written.
* ``test_fuzz_sweep_report``: ``sweep report DIR`` on crafted sweep folders (mutated ``sweep.json``,
  ``run.json``, ``evaluations.json``, symlinks out of the folder, a pre-existing ``report``).
* ``test_fuzz_agent_files``: ``eval`` of a corrupted agent zip (truncated, flipped bytes, members
  replaced by pickle payloads, ``:serialized:`` payloads) beside a corrupted ``vecnormalize.pkl``.
* ``test_fuzz_run_folders``: ``train --resume``, ``runs`` and ``sweep report`` on corrupted run folders
  (``run.json``, ``checkpoint/state.json``, checkpoint files, ``config.yaml``, ``tb/`` linked outside).
* ``test_fuzz_cli_argv``: random argument lists over every subcommand and its flags (read from the
  parser), with values that are paths to fixture files, garbage, huge / negative numbers, unicode.

Budgets: the ``ci`` profile (default; derandomized) runs few examples per test; ``HYPOTHESIS_PROFILE=fuzz``
(``make fuzz``) many. Each example has a wall-clock deadline (SIGALRM, ``FUZZ_DEADLINE_S``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fuzz_support as fz

#: HYPOTHESIS_PROFILE=fuzz (`make fuzz`): the long profile; anything else: the CI one (both registered in
#: tests/conftest.py)
_PROFILE = "equirl-fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "equirl-fuzz-ci"
#: the profile of this module's tests (applied per test, so other modules' settings are left alone)
PROFILE = settings.get_profile(_PROFILE)

RL_BASES = ["dqn-CartPole-v1", "ppo-CartPole-v1", "sac-Pendulum-v1"]
SWEEP_FILES = sorted((fz.CONFIGS / "sweeps").glob("*.yaml"))
ENVS = [
    "CartPole-v1",
    "Acrobot-v1",
    "Pendulum-v1",
    "LunarLander-v3",
    "equirl/GridWorld-v0",
    "InvertedPendulum-v5",
    "ALE/Pong-v5",
    "MountainCar-v0",
    "NoSuchEnv-v0",
    "mod:CartPole-v1",
    "gymnasium.envs.classic_control:CartPoleEnv",
    "",
]
ALGOS = ["dqn", "qrdqn", "ppo", "a2c", "sac", "td3", "ddpg", "tqc", "DQN", "", "dqn ", "her"]


def _methods() -> list[str]:
    from equirl.registry import method_names

    return [*method_names(augment=True, pseudo=True, aliases=True), "all", "nope", "", "BASE"]


def _method_options() -> list[str]:
    from equirl.registry import METHODS

    specs = METHODS.values() if isinstance(METHODS, dict) else METHODS
    return [*sorted({o.name for s in specs for o in s.options}), "bogus", ""]


METHODS = _methods()
METHOD_OPTIONS = _method_options()


def _resolved(name: str) -> dict[str, Any]:
    """A shipped config as written, plus every key its resolved form has (so mutations can reach keys
    the file leaves at their defaults)."""
    from equirl.config import to_dict
    from equirl.rl.config import load_rl_config

    path = fz.CONFIGS / "rl" / f"{name}.yaml"
    return {"raw": yaml.safe_load(path.read_text()), "full": to_dict(load_rl_config(path))}


BASES = {n: _resolved(n) for n in RL_BASES}

# --- values -------------------------------------------------------------------------------------------

SPECIAL_INTS = [
    0,
    1,
    -1,
    2,
    3,
    7,
    64,
    255,
    256,
    1000,
    2**31 - 1,
    2**31,
    2**32,
    2**63,
    -(2**63),
    10**12,
    -(10**12),
    10**400,  # beyond float: int -> float conversions overflow
]
SPECIAL_FLOATS = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    0.0,
    1e308,
    -1e308,
    5e-324,
    1e-300,
    0.5,
    1.5,
    0.99,
    1e-3,
    -0.5,
]
PATH_STRINGS = [
    "files/agent.zip",
    "files/payload.zip",
    "files/torchpayload.zip",
    "files/garbage.bin",
    "files/dir",
    "files/nope.zip",
    "files/afile",
    "files/afile/x",
    "files/cfg.yaml",
    "files/payload.yaml",
    "files/payload.pkl",
    "files/vecnormalize.pkl",
    "files/link_out",
    "files/agent_dir",
    "files/runs",
    "../../../outside/secret.txt",
    "../../../outside",
    "../../etc",
    "../../etc/passwd",
    "/etc/passwd",
    "/dev/null",
    "runs",
    ".",
    "..",
]
SPECIAL_STRINGS = [
    "",
    " ",
    "mod:CartPole-v1",
    "CartPole-v1",
    "Pendulum-v1",
    "NoSuchEnv-v0",
    "base",
    "equitune",
    "equizero",
    "lambda",
    "auto",
    "multigroup",
    "dqn",
    "ppo",
    "sac",
    "linear",
    "max_value",
    "nll",
    "λ",
    "日本語",
    "\u202e\u200b",
    "x" * 3000,
    "\x00",
    "line\nbreak",
    "{",
    "- x",
    "*a",
    "~",
    "null",
    "yes",
    "1e5",
    ".nan",
    "-.inf",
    "0x10",
    "1_000",
    "{env}",
    "%s%n",
    "$HOME",
    "~/x",
    "[bold]x[/]",
    "\x1b[31mred",
    *PATH_STRINGS,
]

ints = st.one_of(st.sampled_from(SPECIAL_INTS), st.integers(-1000, 1000))
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
strings = st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(max_size=12))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, strings)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(strings, ints), inner, max_size=3)
    ),
    max_leaves=8,
)
unknown_keys = st.one_of(
    st.sampled_from(["gama", "hyperparams", "eval", "env", "__class__", "!!python", "", "0", "<<"]),
    st.text(min_size=1, max_size=8),
)


STRING_VALUES = {
    "env": ENVS,
    "algo": ALGOS,
    "method": METHODS,
    "target": METHODS,
    "lr_schedule": ["constant", "linear", "cosine", "", "Linear"],
    "ent_coef": ["auto", "auto_0.1", "auto_-1", "auto_nan", "0.1", "x", ""],
    "baseline": METHODS,
}


def typed_values(key: Any, orig: Any) -> Any:
    """Values of the original's type, mostly near the valid range (so mutated configs get past the
    first checks and reach the deep ones)."""
    if isinstance(orig, bool):
        return st.one_of(st.booleans(), st.sampled_from([0, 1, "true", "yes", None]))
    if isinstance(orig, int):
        big = [0, 1, 16, 64, 256, 1000, 2048, 10**5, 10**6, 10**9, 10**9 + 1, 2**31, 2**32, 10**400]
        return st.one_of(st.integers(-2, 10), st.sampled_from(big))
    if isinstance(orig, float):
        odd = [0.0, 1.0, 1e-8, 0.999999, 1e3, math.nan, math.inf, 1e-320]
        return st.one_of(st.floats(-0.5, 1.5, allow_nan=False), st.sampled_from(odd))
    if isinstance(orig, str):
        return st.sampled_from(STRING_VALUES.get(key, SPECIAL_STRINGS))
    if isinstance(orig, list):
        return st.lists(st.one_of(st.integers(-1, 300), st.sampled_from([0, 10**6, 1.5, "64"])), max_size=4)
    if orig is None:
        return st.one_of(st.none(), st.integers(-1, 1000), st.booleans(), st.sampled_from(PATH_STRINGS))
    return values


def ops_for(
    paths: list[tuple[Any, ...]],
    *,
    extra_sets: list[tuple[tuple[str, ...], Any]],
    typed: dict[tuple[Any, ...], Any] | None = None,
) -> Any:
    """Mutation ops over ``paths``: set / delete / add-unknown, plus ``extra_sets`` (path, strategy) and,
    for the paths in ``typed`` (path -> original value), sets to values of the original's type."""
    path = st.sampled_from(paths)
    parents = st.sampled_from([(), *[p for p in paths if len(p) == 1]])
    kinds = [
        st.tuples(st.just("set"), path, values),
        st.tuples(st.just("del"), path),
        st.tuples(st.just("add"), parents, unknown_keys, values),
        *[st.tuples(st.just("set"), st.just(p), s) for p, s in extra_sets],
    ]
    if typed:
        tpath = st.sampled_from(sorted(typed, key=str))
        tset = tpath.flatmap(lambda p: st.tuples(st.just("set"), st.just(p), typed_values(p[-1], typed[p])))
        kinds += [tset, tset, tset]
    return st.lists(st.one_of(*kinds), min_size=0, max_size=4)


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _detail(data: Any) -> Any:
    return json.loads(json.dumps(data, default=repr))


# --- the per-example fixture files --------------------------------------------------------------------


@pytest.fixture(scope="session")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real artifacts made once per session: a vecnormalize.pkl, a tiny finished run (and a sweep folder
    of two copies), tiny vision / language checkpoints."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    base = tmp_path_factory.mktemp("fuzz-art")
    vec = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]))
    vec.reset()
    vec.save(str(base / "vecnormalize.pkl"))
    vec.close()

    old = os.getcwd()
    os.chdir(base)
    try:
        res = fz.run_cli(
            [
                "train",
                str(fz.CONFIGS / "rl" / "dqn-CartPole-v1.yaml"),
                "--set",
                "timesteps=300",
                "--set",
                "eval.freq=128",
                "--set",
                "eval.episodes=1",
                "--set",
                "eval.final_episodes=2",
                "--set",
                "checkpoint.freq=100",
                "--set",
                "log.equi_freq=0",
                "--set",
                "out=runs",
                "--no-progress",
            ],
            deadline_s=300,
        )
    finally:
        os.chdir(old)
    assert res.code == 0, res.err + (res.exc or "")
    (run,) = [p for p in (base / "runs").iterdir() if p.is_dir()]
    assert (run / "checkpoint" / "state.json").is_file(), sorted(p.name for p in run.rglob("*"))

    # an interrupted copy: what `train --resume` continues
    interrupted = base / "interrupted" / run.name
    shutil.copytree(run, interrupted, symlinks=True)
    info = json.loads((interrupted / "run.json").read_text())
    info.update(status="interrupted", ended_at=None)
    (interrupted / "run.json").write_text(json.dumps(info, indent=2))

    # a sweep folder of two finished trials (base, equitune)
    from equirl.rl.sweep import TRIAL_FILE, run_fingerprint

    sweep = base / "sweep"
    sweep.mkdir()
    trials = []
    for i, method in enumerate(["base", "equitune"]):
        name = f"CartPole-v1__{method}__0"
        d = sweep / f"{name}__{1000 + i}"
        shutil.copytree(run, d, symlinks=True)
        info = json.loads((d / "run.json").read_text())
        info["method"] = method
        (d / "run.json").write_text(json.dumps(info, indent=2))
        (d / TRIAL_FILE).unlink(missing_ok=True)
        trials.append(
            {
                "name": name,
                "env": "CartPole-v1",
                "method": method,
                "seed": 0,
                "exp": method,
                "variant": "",
                "point": {"method": method},
                "timesteps": 300,
                "fingerprint": run_fingerprint(d),
            }
        )
    manifest = {
        "sweep": {
            "config": "dqn-CartPole-v1",
            "grid": {"method": ["base", "equitune"]},
            "timesteps": 300,
            "eval": {},
            "set": {},
            "baseline": "base",
            "scores": {},
            "source": None,
        },
        "fingerprint": "0" * 64,
        "trials": trials,
        "history": [],
    }
    (sweep / "sweep.json").write_text(json.dumps(manifest, indent=2))

    import torch

    from equirl.language.config import ModelConfig, PretrainConfig
    from equirl.language.train import build_model, save_checkpoint
    from equirl.vision.models import SmallCNN, save_cnn

    save_cnn(SmallCNN(in_channels=1, image_size=16, width=2, hidden=4), base / "vision.pt")
    lcfg = PretrainConfig(model=ModelConfig(hidden=4, embedding=4))
    save_checkpoint(base / "lang.pt", build_model(lcfg.model), lcfg, {})
    torch.save({"format": "x", "path": Path("/etc")}, base / "pathpickle.pt")
    return {
        "base": base,
        "vecnorm": base / "vecnormalize.pkl",
        "run": run,
        "interrupted": interrupted,
        "sweep": sweep,
        "vision": base / "vision.pt",
        "lang": base / "lang.pt",
        "pathpickle": base / "pathpickle.pt",
    }


def populate(ws: fz.Workspace, art: dict[str, Path]) -> None:
    """ws.files: the fixture files generated inputs point at (payloads name this example's MARKER)."""
    f = ws.files
    agent = fz.AGENT_ZIP.read_bytes()
    (f / "agent.zip").write_bytes(agent)
    data = zipfile_read(agent, "data")
    (f / "payload.zip").write_bytes(
        fz.rezip(agent, {"data": fz.serialized_payload_data(data, ws.marker, None)})
    )
    (f / "torchpayload.zip").write_bytes(
        fz.rezip(agent, {"policy.pth": fz.payload_torch(ws.marker), "pytorch_variables.pth": None})
    )
    (f / "garbage.bin").write_bytes(bytes(range(256)) * 4 + b"\xff\xfe\x00")
    (f / "afile").write_text("a file, not a folder\n")
    (f / "dir").mkdir()
    (f / "payload.pkl").write_bytes(fz.payload_pickle(ws.marker))
    shutil.copy(fz.CONFIGS / "rl" / "dqn-CartPole-v1.yaml", f / "cfg.yaml")
    (f / "payload.yaml").write_text(fz.yaml_payloads(ws.marker)[1])
    shutil.copy(art["vecnorm"], f / "vecnormalize.pkl")
    (f / "link_out").symlink_to(ws.outside)
    (f / "agent_dir").mkdir()
    (f / "agent_dir" / "CartPole-v1.zip").write_bytes(agent)
    (f / "agent_dir" / "vecnormalize.pkl").write_bytes(fz.payload_pickle(ws.marker))
    (f / "runs").mkdir()
    fz.copy_tree(art["interrupted"], f / "runs" / art["interrupted"].name)
    (f / "guard").mkdir()
    (f / "guard" / "sweep.json").write_text("[]\n")  # not a manifest: every sweep is refused
    fz.copy_tree(art["sweep"], f / "sweep")
    shutil.copy(art["vision"], f / "vision.pt")
    shutil.copy(art["lang"], f / "lang.pt")
    shutil.copy(art["pathpickle"], f / "pathpickle.pt")
    (f / "text.pt").write_text("not a checkpoint\n")
    (f / "images").mkdir()


def zipfile_read(blob: bytes, name: str) -> bytes:
    import io
    import zipfile

    return zipfile.ZipFile(io.BytesIO(blob)).read(name)


# --- 1. RL run configs: dict mutations -----------------------------------------------------------------


def _leaf_values(d: Any, prefix: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    out: dict[tuple[Any, ...], Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                out.update(_leaf_values(v, (*prefix, k)))
            else:
                out[(*prefix, k)] = v
    return out


def _rl_ops() -> Any:
    paths = sorted(
        {p for b in BASES.values() for p in fz.key_paths(b["full"])} | {("hyperparams", "n_envs")}, key=str
    )
    typed: dict[tuple[Any, ...], Any] = {}
    for b in BASES.values():
        typed.update(_leaf_values(b["full"]))
    kwargs = st.dictionaries(st.sampled_from(METHOD_OPTIONS), values, max_size=3)
    return ops_for(
        paths,
        extra_sets=[
            (("env",), st.sampled_from(ENVS)),
            (("algo",), st.sampled_from(ALGOS)),
            (("method",), st.sampled_from(METHODS)),
            (("method_kwargs",), kwargs),
            (("init_from",), st.sampled_from(PATH_STRINGS)),
            (("symmetry",), st.sampled_from([*PATH_STRINGS, "CartPole-v1", "Acrobot-v1"])),
            (
                ("out",),
                st.sampled_from(["runs", "files/afile", "files/afile/x", "files/link_out", "files/dir"]),
            ),
        ],
        typed=typed,
    )


@PROFILE
@given(
    base=st.sampled_from(RL_BASES),
    full=st.booleans(),
    ops=_rl_ops(),
    command=st.sampled_from(["train", "pretrain"]),
)
def test_fuzz_rl_config_mutations(
    art: dict[str, Path], base: str, full: bool, ops: list[Any], command: str
) -> None:
    data = fz.apply_ops(BASES[base]["full" if full else "raw"], ops)
    with fz.workspace() as ws:
        populate(ws, art)
        (ws.work / "cfg.yaml").write_text(_dump(data), encoding="utf-8")
        before = fz.snapshot(ws.root)
        res = fz.run_cli([command, "cfg.yaml", "--dry-run"])
        fz.check(
            ws,
            res,
            before,
            what="rl-config",
            expect_ok=r"^ok: ",
            detail={"base": base, "ops": _detail(ops), "config": _detail(data)},
        )


# --- 2. RL run configs: raw YAML text ------------------------------------------------------------------


def _raw_yaml(marker_index: int, kind: str, text: str, blob: bytes, n: int) -> tuple[str, Any]:
    """(kind, content): content is str (text), bytes, or None for a directory."""
    base = (fz.CONFIGS / "rl" / "dqn-CartPole-v1.yaml").read_text()
    lines = [ln for ln in base.splitlines() if ln and not ln.startswith("#")]
    if kind == "text":
        return kind, text
    if kind == "binary":
        return kind, blob
    if kind == "empty":
        return kind, ""
    if kind == "dir":
        return kind, None
    if kind == "dupkey":
        ln = lines[n % len(lines)]
        return kind, base + "\n" + ln + "\n"
    if kind == "laughs":
        levels = 3 + n % 8
        doc = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for i in range(1, levels):
            doc.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
        return kind, base + "\n" + "\n".join(doc) + f"\nhyperparams:\n  net_arch: *a{levels - 1}\n"
    if kind == "deep":
        depth = [100, 1000, 10_000][n % 3]
        which = n % 4
        if which == 0:
            return kind, "env: " + "[" * depth + "]" * depth + "\n"
        if which == 1:
            return kind, "env: " + "{a: " * depth + "1" + "}" * depth + "\n"
        if which == 2:
            return kind, "".join("  " * i + "k:\n" for i in range(min(depth, 2000))) + "  " * depth + "v\n"
        return kind, "[" * depth + "]" * depth
    if kind == "tag":
        return kind, "@marker@" + str(marker_index)
    if kind == "huge":
        return kind, base + "# " + "x" * (16 * 2**20) + "\n"
    if kind == "splice":  # random text inserted into the real config
        at = n % (len(base) + 1)
        return kind, base[:at] + text + base[at:]
    if kind == "bom":
        return kind, "\ufeff" + base.replace("\n", "\r\n")
    if kind == "multidoc":
        return kind, base + "\n---\n" + base
    if kind == "merge":
        return kind, "x: &x {env: Acrobot-v1}\n<<: *x\n" + base
    if kind == "bignum":  # Python refuses int('1' + 5000 zeros): a ValueError inside the YAML parser
        key = ["timesteps", "seed", "partial_fraction"][n % 3]
        number = ["1" + "0" * 5000, "0x" + "f" * 5000, "1" + "0" * 4299, "1e" + "9" * 5000][(n // 3) % 4]
        kept = "\n".join(ln for ln in base.splitlines() if not ln.startswith(f"{key}:"))
        return kind, f"{kept}\n{key}: {number}\n"
    raise AssertionError(kind)


@PROFILE
@given(
    kind=st.sampled_from(
        [
            "text",
            "binary",
            "empty",
            "dir",
            "dupkey",
            "laughs",
            "deep",
            "tag",
            "huge",
            "splice",
            "bom",
            "multidoc",
            "merge",
            "bignum",
        ]
    ),
    text=st.text(max_size=60),
    blob=st.binary(max_size=200),
    n=st.integers(0, 10_000),
    command=st.sampled_from(["train", "pretrain"]),
)
def test_fuzz_rl_config_raw_yaml(
    art: dict[str, Path], kind: str, text: str, blob: bytes, n: int, command: str
) -> None:
    kind, content = _raw_yaml(0, kind, text, blob, n)
    with fz.workspace() as ws:
        cfg = ws.work / "cfg.yaml"
        if isinstance(content, str) and content.startswith("@marker@"):
            payloads = fz.yaml_payloads(ws.marker)
            content = payloads[n % len(payloads)]
        if content is None:
            cfg.mkdir()
        elif isinstance(content, bytes):
            cfg.write_bytes(content)
        else:
            cfg.write_text(content, encoding="utf-8", errors="surrogatepass")
        before = fz.snapshot(ws.root)
        res = fz.run_cli([command, "cfg.yaml", "--dry-run"])
        shown = content if not isinstance(content, str) or len(content) < 2000 else content[:300] + "..."
        fz.check(
            ws, res, before, what="rl-raw-yaml", expect_ok=r"^ok: ", detail={"kind": kind, "content": shown}
        )


# --- 3. sweep files ------------------------------------------------------------------------------------

SWEEPS = {p.stem: yaml.safe_load(p.read_text()) for p in SWEEP_FILES}


def _sweep_paths() -> list[tuple[Any, ...]]:
    paths = {p for d in SWEEPS.values() for p in fz.key_paths(d)}
    paths |= {("grid", "seed", "range"), ("grid", "hyperparams.learning_rate"), ("scores",)}
    paths |= {("scores", "CartPole-v1", k) for k in ("min", "max", "threshold")}
    return sorted(paths, key=str)


ranges = st.lists(st.one_of(ints, floats, strings), max_size=4).map(lambda r: {"range": r})
config_entries = st.one_of(
    st.sampled_from(["dqn-CartPole-v1", "dqn-Acrobot-v1", "ppo-CartPole-v1", "nope", "", *PATH_STRINGS]),
    st.fixed_dictionaries(
        {
            "config": st.sampled_from(
                ["dqn-CartPole-v1", "sac-Pendulum-v1", "files/cfg.yaml", "files/payload.yaml"]
            )
        },
        optional={
            "timesteps": ints,
            "eval": st.dictionaries(
                st.sampled_from(["freq", "episodes", "stop_at", "x"]), values, max_size=2
            ),
            "set": st.dictionaries(
                st.sampled_from(["init_from", "hyperparams.gamma", "seed", "x.y"]), values
            ),
            "label": strings,
        },
    ),
)


@PROFILE
@given(
    base=st.sampled_from(sorted(SWEEPS)),
    ops=ops_for(
        _sweep_paths(),
        extra_sets=[
            (("grid", "method"), st.lists(st.sampled_from(METHODS), max_size=4)),
            (("grid", "seed"), st.one_of(ranges, st.lists(ints, max_size=3))),
            (("grid", "env"), st.lists(st.sampled_from(ENVS), max_size=3)),
            (("config",), st.one_of(config_entries, st.lists(config_entries, max_size=3))),
            (("baseline",), st.sampled_from(METHODS)),
        ],
        typed={p: v for d in SWEEPS.values() for p, v in _leaf_values(d).items()},
    ),
    raw=st.sampled_from([None, None, None, None, "tag", "laughs", "deep", "binary", "dir"]),
    n=st.integers(0, 1000),
)
def test_fuzz_sweep_files(art: dict[str, Path], base: str, ops: list[Any], raw: str | None, n: int) -> None:
    data = fz.apply_ops(SWEEPS[base], ops)
    with fz.workspace() as ws:
        populate(ws, art)
        sweep = ws.work / "sweep.yaml"
        if raw is None:
            sweep.write_text(_dump(data), encoding="utf-8")
        else:
            _, content = _raw_yaml(0, raw, "", bytes(range(n % 256)), n)
            if raw == "tag":
                payloads = fz.yaml_payloads(ws.marker)
                content = payloads[n % len(payloads)]
            if content is None:
                sweep.mkdir()
            elif isinstance(content, bytes):
                sweep.write_bytes(content)
            else:
                sweep.write_text(content)
        before = fz.snapshot(ws.root)
        # no `sweep --dry-run` exists: the guard folder's unreadable sweep.json refuses every valid sweep
        # after full validation, before anything is written
        # validating a sweep loads every trial's config (~7 ms each): up to MAX_TRIALS (10,000) is ~70 s of
        # legitimate work before the refusal, not a hang
        argv = ["sweep", "sweep.yaml", "--executor", "serial", "--out", "files/guard"]
        res = fz.run_cli(argv, deadline_s=max(fz.DEADLINE_S, 150))
        fz.check(ws, res, before, what="sweep-file", detail={"base": base, "ops": _detail(ops), "raw": raw})


# --- 4. sweep report on crafted sweep folders ----------------------------------------------------------

SWEEP_TARGETS = ["sweep.json", "run.json", "evaluations.json", "config.yaml", "sweep_trial.json"]


def _clear(p: Path) -> None:
    """Remove whatever is at ``p`` (file, link, folder)."""
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def _mutate_json_file(p: Path, ops: list[Any], style: str, n: int, ws: fz.Workspace) -> None:
    """Mutate a JSON (or YAML) file: ops on its data, or replace / corrupt it wholesale."""
    if p.exists() and not p.is_file() and not p.is_symlink():  # an earlier edit made it a folder / FIFO
        _clear(p)  # (reading a FIFO would block this test)
    if style == "ops":
        try:
            data = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
        except (ValueError, OSError, RecursionError, yaml.YAMLError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        out = fz.apply_ops(data, ops)
        p.unlink(missing_ok=True)
        if p.suffix == ".json":
            p.write_text(json.dumps(out, default=repr))  # NaN / Infinity allowed: a crafted file
        else:
            p.write_text(_dump(out))
    elif style == "garbage":
        p.unlink(missing_ok=True)
        p.write_bytes(bytes((i * 37 + n) % 256 for i in range(n % 300)))
    elif style == "truncate":
        blob = p.read_bytes() if p.is_file() else b""
        p.unlink(missing_ok=True)
        p.write_bytes(blob[: n % (len(blob) + 1)])
    elif style == "deep":
        p.unlink(missing_ok=True)
        p.write_text(fz.deep_json([70, 1000, 100_000][n % 3]))
    elif style == "huge-number":
        p.unlink(missing_ok=True)
        p.write_text('{"status": "finished", "steps_done": 1' + "0" * 5000 + ', "evaluations": [1e999]}')
    elif style == "nonobject":
        p.unlink(missing_ok=True)
        p.write_text(["[]", "null", "1", '"x"', "[1, 2]", "true"][n % 6])
    elif style == "delete":
        p.unlink(missing_ok=True)
    elif style == "dir":
        p.unlink(missing_ok=True)
        p.mkdir()
    elif style == "link-out":
        p.unlink(missing_ok=True)
        p.symlink_to(ws.outside / "secret.txt")
    elif style == "link-dangling":
        p.unlink(missing_ok=True)
        p.symlink_to(ws.outside / "nothing-here")
    elif style == "fifo":
        p.unlink(missing_ok=True)
        os.mkfifo(p)
    else:
        raise AssertionError(style)


json_styles = st.sampled_from(
    [
        "ops",
        "ops",
        "ops",
        "garbage",
        "truncate",
        "deep",
        "huge-number",
        "nonobject",
        "delete",
        "dir",
        "link-out",
        "link-dangling",
        "fifo",
    ]
)
RUN_JSON_PATHS = [
    ("status",),
    ("steps_done",),
    ("total_timesteps",),
    ("env",),
    ("method",),
    ("seed",),
    ("best",),
    ("best", "mean_return"),
    ("best", "timestep"),
    ("final",),
    ("final", "mean_return"),
    ("last_eval",),
    ("pid",),
    ("host",),
    ("started_at",),
    ("command",),
    ("config_sha256",),
    ("checkpoint",),
    ("checkpoint", "path"),
    ("error",),
    ("resume_command",),
]
SWEEP_JSON_PATHS = [
    ("sweep",),
    ("sweep", "scores"),
    ("sweep", "baseline"),
    ("sweep", "grid"),
    ("trials",),
    ("fingerprint",),
    ("history",),
    ("scores", "CartPole-v1"),
    ("sweep", "scores", "CartPole-v1"),
]
EVAL_PATHS = [("evaluations",), ("timesteps",), ("results",)]
#: plausible originals of run.json / sweep.json / state.json leaves (typed mutations)
TYPED_RECORDS: dict[tuple[Any, ...], Any] = {
    ("status",): "finished",
    ("steps_done",): 512,
    ("total_timesteps",): 300,
    ("seed",): 0,
    ("pid",): 1,
    ("best", "mean_return"): 9.7,
    ("best", "timestep"): 256,
    ("final", "mean_return"): 9.7,
    ("final", "timestep"): 512,
    ("last_eval", "timestep"): 512,
    ("checkpoint", "step"): 256,
    ("checkpoint", "path"): "checkpoint/model_256.zip",
    ("env",): "CartPole-v1",
    ("method",): "base",
    ("command",): "train",
    ("step",): 256,
    ("sweep", "baseline"): "base",
    ("sweep", "timesteps"): 300,
    ("stopped_early",): False,
}
json_ops = ops_for(
    RUN_JSON_PATHS + SWEEP_JSON_PATHS + EVAL_PATHS,
    extra_sets=[
        (("status",), st.sampled_from(["finished", "running", "interrupted", "failed", "stale", "", "λ"])),
        (("trials",), st.lists(st.dictionaries(st.sampled_from(["name", "fingerprint", "variant"]), values))),
        (
            ("evaluations",),
            st.lists(st.dictionaries(st.sampled_from(["timestep", "mean_return", "std_return"]), values)),
        ),
        (
            ("sweep", "scores", "CartPole-v1"),
            st.dictionaries(st.sampled_from(["min", "max", "threshold"]), values),
        ),
    ],
    typed=TYPED_RECORDS,
)
report_flags = st.lists(
    st.sampled_from(
        [
            ["--no-plots"],
            ["--json"],
            ["--reps", "100"],
            ["--reps", "99"],
            ["--baseline", "equitune"],
            ["--baseline", "nope"],
            ["--baseline", ""],
        ]
    ),
    max_size=3,
)


@PROFILE
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(SWEEP_TARGETS), st.integers(0, 1), json_styles, json_ops, st.integers(0, 10**6)
        ),
        min_size=1,
        max_size=3,
    ),
    extra=st.sampled_from(
        [None, "report-link-out", "report-file", "report-file-link", "run-link-out", "nested", "empty-dir"]
    ),
    flags=report_flags,
)
def test_fuzz_sweep_report(
    art: dict[str, Path], edits: list[Any], extra: str | None, flags: list[list[str]]
) -> None:
    with fz.workspace() as ws:
        populate(ws, art)
        sweep = ws.files / "sweep"
        runs = sorted(p for p in sweep.iterdir() if p.is_dir())
        for target, which, style, ops, n in edits:
            p = sweep / target if target == "sweep.json" else runs[which] / target
            if p.exists() or p.is_symlink() or style in ("ops", "garbage", "deep", "nonobject"):
                _mutate_json_file(p, ops, style, n, ws)
        if extra == "report-link-out":
            (sweep / "report").symlink_to(ws.outside / "dir")
        elif extra == "report-file":
            (sweep / "report").write_text("a file where the report folder goes\n")
        elif extra == "report-file-link":
            (sweep / "report").mkdir()
            (sweep / "report" / "summary.csv").symlink_to(ws.outside / "secret.txt")
            (sweep / "report" / "summary.md").symlink_to(ws.outside / "secret.txt")
        elif extra == "run-link-out":
            (sweep / "CartPole-v1__lambda__0__1").symlink_to(ws.outside)
        elif extra == "nested":
            fifos = lambda d, names: [n for n in names if (Path(d) / n).is_fifo()]  # opening one blocks
            with contextlib.suppress(shutil.Error, OSError):
                shutil.copytree(runs[0], sweep / "sub" / runs[0].name, symlinks=True, ignore=fifos)
        elif extra == "empty-dir":
            (sweep / "CartPole-v1__lambda__0__2").mkdir()
        before = fz.snapshot(ws.root)
        argv = ["sweep", "report", "files/sweep", *[a for f in flags for a in f]]
        res = fz.run_cli(argv)
        mutable = [str((sweep / "report").relative_to(ws.root))] if extra != "report-link-out" else []
        fz.check(
            ws,
            res,
            before,
            what="sweep-report",
            mutable=mutable,
            detail={"edits": _detail(edits), "extra": extra},
        )


# --- 5. agent zips and vecnormalize.pkl ----------------------------------------------------------------

ZIP_STYLES = [
    "intact",
    "truncate",
    "flip",
    "serialized-payload",
    "serialized-payload-all",
    "member-pickle",
    "member-torch-payload",
    "member-garbage",
    "member-remove",
    "member-extra",
    "data-ops",
    "data-garbage",
    "data-deep",
    "empty",
    "text",
    "dir",
    "link-out",
]
VEC_STYLES = [
    "none",
    "intact",
    "truncate",
    "flip",
    "payload",
    "payload-open",
    "garbage",
    "empty",
    "dir",
    "json",
]
ZIP_MEMBERS = [
    "data",
    "policy.pth",
    "pytorch_variables.pth",
    "policy.optimizer.pth",
    "_stable_baselines3_version",
]
DATA_PATHS = [
    ("policy_kwargs",),
    ("policy_kwargs", "net_arch"),
    ("policy_kwargs", "symmetry"),
    ("policy_kwargs", "method"),
    ("policy_kwargs", "method_kwargs"),
    ("observation_space",),
    ("action_space",),
    ("policy_class",),
    ("policy_class", ":serialized:"),
    ("num_timesteps",),
    ("learning_rate",),
    ("exploration_schedule",),
    ("lr_schedule",),
    ("observation_space", ":serialized:"),
    ("observation_space", "shape"),
    ("observation_space", "_shape"),
    ("action_space", "n"),
    ("n_envs",),
]


def corrupt_zip(
    ws: fz.Workspace, blob: bytes, style: str, n: int, member: str, ops: list[Any]
) -> bytes | None:
    if style == "intact":
        return blob
    if style == "truncate":
        return blob[: n % len(blob)]
    if style == "flip":
        rnd = random.Random(n)
        return fz.flip_bytes(
            blob, [rnd.randrange(len(blob)) for _ in range(1 + n % 8)], rnd.randrange(1, 256)
        )
    data = zipfile_read(blob, "data")
    if style == "serialized-payload":
        return fz.rezip(blob, {"data": fz.serialized_payload_data(data, ws.marker, n)})
    if style == "serialized-payload-all":
        return fz.rezip(blob, {"data": fz.serialized_payload_data(data, ws.marker, None)})
    if style == "member-pickle":
        return fz.rezip(blob, {member: fz.payload_pickle(ws.marker, protocol=2 + n % 4)})
    if style == "member-torch-payload":
        return fz.rezip(blob, {member: fz.payload_torch(ws.marker)})
    if style == "member-garbage":
        return fz.rezip(blob, {member: bytes(range(n % 256))})
    if style == "member-remove":
        return fz.rezip(blob, {member: None})
    if style == "member-extra":
        return fz.rezip(blob, {}, {["../../../outside/x", "/abs", "data.pkl", "x" * 300][n % 4]: b"hi"})
    if style == "data-ops":
        doc = json.loads(data)
        return fz.rezip(blob, {"data": json.dumps(fz.apply_ops(doc, ops), default=repr).encode()})
    if style == "data-garbage":
        return fz.rezip(blob, {"data": b"\x00\xff{" + bytes(n % 100)})
    if style == "data-deep":
        return fz.rezip(blob, {"data": fz.deep_json([100, 100_000][n % 2]).encode()})
    if style == "empty":
        return b""
    if style == "text":
        return b"not a zip\n"
    return None  # dir / link-out: made by the caller


def corrupt_pickle_file(ws: fz.Workspace, blob: bytes, style: str, n: int) -> bytes | None:
    rnd = random.Random(n)
    if style == "intact":
        return blob
    if style == "truncate":
        return blob[: n % max(len(blob), 1)]
    if style == "flip":
        if not blob:
            return b"\x80"
        return fz.flip_bytes(
            blob, [rnd.randrange(len(blob)) for _ in range(1 + n % 8)], rnd.randrange(1, 256)
        )
    if style == "payload":
        return fz.payload_pickle(ws.marker, protocol=n % 6)
    if style == "payload-open":
        return fz.payload_pickle(ws.marker, kind="open")
    if style == "garbage":
        return bytes(rnd.randrange(256) for _ in range(n % 500))
    if style == "empty":
        return b""
    if style == "json":
        return b'{"obs_rms": {"mean": [0, 0, 0, 0], "var": [1e999]}}'
    return None


@PROFILE
@given(
    zstyle=st.sampled_from(ZIP_STYLES),
    vstyle=st.sampled_from(VEC_STYLES),
    member=st.sampled_from(ZIP_MEMBERS),
    ops=ops_for(
        DATA_PATHS,
        extra_sets=[(("policy_kwargs", "method"), st.sampled_from(METHODS))],
    ),
    n=st.integers(0, 10**6),
    as_folder=st.booleans(),
    method=st.sampled_from(["base", "base", "base", "equitune"]),
)
def test_fuzz_agent_files(
    art: dict[str, Path],
    zstyle: str,
    vstyle: str,
    member: str,
    ops: list[Any],
    n: int,
    as_folder: bool,
    method: str,
) -> None:
    with fz.workspace() as ws:
        folder = ws.work / "agent"
        folder.mkdir()
        z = folder / "CartPole-v1.zip"
        blob = corrupt_zip(ws, fz.AGENT_ZIP.read_bytes(), zstyle, n, member, ops)
        if zstyle == "dir":
            z.mkdir()
        elif zstyle == "link-out":
            (ws.outside / "agent.zip").write_bytes(fz.AGENT_ZIP.read_bytes())
            z.symlink_to(ws.outside / "agent.zip")
        else:
            assert blob is not None
            z.write_bytes(blob)
        if vstyle != "none":
            v = folder / "vecnormalize.pkl"
            if vstyle == "dir":
                v.mkdir()
            else:
                vblob = corrupt_pickle_file(ws, art["vecnorm"].read_bytes(), vstyle, n)
                assert vblob is not None
                v.write_bytes(vblob)
        before = fz.snapshot(ws.root)
        agent = "agent" if as_folder else "agent/CartPole-v1.zip"
        argv = ["eval", "--agent", agent, "--env", "CartPole-v1", "--method", method, "--episodes", "1"]
        res = fz.run_cli(argv)
        fz.check(
            ws,
            res,
            before,
            what="agent-files",
            detail={"zip": zstyle, "vecnormalize": vstyle, "member": member, "n": n, "ops": _detail(ops)},
        )


# --- 6. run folders: train --resume, runs, sweep report ------------------------------------------------

RUN_TARGETS = [
    "run.json",
    "checkpoint/state.json",
    "checkpoint/model_256.zip",
    "checkpoint/replay_buffer_256.pkl",
    "checkpoint/extra_256.pkl",
    "config.yaml",
    "evaluations.json",
    "model.zip",
    "tb",
    "checkpoint",
]
STATE_PATHS = [
    ("step",),
    ("files",),
    ("files", "model"),
    ("files", "replay_buffer"),
    ("files", "extra"),
    ("digests",),
    ("digests", "model"),
    ("digests", "extra"),
    ("digests", "replay_buffer"),
    ("state",),
    ("state", "eval"),
    ("state", "eval", "timesteps"),
    ("state", "eval", "results"),
    ("state", "eval", "best_mean_reward"),
    ("state", "scorer_fit"),
]
SAFE_CONFIG_PATHS = [
    ("env",),
    ("algo",),
    ("method",),
    ("method_kwargs",),
    ("symmetry",),
    ("init_from",),
    ("out",),
    ("seed",),
    ("log", "tensorboard"),
    ("checkpoint", "replay_buffer"),
    ("hyperparams", "net_arch"),
]
FILE_NAMES = st.sampled_from(
    [
        "model_256.zip",
        "../model.zip",
        "../../../../outside/secret.txt",
        "/etc/passwd",
        "extra_256.pkl",
        "",
        ".",
        "..",
        "state.json",
        "nope.zip",
        "model_256.zip/x",
    ]
)
run_ops = ops_for(
    RUN_JSON_PATHS + STATE_PATHS + SAFE_CONFIG_PATHS,
    extra_sets=[
        (("status",), st.sampled_from(["interrupted", "running", "failed", "finished", "stale", "", "λ"])),
        (("pid",), st.sampled_from([0, 1, os.getpid(), -1, 2**31, 2**64, "1", None, True])),
        (("files", "model"), FILE_NAMES),
        (("files", "extra"), FILE_NAMES),
        (("files", "replay_buffer"), FILE_NAMES),
        (("step",), st.one_of(ints, strings, floats)),
    ],
    typed={
        **TYPED_RECORDS,
        **{p: v for p, v in _leaf_values(BASES["dqn-CartPole-v1"]["full"]).items() if p in SAFE_CONFIG_PATHS},
    },
)
BLOB_STYLES = ["truncate", "flip", "payload", "payload-open", "torch-payload", "garbage", "empty"]


@PROFILE
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(RUN_TARGETS),
            st.sampled_from(
                [*BLOB_STYLES, "ops", "ops", "deep", "nonobject", "delete", "dir", "link-out", "yaml-tag"]
            ),
            run_ops,
            st.integers(0, 10**6),
            st.booleans(),
        ),
        min_size=1,
        max_size=3,
    ),
    entry=st.sampled_from(["resume", "resume", "resume-trust", "runs", "runs-json", "report"]),
)
def test_fuzz_run_folders(art: dict[str, Path], edits: list[Any], entry: str) -> None:
    import hashlib

    with fz.workspace() as ws:
        parent = ws.work / "runs"
        parent.mkdir()
        run = parent / art["interrupted"].name
        fz.copy_tree(art["interrupted"], run)
        payload_in_checkpoint = False
        for target, style, ops, n, fix_sha in edits:
            p = run / target
            if target in ("tb", "checkpoint"):
                if style in ("link-out", "ops", "dir"):
                    shutil.rmtree(p, ignore_errors=True)
                    p.unlink(missing_ok=True) if p.is_symlink() else None
                    p.symlink_to(ws.outside / "dir")
                continue
            if style == "yaml-tag":
                if target == "config.yaml":
                    _clear(p)
                    p.write_text(fz.yaml_payloads(ws.marker)[n % len(fz.yaml_payloads(ws.marker))])
                continue
            if style in BLOB_STYLES:
                if p.is_dir() and not p.is_symlink():
                    continue
                blob = p.read_bytes() if p.is_file() else b""
                if style == "torch-payload":
                    new = fz.payload_torch(ws.marker)
                else:
                    new = corrupt_pickle_file(ws, blob, style, n)
                assert new is not None
                _clear(p)
                p.write_bytes(new)
                payload_in_checkpoint |= "payload" in style
                continue
            _mutate_json_file(p, ops, style, n, ws)
            if target == "config.yaml" and fix_sha and (run / "run.json").is_file():
                # the config's SHA-256 in run.json is no secret: an attacker recomputes it
                try:
                    info = json.loads((run / "run.json").read_text())
                    if isinstance(info, dict) and p.is_file():
                        info["config_sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
                        (run / "run.json").write_text(json.dumps(info))
                except (ValueError, OSError, RecursionError):
                    pass
        if entry.startswith("resume"):
            argv = ["train", "--resume", str(run.relative_to(ws.work)), "--no-progress"]
            if entry == "resume-trust" and not payload_in_checkpoint:
                argv.append("--trust-checkpoint")  # trusting a payload would run it, by design
            mutable = [str(run.relative_to(ws.root))]
        elif entry.startswith("runs"):
            argv = ["runs", "runs"] + (["--json"] if entry == "runs-json" else [])
            mutable = []
        else:
            argv = ["sweep", "report", "runs", "--no-plots", "--reps", "100"]
            mutable = [str((parent / "report").relative_to(ws.root))]
        before = fz.snapshot(ws.root)
        res = fz.run_cli(argv)
        fz.check(ws, res, before, what="run-folder", mutable=mutable, detail={"edits": _detail(edits)})


# --- 7. random argument lists --------------------------------------------------------------------------


def _leaves() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command path -> its parser, read from the CLI's own parser."""
    from equirl.cli import build_parser

    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        out[path] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, (*path, name))

    walk(build_parser(), ())
    return out


PARSERS = _leaves()
#: commands whose valid runs take minutes: every generated argv gets one certain refusal
COSTLY = {
    ("demo",),
    ("bench", "symmetrizers"),
    ("bench", "product"),
    ("bench", "rl"),
    ("bench", "vision"),
    ("bench", "language-scan"),
    ("bench", "language-gpt2"),
    ("vision", "pretrain"),
    ("vision", "finetune"),
    ("language", "pretrain"),
    ("language", "gpt2-generate"),
    ("language", "gpt2-fairness"),
}
NUMBER_TOKENS = [
    "0",
    "1",
    "2",
    "-1",
    "3",
    "10",
    "1e3",
    "nan",
    "inf",
    "-inf",
    "-0",
    "0.5",
    "1" + "0" * 13,
    "4294967296",
    "1" + "0" * 400,
    "x",
    "",
]
SMALL_TOKENS = ["1", "2", "0", "-1", "nan", "x", "1" + "0" * 13, "1" + "0" * 400]
SET_TOKENS = [
    "timesteps=100",
    "seed=4294967296",
    "timesteps=1" + "0" * 400,
    "hyperparams.gamma=2",
    "hyperparams.learning_rate=.nan",
    "train.lr=.nan",
    "train.epochs=1",
    "out=files/afile/x",
    "out=../../../outside/x",
    "init_from=files/payload.zip",
    "method=auto",
    "method=lambda",
    "env=Acrobot-v1",
    "seed=-1",
    "model.hidden=-1",
    "data.size=6",
    "=1",
    "a",
    "a.b.c=[",
    "hyperparams=1",
    "x=!!python/object/apply:os.system ['true']",
    "symmetry=files/garbage.bin",
    "checkpoint=files/vision.pt",
    "checkpoint=files/payload.pkl",
]
VALUE_TOKENS = [
    *PATH_STRINGS,
    "files/vision.pt",
    "files/lang.pt",
    "files/text.pt",
    "files/pathpickle.pt",
    "files/images",
    "files/sweep",
    "files/runs/" + "{run}",
    *NUMBER_TOKENS,
    "CartPole-v1",
    "Acrobot-v1",
    "NoSuchEnv-v0",
    "base",
    "equitune",
    "auto",
    "all",
    "equizero:proxy=max_value",
    "equizero:proxy=",
    "lambda:lambda_hidden=-1",
    "rot90",
    "flip",
    "C4xC2",
    "λ",
    "日本語",
    " ",
    "--",
    "-x",
    "\x1b[31m",
    "a" * 2000,
]
#: flag -> the values it gets (bounded work)
FLAG_VALUES = {
    "--episodes": ["1"],
    "--seeds": SMALL_TOKENS,
    "--steps": SMALL_TOKENS,
    "--limit": ["1", "2", "0", "-1", "x"],
    "--n-train": ["5", "6", "1", "0", "-1", "x", "1" + "0" * 13],
    "--finetune-epochs": ["0", "1", "-1", "x"],
    "--batch-size": SMALL_TOKENS,
    "--reps": ["100", "99", "0", "x", "1" + "0" * 13],
    "--set": SET_TOKENS,
    "--cpus": SMALL_TOKENS,
    "--address": ["auto", "127.0.0.1:1", "", "x"],
}


#: positional dest -> the values it mostly gets
POS_VALUES = {
    "config": [
        "files/cfg.yaml",
        "files/payload.yaml",
        "files/garbage.bin",
        "files/dir",
        "files/nope.yaml",
        "CartPole-v1",
        str(fz.CONFIGS / "rl" / "ppo-CartPole-v1.yaml"),
        str(fz.CONFIGS / "vision" / "pretrain_digits.yaml"),
        str(fz.CONFIGS / "vision" / "finetune_lambda.yaml"),
        str(fz.CONFIGS / "language" / "scan_lstm_add_jump.yaml"),
        str(fz.CONFIGS / "language" / "gpt2_tiny.yaml"),
    ],
    "sweep": [
        "report",
        "report",
        "report",
        "smoke",
        "files/cfg.yaml",
        "files/garbage.bin",
        "files/dir",
        "nope",
    ],
    "dir": [
        "files/sweep",
        "files/runs",
        "files/dir",
        "files/afile",
        "files/nope",
        "../../../outside",
        "files/link_out",
    ],
    "env": [
        "CartPole-v1",
        "Acrobot-v1",
        "Pendulum-v1",
        "equirl/GridWorld-v0",
        "NoSuchEnv-v0",
        "files/garbage.bin",
        "files/cfg.yaml",
        "files/payload.yaml",
        str(fz.REPO / "equirl" / "rl" / "envs" / "CartPole-v1.yaml"),
    ],
    "checkpoint": [
        "files/vision.pt",
        "files/lang.pt",
        "files/text.pt",
        "files/pathpickle.pt",
        "files/payload.pkl",
        "files/agent.zip",
        "files/garbage.bin",
        "files/dir",
        "files/nope.pt",
    ],
    "folder": ["files/images", "files/dir", "files/afile", "files/nope"],
}


def _actions(p: argparse.ArgumentParser) -> tuple[list[argparse.Action], list[argparse.Action]]:
    opts = [a for a in p._actions if a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    pos = [a for a in p._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    return opts, pos


@st.composite
def argvs(draw: Any) -> tuple[list[str], tuple[str, ...]]:
    path = draw(st.sampled_from(sorted(PARSERS)))
    parser = PARSERS[path]
    opts, pos = _actions(parser)
    argv: list[str] = list(path)

    def value_for(a: argparse.Action) -> str:
        flag = next((s for s in a.option_strings if s.startswith("--")), "")
        if flag in FLAG_VALUES:
            return draw(st.sampled_from(FLAG_VALUES[flag]))
        if not a.option_strings and a.dest in POS_VALUES and draw(st.integers(0, 4)):
            return draw(st.sampled_from(POS_VALUES[a.dest]))
        if a.choices and not isinstance(a.choices, dict):
            return draw(
                st.one_of(st.sampled_from(sorted(map(str, a.choices))), st.sampled_from(VALUE_TOKENS))
            )
        return draw(st.one_of(st.sampled_from(VALUE_TOKENS), st.text(max_size=8)))

    chosen = draw(st.lists(st.sampled_from(opts), max_size=4)) if opts else []
    for a in chosen:
        if a.option_strings in (["-h", "--help"], ["--version"], ["-v", "--verbose"]) and draw(
            st.integers(0, 4)
        ):
            continue
        argv.append(draw(st.sampled_from(a.option_strings)))
        if a.nargs == 0:
            continue
        count = draw(st.integers(1, 3)) if a.nargs in ("+", "*") else 1
        argv.extend(value_for(a) for _ in range(count))
    for a in pos:
        if draw(st.integers(0, 5)) == 0:
            continue  # a missing positional
        argv.append(value_for(a))
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(VALUE_TOKENS)))  # a stray token
    return argv, path


def _drop_flag(argv: list[str], flag: str) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def bound_cost(argv: list[str], path: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Make an argv cheap: train/pretrain --dry-run (unless resuming), eval --episodes 1, a sweep only
    into the guard folder (its unreadable sweep.json refuses every sweep), one certain refusal for the
    costly commands. Returns (argv, folders the command may change, relative to ROOT)."""
    argv = list(argv)
    mutable: list[str] = []
    top = path[:1]
    if top in (("train",), ("pretrain",)):
        resume = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--resume"]
        if resume and resume[-1]:  # a resume (of the tiny fixture run: cheap), or refused
            mutable.append("d1/d2/cwd/files/runs")
        else:  # `--resume ''` resumes nothing: the config would train
            argv.append("--dry-run")
    elif top == ("eval",):
        argv = [*_drop_flag(argv, "--episodes"), "--episodes", "1"]
    elif top == ("sweep",):
        argv = [*_drop_flag(argv, "--out"), "--out", "files/guard", "--executor", "serial"]
        mutable.append("d1/d2/cwd/files/sweep/report")  # `sweep report files/sweep` writes its report there
    elif top == ("bench",) or path in COSTLY:
        if path == ("bench",) or "-h" in argv or "--help" in argv:
            pass
        elif any(a.option_strings == ["--set"] for a in PARSERS[path]._actions):
            argv += ["--set", "fuzz_unknown_key=1"]  # strict configs refuse it (after any file error)
        else:
            argv.append("--fuzz-unknown-flag")
    elif path == ("language", "eval"):
        argv = [*_drop_flag(argv, "--limit"), "--limit", "2"]
    elif path == ("vision", "eval"):
        argv = [*_drop_flag(argv, "--n-train"), "--n-train", "5"]
    return argv, mutable


@PROFILE
@given(gen=argvs())
def test_fuzz_cli_argv(art: dict[str, Path], gen: tuple[list[str], tuple[str, ...]]) -> None:
    argv, path = gen
    with fz.workspace() as ws:
        populate(ws, art)
        run_name = art["interrupted"].name
        argv = [a.replace("{run}", run_name) for a in argv]
        argv, mutable = bound_cost(argv, path)
        before = fz.snapshot(ws.root)
        res = fz.run_cli(argv)
        expect = r"^ok: " if "--dry-run" in argv and "--help" not in argv and "-h" not in argv else None
        fz.check(ws, res, before, what="cli-argv", expect_ok=expect, mutable=mutable, outputs=argv)


# --- 8. what the fuzzer found: minimal inputs, kept as regression cases ----------------------------------

_RL = str(fz.CONFIGS / "rl" / "dqn-CartPole-v1.yaml")
_LONG = "a" * 300  # longer than NAME_MAX (255): os.stat raises ENAMETOOLONG
_BIG = "1" + "0" * 400  # an int beyond float range


def _sac_on_cartpole(ws: fz.Workspace, art: dict[str, Path]) -> None:
    text = (fz.CONFIGS / "rl" / "sac-Pendulum-v1.yaml").read_text()
    (ws.work / "cfg.yaml").write_text(text.replace("env: Pendulum-v1", "env: CartPole-v1"))


def _sweep_mixed_keys(ws: fz.Workspace, art: dict[str, Path]) -> None:
    fz.copy_tree(art["sweep"], ws.work / "sweep")
    (run,) = [p for p in (ws.work / "sweep").iterdir() if p.name.startswith("CartPole-v1__base")]
    (run / "config.yaml").write_text("1: a\nb: c\n")


def _sweep_report_link(ws: fz.Workspace, art: dict[str, Path]) -> None:
    fz.copy_tree(art["sweep"], ws.work / "sweep")
    (ws.work / "sweep" / "report").symlink_to(ws.outside / "dir")


FOUND: list[tuple[str, list[str], Any, str | None]] = [
    # (id, argv, setup(ws, art) or None, the bug while it was open: xfail reason; None once fixed)
    ("no-command", [], None, None),
    ("bench-no-sub", ["bench"], None, None),
    ("vision-no-sub", ["vision"], None, None),
    ("language-no-sub", ["language"], None, None),
    (
        "dry-run-sac-on-discrete-env",
        ["train", "cfg.yaml", "--dry-run"],
        _sac_on_cartpole,
        None,
    ),
    (
        "dry-run-dqn-on-continuous-env",
        ["pretrain", _RL, "--set", "env=Pendulum-v1", "--dry-run"],
        None,
        None,
    ),
    (
        "seed-2**32",
        ["train", _RL, "--set", "seed=4294967296", "--dry-run"],
        None,
        None,
    ),
    (
        "timesteps-beyond-float",
        ["train", _RL, "--set", f"timesteps={_BIG}", "--dry-run"],
        None,
        None,
    ),
    (
        "batch-size-beyond-float",
        ["pretrain", _RL, "--set", f"hyperparams.batch_size={_BIG}", "--dry-run"],
        None,
        None,
    ),
    (
        "int-beyond-str-digits-limit",
        ["train", _RL, "--set", "seed=0x" + "f" * 5000, "--dry-run"],
        None,
        None,
    ),
    (
        "ale-banner-on-stderr",
        ["train", _RL, "--set", "env=ALE/Pong-v5", "--dry-run"],
        None,
        None,
    ),
    (
        "ansi-in-unrecognized-arguments",
        ["envs", "\x1b[31mred"],
        None,
        None,
    ),
    (
        "scan-generate-out-name-too-long",
        ["language", "scan-generate", "--out", _LONG],
        None,
        None,
    ),
    (
        "eval-out-name-too-long",
        ["eval", "--agent", "x.zip", "--env", "CartPole-v1", "--out", _LONG],
        None,
        None,
    ),
    (
        "pretrain-export-name-too-long",
        ["pretrain", _RL, "--export", _LONG, "--dry-run"],
        None,
        None,
    ),
    (
        "sweep-report-run-config-mixed-key-types",
        ["sweep", "report", "sweep", "--no-plots"],
        _sweep_mixed_keys,
        None,
    ),
    (
        "sweep-report-follows-report-symlink",
        ["sweep", "report", "sweep", "--no-plots"],
        _sweep_report_link,
        None,
    ),
]


@pytest.mark.parametrize(
    ("argv", "setup"),
    [
        pytest.param(argv, setup, id=name, marks=[pytest.mark.xfail(strict=False, reason=bug)] if bug else [])
        for name, argv, setup, bug in FOUND
    ],
)
def test_fuzz_found_inputs(art: dict[str, Path], argv: list[str], setup: Any) -> None:
    with fz.workspace() as ws:
        if setup is not None:
            setup(ws, art)
        before = fz.snapshot(ws.root)
        res = fz.run_cli(argv)
        mutable = ["d1/d2/cwd/sweep/report"] if argv[:2] == ["sweep", "report"] else []
        expect = r"^ok: " if "--dry-run" in argv else None
        fz.check(ws, res, before, what="found", expect_ok=expect, mutable=mutable, outputs=argv)
