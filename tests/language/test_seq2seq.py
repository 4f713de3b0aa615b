"""Seq2seq models and exact equivariance of symmetrized SCAN decoding (every element, every step)."""

from __future__ import annotations

import pytest
import torch

from equirl.language.equiscan import SymmetrizedSeq2Seq, exact_match, scan_symmetry
from equirl.language.scan import ScanExample
from equirl.language.seq2seq import SOS, Seq2Seq, encode_batch, greedy_decode, scan_vocabs

ATOL = 1e-5
SV, TV = scan_vocabs()


def _src(words: list[str], B: int = 6, S: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Random commands containing ``words`` but not their partners, so no element fixes the input."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, len(SV), (B, S), generator=g)
    for w in ("run", "right", "look"):
        src[src == SV.id(w)] = SV.id("walk")
    for k, w in enumerate(words):
        src[:, k] = SV.id(w)
    lens = torch.tensor([7, 5, 3, 7, 2, 6])[:B]
    for i, n in enumerate(lens):
        src[i, n:] = 0
    return src, lens


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_teacher_forced_equals_stepwise(cell: str) -> None:
    m = Seq2Seq(cell, len(SV), len(TV), 16, 32).eval()
    src, lens = _src(["jump"])
    tgt = torch.randint(3, len(TV), (6, 9))
    memory, mask, state = m.encode(src, lens)
    prev, outs = torch.full((6,), SOS), []
    for t in range(9):
        logits, _, state = m.step(prev, memory, mask, state)
        outs.append(logits)
        prev = tgt[:, t]
    assert torch.allclose(torch.stack(outs, 1), m(src, lens, tgt), atol=ATOL)


CASES = [("jump_run", ["jump"]), ("left_right", ["left"]), ("jump_run+left_right", ["jump", "left"])]
METHODS = [
    ("equitune", {}),
    ("equizero", {"proxy": "nll"}),  # sequence-level choice
    ("equizero", {"proxy": "entropy", "level": "step"}),  # per-step choice
    ("lambda", {}),
]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("spec", "words"), CASES)
@pytest.mark.parametrize(("method", "kw"), METHODS)
def test_symmetrized_decoding_is_exactly_equivariant(
    cell: str, spec: str, words: list[str], method: str, kw: dict
) -> None:
    torch.manual_seed(0)
    m = Seq2Seq(cell, len(SV), len(TV), 16, 32).eval()
    sym = scan_symmetry(spec)
    eq = SymmetrizedSeq2Seq(m, sym, method, **kw).eval()
    if method == "lambda":  # a non-uniform λ, so the test is not just equitune's
        torch.nn.init.normal_(eq.sym.lambda_net.layers()[-1][0])
    src, lens = _src(words)
    tgt = torch.randint(3, len(TV), (6, 10))
    ids, logits, _ = eq.greedy(src, lens, 25, return_logits=True)
    tf = eq(src, lens, tgt)
    for g in sym.group.elements:
        gsrc = sym.src.apply(src, g)
        ids_g, logits_g, _ = eq.greedy(gsrc, lens, 25, return_logits=True)
        assert torch.equal(sym.tgt.apply(ids, g), ids_g), g.label  # whole sequence swapped
        assert torch.allclose(sym.logits.apply(logits, g), logits_g, atol=ATOL)  # every step
        assert torch.allclose(sym.logits.apply(tf, g), eq(gsrc, lens, sym.tgt.apply(tgt, g)), atol=ATOL)


def test_plain_model_is_not_equivariant() -> None:
    m = Seq2Seq("lstm", len(SV), len(TV), 16, 32).eval()
    sym = scan_symmetry("jump_run")
    src, lens = _src(["jump"])
    tgt = torch.randint(3, len(TV), (6, 10))
    assert not torch.allclose(
        sym.logits.apply(m(src, lens, tgt), 1),
        m(sym.src.apply(src, 1), lens, sym.tgt.apply(tgt, 1)),
        atol=1e-3,
    )


