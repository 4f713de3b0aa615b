"""SCAN grammar, rule-based splits, byte-identical generation and loading."""

from __future__ import annotations

import filecmp
from collections import Counter
from pathlib import Path

import pytest

from equirl.cli import main
from equirl.errors import EquirlError
from equirl.language import scan


def test_grammar_has_20910_distinct_commands() -> None:
    cmds = scan.all_commands()
    assert len(cmds) == 20910 == len(set(cmds))


@pytest.mark.parametrize(
    ("cmd", "actions"),
    [
        ("jump", "I_JUMP"),
        ("turn left", "I_TURN_LEFT"),
        ("walk opposite left", "I_TURN_LEFT I_TURN_LEFT I_WALK"),
        ("turn around right", "I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT"),
        ("look around left twice", " ".join(["I_TURN_LEFT I_LOOK"] * 8)),
        ("jump twice after walk left", "I_TURN_LEFT I_WALK I_JUMP I_JUMP"),
        ("run thrice and turn opposite right", "I_RUN I_RUN I_RUN I_TURN_RIGHT I_TURN_RIGHT"),
    ],
)
def test_interpret(cmd: str, actions: str) -> None:
    assert " ".join(scan.interpret(cmd)) == actions


@pytest.mark.parametrize("bad", ["jump jump", "turn", "walk around", "fly left", "walk left twice twice"])
def test_interpret_rejects(bad: str) -> None:
    with pytest.raises(EquirlError):
        scan.interpret(bad)


def test_split_rules() -> None:
    cmds = scan.all_commands()
    test = scan.split_members("add_jump", "test")
    train = scan.split_members("add_jump", "train")
    assert len(test) == 7706 and len(train) == 14670
    assert Counter(train)[cmds.index("jump")] == 1467  # 10 % of the train lines
    assert all("jump" in cmds[i].split() for i in test)
    ar_test = scan.split_members("around_right", "test")
    assert len(ar_test) == 4476 and len(scan.split_members("around_right", "train")) == 15225
    length = scan.split_members("length", "test")
    assert len(length) == 3920 and min(len(scan.interpret(cmds[i])) for i in length) == 24


def test_generate_official_matches_rules(tmp_path: Path) -> None:
    counts = scan.generate_scan(tmp_path)
    assert counts["tasks.txt"] == 20910 and counts["simple_split/tasks_test_simple.txt"] == 4182
    train = scan.load_scan_split(tmp_path, "add_jump", "train")
    assert Counter(" ".join(e.command) for e in train)["jump"] == 1467
    for e in scan.load_scan_file(tmp_path / "tasks.txt")[:200]:
        assert scan.interpret(e.command) == e.actions
    assert [e.line() for e in scan.scan_examples("around_right", "test")] == [
        e.line() for e in scan.load_scan_split(tmp_path, "around_right", "test")
    ]


@pytest.mark.shared
def test_generated_files_are_byte_identical_to_official(shared_data: Path, tmp_path: Path) -> None:
    ref = shared_data / "scan"
    assert main(["language", "scan-generate", "--out", str(tmp_path)]) == 0
    rels = sorted(scan.OFFICIAL_FILES.values())
    match, mismatch, errors = filecmp.cmpfiles(ref, tmp_path, rels, shallow=False)
    assert not mismatch and not errors and len(match) == 17


@pytest.mark.shared
def test_packaged_order_table_is_rebuilt_from_official_files(shared_data: Path) -> None:
    table = scan.build_order_table(shared_data / "scan")
    packaged = scan.official_order()
    for rel, idx in packaged.items():
        assert table[rel] == idx


def test_canonical_and_shuffled_orders(tmp_path: Path) -> None:
    scan.generate_scan(tmp_path / "c", order="canonical")
    scan.generate_scan(tmp_path / "s", order="shuffled", seed=3)
    for part in ("train", "test"):
        a = Counter(e.line() for e in scan.load_scan_split(tmp_path / "c", "add_jump", part))
        b = Counter(e.line() for e in scan.load_scan_split(tmp_path / "s", "add_jump", part))
        assert a == b
    simple = scan.load_scan_split(tmp_path / "s", "simple", "test")
    assert len(simple) == 4182


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(EquirlError, match="not found"):
        scan.load_scan_split(tmp_path, "add_jump", "train")
    bad = tmp_path / "bad.txt"
    bad.write_text("hello world\n")
    with pytest.raises(EquirlError, match="IN:"):
        scan.load_scan_file(bad)
    with pytest.raises(EquirlError, match="unknown SCAN split"):
        scan.canonical_split("nope")


def _commands(root: Path, part: str) -> set[str]:
    return {" ".join(e.command) for e in scan.load_scan_split(root, "simple", part)}


def test_simple_split_is_a_seeded_random_partition_whatever_the_order(tmp_path: Path) -> None:
    # --order only orders the lines: canonical and shuffled with one seed hold the same split
    scan.generate_scan(tmp_path / "c", order="canonical", seed=5)
    scan.generate_scan(tmp_path / "s", order="shuffled", seed=5)
    test, train = _commands(tmp_path / "c", "test"), _commands(tmp_path / "c", "train")
    assert test == _commands(tmp_path / "s", "test") and train == _commands(tmp_path / "s", "train")
    assert not test & train and len(test | train) == 20910 and len(test) == 4182
    # not the first 20 % of the grammar: every kind of command is on both sides
    for part in (test, train):
        assert any(" after " in c for c in part) and any(" and " in c for c in part)
        assert any(" and " not in c and " after " not in c for c in part)
    scan.generate_scan(tmp_path / "c6", order="canonical", seed=6)
    assert _commands(tmp_path / "c6", "test") != test  # the seed draws the split


def test_generate_checks_every_target_before_writing(tmp_path: Path) -> None:
    (tmp_path / "add_prim_split").write_text("a file where a folder goes")
    with pytest.raises(EquirlError, match="add_prim_split is a file, not a folder"):
        scan.generate_scan(tmp_path, order="canonical")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["add_prim_split"]  # nothing written
    other = tmp_path / "other"
    (other / "tasks.txt").mkdir(parents=True)
    with pytest.raises(EquirlError, match=r"tasks\.txt is a directory") as info:
        scan.generate_scan(other)
    assert ".tmp" not in str(info.value)
    assert sorted(p.name for p in other.iterdir()) == ["tasks.txt"]


def test_generate_cli_bad_target_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "add_prim_split").write_text("x")
    assert main(["language", "scan-generate", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "add_prim_split" in err


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"IN: jump OUT: I_JUMP\nIN: fly OUT: I_JUMP\n", r"bad\.txt:2: unknown SCAN command word 'fly'"),
        (b"IN: jump OUT: I_JUMP\nIN: jump OUT: I_FLY\n", r"bad\.txt:2: unknown SCAN action 'I_FLY'"),
        (b"IN: jump OUT: I_JUMP\n\nIN: ju\xffmp OUT: I_JUMP\n", r"bad\.txt:3: not UTF-8"),
    ],
)
def test_scan_file_errors_name_file_and_line(tmp_path: Path, content: bytes, match: str) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(EquirlError, match=match):
        scan.load_scan_file(bad)
