"""Every code block of README.md and docs/**/*.md runs as pasted.

Convention (documented here and in docs/getting-started.md): an HTML comment on the last non-blank line
before a fenced block marks it; a block without a mark must run in the default (fast) suite.

* (no mark)                 -- run by the default suite;
* ``<!-- slow -->``         -- run by the slow suite (``make test-slow``), it takes more than a few seconds;
* ``<!-- needs: hub -->``   -- needs the Hugging Face hub (real GPT-2 / CLIP weights): run offline, and it
  must either succeed (a cached copy) or fail with :class:`~equirl.errors.OfflineError` (Python) / exit
  status 2 with a one-line error saying it is offline (shell), i.e. skipped for that reason only;
* ``<!-- long: REASON -->`` -- not run (minutes to hours: benchmarks, full trainings, a server); REASON
  says why; its ``equirl`` command lines are still parsed by the CLI's own parser;
* ``<!-- setup -->``        -- installing / creating the environment (``pip``, ``venv``, ``make``): what
  ``make setup`` and CI (``.ci/run``) do, not run here; each ``make`` target must exist in the Makefile.

Python blocks (```` ```python ````) are executed, each in a fresh namespace, in a temporary working
directory. Shell blocks (```` ```bash ````, ```` ```sh ````, ```` ```console ````, and ```` ```text ````
blocks whose lines are commands) run in a temporary directory that holds copies of ``configs/``,
``envs/`` and ``agents/``: a block of ``equirl`` lines calls the CLI's ``main`` once per line in this
process; any other block runs as one ``bash -euo pipefail`` script, where ``equirl`` is
``python -m equirl`` with this checkout on ``PYTHONPATH``. Hubs are offline (``HF_HUB_OFFLINE=1``) and
torch runs on one thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from equirl.errors import OfflineError

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*(?P<kind>slow|needs|long|setup)\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
#: a ```text line that starts with one of these is a command (the block is then a shell block)
COMMAND_WORDS = ("equirl", "make", "pip", "python", "python3", "tensorboard", "source", "git", "cd")
SLOW_TIMEOUT_S = 900


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str  # "python" or "shell"
    mark: str  # "", "slow", "needs", "long", "setup"
    arg: str  # the mark's argument ("hub", a reason)
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _is_command(line: str) -> bool:
    words = line.split()
    return bool(words) and words[0] in COMMAND_WORDS


def extract_blocks(path: Path) -> list[Block]:
    """The Python and shell blocks of one Markdown file, with their marks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = len(m.group("indent")), m.group("lang").lower()
        j = i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1 : j]]
        code = "\n".join(body) + "\n"
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mm = MARK.match(lines[k]) if k >= 0 else None
        mark, arg = (mm.group("kind"), mm.group("arg") or "") if mm else ("", "")
        kind = None
        if lang in ("python", "py"):
            kind = "python"
        elif lang in SHELL_LANGS or (
            lang == "text" and any(_is_command(ln) for ln in body if not ln.lstrip().startswith("#"))
        ):
            kind = "shell"
        if kind:
            blocks.append(Block(path, i + 1, kind, mark, arg, code))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for f in DOC_FILES for b in extract_blocks(f)]


def _params(lang: str) -> list[object]:
    out = []
    for b in ALL_BLOCKS:
        if b.lang != lang:
            continue
        slow = b.mark == "slow"
        marks = [pytest.mark.slow] if slow else []
        out.append(pytest.param(b, id=b.id, marks=marks))
    return out


def _workdir(tmp_path: Path) -> Path:
    """A scratch folder with copies of the files the docs refer to by relative path."""
    for name in ("configs", "envs", "agents"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def _commands(code: str) -> list[list[str]]:
    """The command lines of a shell block (continuations joined, comments dropped), as argv lists."""
    text = code.replace("\\\n", " ")
    out = []
    for ln in text.splitlines():
        if ln.lstrip().startswith("$ "):
            ln = ln.lstrip()[2:]
        argv = shlex.split(ln, comments=True)
        if argv:
            out.append(argv)
    return out


def test_marks_are_known_and_explained() -> None:
    assert ALL_BLOCKS, "no code blocks found"
    for b in ALL_BLOCKS:
        if b.mark == "needs":
            assert b.arg == "hub", f"{b.id}: the only need is `hub`, got {b.arg!r}"
        if b.mark == "long":
            assert len(b.arg) > 5, f"{b.id}: `<!-- long: REASON -->` needs a reason"


def test_no_indented_command_blocks() -> None:
    """Commands live in fenced blocks (so they are run), not in 4-space indented blocks."""
    for f in DOC_FILES:
        in_fence = False
        for n, ln in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"^\s*```", ln):
                in_fence = not in_fence
            elif not in_fence and re.match(r"^ {4,}(equirl|make|pip|python) ", ln):
                pytest.fail(
                    f"{f.relative_to(ROOT)}:{n}: an indented command block; use a fenced ```bash block"
                )


