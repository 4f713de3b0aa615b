"""Clause-wise SCAN symmetries (``left_right@clauses``): group action, exact equivariance, reach."""

from __future__ import annotations

import pytest
import torch

from equirl.errors import SymmetryError
from equirl.language.equiscan import ClauseSymmetry, SymmetrizedSeq2Seq, scan_symmetry
from equirl.language.scan import ScanExample, interpret, scan_examples
from equirl.language.seq2seq import Seq2Seq, encode_batch, scan_vocabs

ATOL = 1e-5
SV, TV = scan_vocabs()
COMMANDS = [
    "jump around right and walk around left",
    "run left twice after look around right thrice",
    "turn around left and jump opposite right",
    "walk right",
    "look around right after turn left twice",
    "jump and run opposite left",
]


def _batch(commands: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ex = [ScanExample(tuple(c.split()), interpret(c)) for c in commands]
    return encode_batch(ex, SV, TV)


def _swap_clause(cmd: str, which: set[int]) -> str:
    """Reference: swap left/right in the chosen clauses (1 = before the conjunction)."""
    out, clause = [], 1
    for w in cmd.split():
        if w in ("and", "after"):
            clause = 2
        elif clause in which and w in ("left", "right"):
            w = "right" if w == "left" else "left"
        out.append(w)
    return " ".join(out)


def test_clause_action_matches_the_grammar() -> None:
    """g·x swaps directions clause by clause, and g·interpret(x) == interpret(g·x) for every element."""
    sym = scan_symmetry("left_right@clauses")
    assert isinstance(sym, ClauseSymmetry) and sym.group.order == 4
    src, lens, tgt = _batch(COMMANDS)
    fr = sym.bind(src, lens)
    for k, (i, j) in enumerate(sym.group.data):
        which = {c for c, bit in ((1, i), (2, j)) if bit}
        gsrc = fr.apply_src(k)
        gtgt = fr.apply_tgt(tgt, k)
        for b, cmd in enumerate(COMMANDS):
            want = _swap_clause(cmd, which)
            assert " ".join(SV.decode(gsrc[b, : lens[b]].tolist())) == want
            assert TV.decode(gtgt[b].tolist()) == interpret(want)  # the output action is the semantics
        # the output action depends only on invariants of the command: binding g·x gives the same action
        gfr = sym.bind(gsrc, lens)
        for k2 in range(4):
            assert torch.equal(gfr.apply_tgt(tgt, k2), fr.apply_tgt(tgt, k2))


def test_clause_orbit_reaches_every_around_right_test_command() -> None:
    train = {e.command for e in scan_examples("around_right", "train")}
    test = [e.command for e in scan_examples("around_right", "test")]
    clause = scan_symmetry("left_right@clauses")
    glob = scan_symmetry("left_right")
    src, lens, _ = encode_batch([ScanExample(c, ()) for c in test], SV, TV)

    def reached(sym: object) -> float:
        fr = sym.bind(src, lens)  # type: ignore[attr-defined]
        orbit = fr.src_orbit()
        hit = [
            any(tuple(SV.decode(orbit[k, b, : lens[b]].tolist())) in train for k in range(orbit.shape[0]))
            for b in range(len(test))
        ]
        return sum(hit) / len(hit)

    assert reached(clause) == 1.0
    assert reached(glob) < 0.9  # commands with both "around right" and "around left" stay in the test set


CELLS = ["rnn", "gru", "lstm"]
METHODS = [("equitune", {}), ("equizero", {"proxy": "nll"}), ("equizero", {"level": "step"}), ("lambda", {})]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("method", "kw"), METHODS)
def test_clause_symmetrized_decoding_is_exactly_equivariant(cell: str, method: str, kw: dict) -> None:
    torch.manual_seed(0)
    m = Seq2Seq(cell, len(SV), len(TV), 16, 32).eval()
    sym = scan_symmetry("left_right@clauses")
    eq = SymmetrizedSeq2Seq(m, sym, method, **kw).eval()
    if method == "lambda":
        torch.nn.init.normal_(eq.sym.lambda_net.layers()[-1][0])
    # real commands, plus one row that is not in the grammar (the action must stay well defined)
    src, lens, tgt = _batch(COMMANDS)
    src[-1, :3] = torch.tensor([SV.id("left"), SV.id("and"), SV.id("right")])
    fr = sym.bind(src, lens)
    ids, logits, _ = eq.greedy(src, lens, 40, return_logits=True)
    tf = eq(src, lens, tgt)
    for k in range(sym.group.order):
        gsrc = fr.apply_src(k)
        ids_g, logits_g, _ = eq.greedy(gsrc, lens, 40, return_logits=True)
        assert torch.equal(fr.apply_tgt(ids, k), ids_g), k
        assert torch.allclose(fr.apply_logits(logits, k), logits_g, atol=ATOL)
        tf_g = eq(gsrc, lens, fr.apply_tgt(tgt, k))
        assert torch.allclose(fr.apply_logits(tf, k), tf_g, atol=ATOL)


def test_clause_symmetry_rejects_a_base_group_moving_conjunctions() -> None:
    from equirl.actions import permutation_action, token_action
    from equirl.groups import permutation_group
    from equirl.language.equiscan import ScanSymmetry

    perm = list(range(len(SV)))
    a, b = SV.id("and"), SV.id("after")
    perm[a], perm[b] = b, a
    g = permutation_group([tuple(perm)])
    ident = [tuple(range(len(TV)))]
    bad = ScanSymmetry(g, token_action(g), permutation_action(g, ident), token_action(g, ident))
    with pytest.raises(SymmetryError, match="must not move"):
        ClauseSymmetry(bad, SV, TV)
