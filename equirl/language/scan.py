"""SCAN (Lake & Baroni, 2018): the grammar, its interpretation, the standard splits and file I/O.

SCAN maps navigation *commands* (``jump twice after walk left``) to *action sequences*
(``I_TURN_LEFT I_WALK I_JUMP I_JUMP``). The phrase-structure grammar has exactly 20,910 commands::

    C -> S and S | S after S | S
    S -> V twice | V thrice | V
    V -> D opposite left|right | D around left|right | D | U     (D here is U or "turn")
    D -> U left | U right | turn left | turn right
    U -> walk | look | run | jump

:func:`all_commands` enumerates them in a fixed *canonical* order and :func:`interpret` gives each its
action sequence; the split memberships are rules over the commands (:func:`split_members`):

* ``add_prim_split/jump`` (Add Jump): test = every command containing ``jump`` except ``jump`` itself;
  train = the other commands plus ``jump`` repeated so that it makes up 10 % of the train lines;
* ``add_prim_split/turn_left``: the same with ``turn left``;
* ``length_split``: test = action sequences of at least 24 actions, train = at most 22;
* ``template_split/around_right`` (Around Right): test = commands containing ``<u> around right`` for a
  primitive ``u``; commands containing ``turn around right`` are in neither part; ``right`` and
  ``opposite_right`` alike, and ``jump_around_right`` with ``u = jump`` only;
* ``simple_split``: a *random* 80/20 split.

**What is derived and what is packaged.** Commands, action sequences and every rule-based membership
are computed from the grammar. The official files, however, list their lines in random orders (and the
simple split's membership is random), drawn by the authors with an unrecorded random state: no rule
or seed we know of reproduces them. To write files byte-identical to the official release,
:func:`generate_scan` therefore reads the line orders from a small packaged table
(``equirl/language/data/scan_order.bin``: for each official file, the canonical indices of its lines,
taken from brendenlake/SCAN, BSD licence). With ``order="canonical"`` or a ``seed`` it writes the same
contents in canonical or freshly shuffled order instead; the simple split is then a new random 80/20
split drawn from the seed alone, the same for both orders (the order only orders the lines).
"""

from __future__ import annotations

import functools
import lzma
import random
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from equirl.errors import ConfigError, EquirlError
from equirl.utils.io import atomic_write_bytes, check_output_path, printable, refuse_existing

__all__ = [
    "OFFICIAL_FILES",
    "SPLITS",
    "ScanExample",
    "all_commands",
    "generate_scan",
    "interpret",
    "load_scan_file",
    "load_scan_split",
    "scan_examples",
    "simple_test_members",
    "split_members",
]

PRIMITIVES = ("walk", "look", "run", "jump")
DIRECTIONS = ("left", "right")
_ACTION = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
_TURN = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}


@dataclass(frozen=True)
class ScanExample:
    """One SCAN line: a command and its action sequence (both as token tuples)."""

    command: tuple[str, ...]
    actions: tuple[str, ...]

    def line(self) -> str:
        """The official text form ``IN: <command> OUT: <actions>``."""
        return f"IN: {' '.join(self.command)} OUT: {' '.join(self.actions)}"


# --------------------------------------------------------------------------------------------------
# grammar and semantics
# --------------------------------------------------------------------------------------------------
def _verb_phrases() -> list[str]:
    """The 34 ``V`` phrases in canonical order."""
    out = list(PRIMITIVES)
    for u in (*PRIMITIVES, "turn"):
        for d in DIRECTIONS:
            out.append(f"{u} {d}")
            out.append(f"{u} opposite {d}")
            out.append(f"{u} around {d}")
    return out


def _sentences() -> list[str]:
    return [f"{v}{rep}" for v in _verb_phrases() for rep in ("", " twice", " thrice")]


@functools.lru_cache(maxsize=1)
def all_commands() -> tuple[str, ...]:
    """All 20,910 SCAN commands in canonical order: ``S``, then ``S and S``, then ``S after S``."""
    s = _sentences()
    out = list(s)
    for conj in ("and", "after"):
        out.extend(f"{a} {conj} {b}" for a in s for b in s)
    return tuple(out)