def test_symmetrizer_params_registered_once() -> None:
    m = Seq2Seq("gru", len(SV), len(TV), 8, 16)
    eq = SymmetrizedSeq2Seq(m, scan_symmetry("left_right"), "lambda")
    n_model = sum(p.numel() for p in m.parameters())
    n_eq = sum(p.numel() for p in eq.parameters())
    assert n_eq > n_model and sum(p.numel() for p in eq.sym.lambda_net.parameters()) == n_eq - n_model


def test_training_learns_a_tiny_task_and_greedy_is_batched() -> None:
    from equirl.language.train import train_model

    torch.manual_seed(0)
    data = [
        ScanExample(tuple(c.split()), a)
        for c, a in [
            ("jump", ("I_JUMP",)),
            ("walk twice", ("I_WALK", "I_WALK")),
            ("look left", ("I_TURN_LEFT", "I_LOOK")),
            ("run", ("I_RUN",)),
            ("turn right", ("I_TURN_RIGHT",)),
        ]
    ]
    m = Seq2Seq("lstm", len(SV), len(TV), 16, 32, dropout=0.0)
    losses = train_model(m, data * 8, epochs=15, batch_size=8, lr=1e-2)
    assert losses[-1] < 0.1 * losses[0]
    assert exact_match(lambda s, n: greedy_decode(m, s, n), data, SV, TV) == 1.0
    src, lens, _ = encode_batch(data, SV, TV)
    one = [TV.decode(greedy_decode(m, src[i : i + 1], lens[i : i + 1], 10)[0].tolist()) for i in range(5)]
    assert one == [TV.decode(r) for r in greedy_decode(m, src, lens, 10).tolist()]


def test_bad_symmetry() -> None:
    from equirl.errors import SymmetryError

    with pytest.raises(SymmetryError, match="unknown SCAN symmetry"):
        scan_symmetry("up_down")
    with pytest.raises(SymmetryError, match="repeated"):
        scan_symmetry("jump_run+jump_run")


def test_verb_cycle_group_reaches_jump_and_run_commands() -> None:
    sym = scan_symmetry("verbs")
    assert sym.group.order == 4
    x = torch.tensor([[SV.id("jump"), SV.id("and"), SV.id("run")]])
    images = {tuple(SV.tokens[i] for i in sym.src.apply(x, g)[0].tolist()) for g in sym.group.elements}
    assert any("jump" not in words for words in images)  # some element moves both verbs off "jump"
    m = Seq2Seq("gru", len(SV), len(TV), 8, 16).eval()
    eq = SymmetrizedSeq2Seq(m, sym, "equizero", proxy="nll").eval()
    src, lens = _src(["jump"])
    ids = eq.greedy(src, lens, 20)
    for g in sym.group.elements:
        assert torch.equal(sym.tgt.apply(ids, g), eq.greedy(sym.src.apply(src, g), lens, 20))


@pytest.mark.parametrize(("method", "kw"), [("lambda", {}), ("equizero", {"proxy": "nll"})])
def test_finetuning_keeps_equivariance(method: str, kw: dict) -> None:
    from equirl.language.scan import scan_examples
    from equirl.language.train import finetune

    m = Seq2Seq("lstm", len(SV), len(TV), 8, 16, dropout=0.0)
    before = [p.detach().clone() for p in m.parameters()]
    data = scan_examples("add_jump", "train")[:32]
    eq = finetune(m, data, method, "jump_run", epochs=1, lr=1e-2, **kw)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    if method == "lambda":
        assert eq.sym.lambda_net.layers()[-1][0].abs().sum() > 0  # λ learned something
    src, lens = _src(["jump"])
    tgt = torch.randint(3, len(TV), (6, 8))
    sym = eq.symmetry
    assert torch.allclose(
        sym.logits.apply(eq(src, lens, tgt), 1),
        eq(sym.src.apply(src, 1), lens, sym.tgt.apply(tgt, 1)),
        atol=ATOL,
    )