@pytest.mark.parametrize("block", _params("shell"))
def test_command_lines_parse(block: Block) -> None:
    """Every ``equirl`` line parses with the CLI's parser (flags and subcommands exist)."""
    from equirl.cli import build_parser

    parser = build_parser()
    for argv in _commands(block.code):
        if argv[0] == "equirl":
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(argv[1:])
            except SystemExit as exc:  # --help exits with 0
                if exc.code not in (0, None):
                    pytest.fail(f"{block.id}: `{shlex.join(argv)}` does not parse (exit {exc.code})")
        if argv[0] == "make":
            makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
            for target in argv[1:]:
                if "=" not in target and not target.startswith("-"):
                    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
                        f"{block.id}: no make {target}"
                    )


@pytest.mark.parametrize("block", _params("python"))
def test_python_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.mark in ("long", "setup"):
        pytest.skip(f"not run: {block.arg or block.mark}")
    monkeypatch.chdir(_workdir(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        exec(compile(block.code, block.id, "exec"), namespace)
    except OfflineError as exc:
        if block.mark != "needs":
            raise
        pytest.skip(f"needs the Hugging Face hub: {exc}")


def _offline_skip(block: Block, rc: int, stderr: str) -> None:
    if rc == 2 and block.mark == "needs" and re.search(r"offline|OfflineError", stderr, re.I):
        pytest.skip(f"needs the Hugging Face hub: {stderr.strip().splitlines()[-1]}")


@pytest.mark.parametrize("block", _params("shell"))
def test_shell_block(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if block.mark in ("long", "setup"):
        pytest.skip(f"not run: {block.arg or block.mark}")
    cwd = _workdir(tmp_path)
    commands = _commands(block.code)
    if all(argv[0] == "equirl" for argv in commands):
        # only `equirl` lines: run them in this process (the CLI's main), which spares the imports
        from equirl.cli import main

        monkeypatch.chdir(cwd)
        for argv in commands:
            try:
                rc = main(argv[1:])
            except SystemExit as exc:  # argparse: --help exits with 0
                rc = exc.code if isinstance(exc.code, int) else 1
            out = capsys.readouterr()
            _offline_skip(block, rc, out.err)
            assert rc == 0, (
                f"{block.id}: `{shlex.join(argv)}` failed (exit {rc}):\n{out.out[-2000:]}\n{out.err[-2000:]}"
            )
        return
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        COLUMNS="120",
        PY=sys.executable,
    )
    script = 'set -euo pipefail\nequirl() { "$PY" -m equirl "$@"; }\n' + block.code
    try:
        res = subprocess.run(
            ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=SLOW_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: did not finish in {SLOW_TIMEOUT_S} s")
    _offline_skip(block, res.returncode, res.stderr)
    assert res.returncode == 0, (
        f"{block.id} failed (exit {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    )


def test_hub_blocks_are_marked_only_for_the_hub() -> None:
    """A ``needs: hub`` block really asks the hub for a model (not a way to hide a broken snippet)."""
    hub_calls = (
        "load_gpt2(",
        "load_clip(",
        "from_pretrained(",
        "hf_text_scorer(",
        "gpt2-generate",
        "clip ",
        "hf://",
    )
    for b in ALL_BLOCKS:
        if b.mark == "needs":
            assert any(c in b.code for c in hub_calls), (
                f"{b.id} is marked `needs: hub` but loads nothing from it"
            )


TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".json", ".csv", ".jsonl", ""}


def test_no_paths_outside_the_repository() -> None:
    """No tracked text file points outside the checkout (``../shared``, absolute ``/work/`` paths)."""
    try:
        files = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    hits = []
    for name in files:
        p = ROOT / name
        if name == this or p.suffix not in TEXT_SUFFIXES or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, ln in enumerate(text.splitlines(), 1):
            if "../shared" in ln or "/work/" in ln:
                hits.append(f"{name}:{n}: {ln.strip()[:100]}")
    assert not hits, "paths outside the repository:\n" + "\n".join(hits)


def test_zoo_config_asks_for_its_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The RL-zoo config's ``init_from`` is a placeholder: without ``--set init_from=...`` the run stops at
    once with one line naming it, and leaves no run directory."""
    from equirl.cli import main

    monkeypatch.chdir(_workdir(tmp_path))
    rc = main(["train", "configs/rl/dqn-CartPole-v1-zoo-lambda.yaml", "--set", "out=runs"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "PATH/TO/rl-zoo/dqn/CartPole-v1_1" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