def _interpret_v(words: Sequence[str]) -> list[str]:
    if len(words) == 1:
        if words[0] not in _ACTION:
            raise EquirlError(f"not a SCAN command: {' '.join(words)!r}")
        return [_ACTION[words[0]]]
    u, d = words[0], words[-1]
    if d not in _TURN or (u not in _ACTION and u != "turn") or len(words) > 3:
        raise EquirlError(f"not a SCAN command: {' '.join(words)!r}")
    step = [_TURN[d]] + ([] if u == "turn" else [_ACTION[u]])
    if len(words) == 2:
        return step
    if words[1] == "opposite":
        return [_TURN[d], *step]
    if words[1] == "around":
        return step * 4
    raise EquirlError(f"not a SCAN command: {' '.join(words)!r}")


def _interpret_s(words: Sequence[str]) -> list[str]:
    if words and words[-1] in ("twice", "thrice"):
        return _interpret_v(words[:-1]) * (2 if words[-1] == "twice" else 3)
    return _interpret_v(words)


def interpret(command: str | Sequence[str]) -> tuple[str, ...]:
    """The action sequence of a SCAN command (``x and y`` = ``x`` then ``y``; ``x after y`` = ``y`` then ``x``).

    :param command: a command string or token sequence.
    :raises EquirlError: if the command is not in the SCAN grammar.
    """
    words = command.split() if isinstance(command, str) else list(command)
    for conj in ("and", "after"):
        if conj in words:
            i = words.index(conj)
            a, b = _interpret_s(words[:i]), _interpret_s(words[i + 1 :])
            return tuple(a + b if conj == "and" else b + a)
    return tuple(_interpret_s(words))


# --------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------
#: the official file names, relative to the dataset folder, by (split, part)
OFFICIAL_FILES: dict[tuple[str, str], str] = {
    ("tasks", "all"): "tasks.txt",
    ("simple", "train"): "simple_split/tasks_train_simple.txt",
    ("simple", "test"): "simple_split/tasks_test_simple.txt",
    ("addprim_jump", "train"): "add_prim_split/tasks_train_addprim_jump.txt",
    ("addprim_jump", "test"): "add_prim_split/tasks_test_addprim_jump.txt",
    ("addprim_turn_left", "train"): "add_prim_split/tasks_train_addprim_turn_left.txt",
    ("addprim_turn_left", "test"): "add_prim_split/tasks_test_addprim_turn_left.txt",
    ("length", "train"): "length_split/tasks_train_length.txt",
    ("length", "test"): "length_split/tasks_test_length.txt",
}
for _t in ("around_right", "jump_around_right", "opposite_right", "right"):
    for _p in ("train", "test"):
        OFFICIAL_FILES[(f"template_{_t}", _p)] = f"template_split/tasks_{_p}_template_{_t}.txt"

#: split names and their aliases
SPLITS: dict[str, str] = {
    "simple": "simple",
    "addprim_jump": "addprim_jump",
    "add_jump": "addprim_jump",
    "jump": "addprim_jump",
    "addprim_turn_left": "addprim_turn_left",
    "add_turn_left": "addprim_turn_left",
    "turn_left": "addprim_turn_left",
    "length": "length",
    "template_around_right": "template_around_right",
    "around_right": "template_around_right",
    "template_jump_around_right": "template_jump_around_right",
    "template_opposite_right": "template_opposite_right",
    "template_right": "template_right",
}


def canonical_split(name: str) -> str:
    """Resolve a split alias (``add_jump``, ``around_right``...) to its canonical name."""
    key = name.replace("-", "_").lower()
    if key not in SPLITS:
        raise EquirlError(f"unknown SCAN split {name!r}; choose one of {sorted(set(SPLITS.values()))}")
    return SPLITS[key]


def _contains(cmd: str, phrase: str) -> bool:
    return f" {phrase} " in f" {cmd} "


@functools.cache
def _action_count(cmd: str) -> int:
    return len(interpret(cmd))


def _template(split: str) -> tuple[tuple[str, ...], str]:
    """(the primitive verbs, the modifier phrase) of a template split: ``jump_around_right`` ->
    ``(("jump",), "around right")``, ``around_right`` -> ``(PRIMITIVES, "around right")``."""
    phrase = split[len("template_") :].replace("_", " ")
    if phrase.startswith("jump "):
        return ("jump",), phrase[len("jump ") :]
    return PRIMITIVES, phrase


def _excluded(split: str, cmd: str) -> bool:
    """Template splits leave out the commands where ``turn`` takes the template's modifier."""
    return split.startswith("template_") and _contains(cmd, f"turn {_template(split)[1]}")


def _is_test(split: str, cmd: str) -> bool:
    if split == "addprim_jump":
        return cmd != "jump" and _contains(cmd, "jump")
    if split == "addprim_turn_left":
        return cmd != "turn left" and _contains(cmd, "turn left")
    if split == "length":
        return _action_count(cmd) >= 24
    if split.startswith("template_"):
        verbs, phrase = _template(split)
        return any(_contains(cmd, f"{u} {phrase}") for u in verbs)
    raise EquirlError(f"split {split!r} has no membership rule (the simple split is random)")


def split_members(split: str, part: str) -> list[int]:
    """Canonical indices (into :func:`all_commands`) of a rule-based split part, as a multiset.

    For the Add Primitive splits the train part repeats the primitive so that it makes up exactly
    10 % of the train lines (``n_prim = n_other / 9``), as in the official files.

    :param split: a split name (not ``simple``: its membership is random).
    :param part: ``"train"`` or ``"test"``.
    """
    split = canonical_split(split)
    if part not in ("train", "test"):
        raise EquirlError(f"part must be 'train' or 'test', got {part!r}")
    cmds = all_commands()
    members = [
        i for i, c in enumerate(cmds) if not _excluded(split, c) and _is_test(split, c) == (part == "test")
    ]
    if split.startswith("addprim_") and part == "train":
        prim = "jump" if split == "addprim_jump" else "turn left"
        p = cmds.index(prim)
        others = len(members) - 1
        if others % 9:
            raise AssertionError("the add-primitive train set does not divide into 90/10")
        members.extend([p] * (others // 9 - 1))
    return members


# --------------------------------------------------------------------------------------------------
# packaged order table
# --------------------------------------------------------------------------------------------------
_ORDER_FILE = "scan_order.bin"
_MAGIC = b"EQSCAN1\n"


def encode_order_table(tables: dict[str, list[int]]) -> bytes:
    """Serialise ``{official relative path: canonical indices in file order}`` (lzma, uint16)."""
    parts = [_MAGIC, struct.pack("<I", len(tables))]
    for name, idx in tables.items():
        nb = name.encode()
        parts.append(struct.pack("<HI", len(nb), len(idx)) + nb)
        parts.append(struct.pack(f"<{len(idx)}H", *idx))
    return lzma.compress(b"".join(parts), preset=9 | lzma.PRESET_EXTREME)


def decode_order_table(blob: bytes) -> dict[str, list[int]]:
    """Inverse of :func:`encode_order_table`."""
    raw = lzma.decompress(blob)
    if not raw.startswith(_MAGIC):
        raise EquirlError("corrupt SCAN order table")
    off = len(_MAGIC)
    (n,) = struct.unpack_from("<I", raw, off)
    off += 4
    out: dict[str, list[int]] = {}
    for _ in range(n):
        ln, cnt = struct.unpack_from("<HI", raw, off)
        off += 6
        name = raw[off : off + ln].decode()
        off += ln
        out[name] = list(struct.unpack_from(f"<{cnt}H", raw, off))
        off += 2 * cnt
    return out


@functools.lru_cache(maxsize=1)
def official_order() -> dict[str, list[int]]:
    """The packaged line orders of the official files (see the module docstring)."""
    blob = resources.files("equirl.language").joinpath("data").joinpath(_ORDER_FILE).read_bytes()
    return decode_order_table(blob)


def build_order_table(official_dir: str | Path) -> dict[str, list[int]]:
    """Build the order table from a folder of official SCAN files (how the packaged table was made).

    Every line must be a grammar command with its correct action sequence.
    """
    cmds = all_commands()
    pos = {c: i for i, c in enumerate(cmds)}
    out: dict[str, list[int]] = {}
    for rel in OFFICIAL_FILES.values():
        idx = []
        for ex in load_scan_file(Path(official_dir) / rel):
            c = " ".join(ex.command)
            if c not in pos or interpret(c) != ex.actions:
                raise EquirlError(f"{rel}: line not in the SCAN grammar: {ex.line()!r}")
            idx.append(pos[c])
        out[rel] = idx
    return out


# --------------------------------------------------------------------------------------------------
# generation and loading
# --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _official_lines() -> tuple[str, ...]:
    """The text line of every command, by canonical index."""
    return tuple(f"IN: {c} OUT: {' '.join(interpret(c))}\n" for c in all_commands())


def _lines(indices: Iterable[int]) -> bytes:
    lines = _official_lines()
    return "".join(lines[i] for i in indices).encode()


def generate_scan(
    out_dir: str | Path, order: str = "official", seed: int | None = None, overwrite: bool = False
) -> dict[str, int]:
    """Write the full SCAN dataset and its standard splits in the official layout.

    :param out_dir: destination folder (created; files are written atomically).
    :param order: ``"official"`` (byte-identical to the release, using the packaged order table; the
        table is checked against the grammar rules), ``"canonical"`` (grammar order) or ``"shuffled"``
        (random order from ``seed``; the simple split is then a fresh random 80/20 split).
    :param seed: the seed of the simple split (``order="canonical"`` / ``"shuffled"``: the same split for
        both, :func:`simple_test_members`) and of the line shuffle (``order="shuffled"``).
    :param overwrite: replace files in ``out_dir`` that differ from what would be written (refused
        otherwise, before anything is written; identical ones are left as they are).
    :returns: lines written per relative path.
    """
    if order not in ("official", "canonical", "shuffled"):
        raise EquirlError(f"order must be 'official', 'canonical' or 'shuffled', got {order!r}")
    n = len(all_commands())
    files: dict[str, list[int]] = {}
    if order == "official":
        table = official_order()
        tasks = table[OFFICIAL_FILES[("tasks", "all")]]
        rank = {c: r for r, c in enumerate(tasks)}
        for (split, part), rel in OFFICIAL_FILES.items():
            if split == "tasks":
                files[rel] = tasks
            elif split.startswith("template_"):  # the official template files follow tasks.txt's order
                files[rel] = sorted(split_members(split, part), key=rank.__getitem__)
            else:
                idx = table[rel]
                if split != "simple" and sorted(idx) != sorted(split_members(split, part)):
                    raise EquirlError(f"packaged order table disagrees with the split rule for {rel}")
                files[rel] = idx
        simple = sorted(
            files[OFFICIAL_FILES[("simple", "train")]] + files[OFFICIAL_FILES[("simple", "test")]]
        )
        if simple != list(range(n)):
            raise EquirlError("packaged simple split is not a partition of the commands")
    else:
        rng = random.Random(seed)
        perm = list(range(n))
        if order == "shuffled":
            rng.shuffle(perm)
        rank = {c: r for r, c in enumerate(perm)}
        test = simple_test_members(seed)  # drawn once, whatever the order: it only orders the lines
        for (split, part), rel in OFFICIAL_FILES.items():
            if split == "tasks":
                files[rel] = perm
            elif split == "simple":
                files[rel] = [i for i in perm if (i in test) == (part == "test")]
            else:
                mem = sorted(split_members(split, part), key=rank.__getitem__)
                if order == "shuffled":
                    rng.shuffle(mem)
                files[rel] = mem
    out = Path(out_dir)
    blobs = {rel: _lines(idx) for rel, idx in files.items()}
    for (
        rel
    ) in blobs:  # every target (a file where a folder goes, a folder where a file goes) before any write
        check_output_path(out / rel, "--out file", kind="file")
    changed = [
        out / rel for rel, b in blobs.items() if (out / rel).exists() and not _same_bytes(out / rel, b)
    ]
    refuse_existing(changed, overwrite, "--out file")  # an edited split is not replaced unasked
    for rel, blob in blobs.items():
        if not (out / rel).exists() or (out / rel) in changed:
            try:
                atomic_write_bytes(out / rel, blob)
            except OSError as exc:  # the real target, not atomic_write's temporary name
                raise ConfigError(f"cannot write {out / rel}: {(exc.strerror or str(exc)).lower()}") from None
    return {rel: len(idx) for rel, idx in files.items()}


#: the fraction of the commands in the simple split's test part
SIMPLE_TEST_FRACTION = 0.2


def simple_test_members(seed: int | None) -> frozenset[int]:
    """Canonical indices of the simple split's test part for ``order="canonical"`` / ``"shuffled"``: a
    uniformly random 20 % of the commands drawn from ``seed`` alone (``None``: seed 0, as the CLI's
    default: a call is reproducible), so the split is the same whichever order the lines are written in."""
    n = len(all_commands())
    draw = random.Random(0 if seed is None else seed)
    return frozenset(draw.sample(range(n), round(SIMPLE_TEST_FRACTION * n)))


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _parse_line(line: str, where: str) -> ScanExample:
    if not line.startswith("IN: ") or " OUT: " not in line:
        raise EquirlError(f"{where}: expected 'IN: <command> OUT: <actions>', got {printable(line[:60])!r}")
    cmd, act = line[4:].split(" OUT: ", 1)
    ex = ScanExample(tuple(cmd.split()), tuple(act.split()))
    words, actions = scan_tokens()
    bad = [("command word", t, words) for t in ex.command if t not in words]
    bad += [("action", t, actions) for t in ex.actions if t not in actions]
    if bad:
        what, tok, known = bad[0]
        raise EquirlError(
            f"{where}: unknown SCAN {what} {printable(tok, 40)!r} (known: {' '.join(sorted(known))})"
        )
    return ex


@functools.lru_cache(maxsize=1)
def scan_tokens() -> tuple[frozenset[str], frozenset[str]]:
    """The words of SCAN commands and the action tokens, fixed by the grammar."""
    return frozenset(
        PRIMITIVES + DIRECTIONS + ("turn", "opposite", "around", "twice", "thrice", "and", "after")
    ), (frozenset(_ACTION.values()) | frozenset(_TURN.values()))


def iter_scan_file(path: str | Path) -> Iterator[ScanExample]:
    """Yield the examples of one SCAN text file; a line that is not UTF-8 or not ``IN: ... OUT: ...`` is
    an :class:`EquirlError` naming the file and the line."""
    p = Path(path)
    if p.is_dir():
        raise EquirlError(f"SCAN file {p} is a directory, not a file")
    if not p.is_file():
        raise EquirlError(f"SCAN file not found: {p}")
    try:
        with p.open("rb") as fh:
            for k, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as exc:
                    raise EquirlError(
                        f"{p}:{k}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                    ) from None
                if line:
                    yield _parse_line(line, f"{p}:{k}")
    except OSError as exc:
        raise EquirlError(f"cannot read SCAN file {p}: {(exc.strerror or str(exc)).lower()}") from None


def load_scan_file(path: str | Path) -> list[ScanExample]:
    """All examples of one SCAN text file (official format ``IN: ... OUT: ...``)."""
    return list(iter_scan_file(path))


def load_scan_split(root: str | Path, split: str, part: str) -> list[ScanExample]:
    """Load ``part`` (``train``/``test``) of ``split`` from a folder in the official layout.

    :param root: the dataset folder (e.g. the official release, or the output of ``scan-generate``).
    :param split: a split name or alias (``simple``, ``add_jump``, ``around_right``, ``length``...).
    """
    split = canonical_split(split)
    if part not in ("train", "test"):
        raise EquirlError(f"part must be 'train' or 'test', got {part!r}")
    path = Path(root) / OFFICIAL_FILES[(split, part)]
    if not path.is_file():
        raise EquirlError(
            f"SCAN file not found: {path} (write the dataset with `equirl language scan-generate --out {root}`)"
        )
    return load_scan_file(path)


def scan_examples(split: str, part: str, root: str | Path | None = None) -> list[ScanExample]:
    """The examples of a split part: from the official files under ``root``, or (``root=None``)
    generated from the grammar in the official order, with no files needed."""
    if root is not None:
        return load_scan_split(root, split, part)
    split = canonical_split(split)
    if part not in ("train", "test"):
        raise EquirlError(f"part must be 'train' or 'test', got {part!r}")
    rel = OFFICIAL_FILES[(split, part)]
    if split.startswith("template_"):
        rank = {c: r for r, c in enumerate(official_order()[OFFICIAL_FILES[("tasks", "all")]])}
        idx = sorted(split_members(split, part), key=rank.__getitem__)
    else:
        idx = official_order()[rel]
    cmds = all_commands()
    return [ScanExample(tuple(cmds[i].split()), interpret(cmds[i])) for i in idx]
