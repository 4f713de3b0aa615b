"""Learned canonicalization on SCAN: exact equivariance of the decoded sequences, and the prior."""

from __future__ import annotations

import pytest
import torch

from equirl.language.canonical import CanonicalSeq2Seq, SequenceScorer
from equirl.language.equiscan import scan_symmetry
from equirl.language.scan import scan_examples
from equirl.language.seq2seq import Seq2Seq, encode_batch, scan_vocabs


@pytest.mark.parametrize("spec", ["jump_run", "left_right", "jump_run+left_right"])
def test_decoding_is_equivariant_for_every_element(spec: str) -> None:
    torch.manual_seed(0)
    src_v, tgt_v = scan_vocabs()
    sym = scan_symmetry(spec, src_v, tgt_v)
    model = Seq2Seq("gru", len(src_v), len(tgt_v), embedding=16, hidden=32, dropout=0.0).eval()
    can = CanonicalSeq2Seq(model, sym).eval()
    for p in can.can.scorer.parameters():  # a random, non-degenerate scorer
        torch.nn.init.normal_(p, std=0.5)
    commands = [e for e in scan_examples("simple", "test") if "jump" in e.command or "left" in e.command][:64]
    src, src_len, _ = encode_batch(commands, src_v, tgt_v)
    ids = can.greedy(src, src_len, max_len=20)
    for g in sym.group.elements:
        lhs = can.greedy(sym.src.apply(src, g), src_len, max_len=20)
        assert torch.equal(lhs, sym.tgt.apply(ids, g)), g
    # one decoder pass per command: the canonical input is a transformed copy of the command
    pick = can.canonical_elements(src)
    assert pick.shape == (len(commands),)


def test_prior_teaches_the_scorer_the_training_pose() -> None:
    """Trained on Add Jump's train commands, the scorer maps composed 'jump' commands onto 'run'."""
    torch.manual_seed(0)
    src_v, tgt_v = scan_vocabs()
    sym = scan_symmetry("jump_run", src_v, tgt_v)
    model = Seq2Seq("gru", len(src_v), len(tgt_v), embedding=8, hidden=16)
    can = CanonicalSeq2Seq(model, sym, scorer=SequenceScorer(len(src_v), embed_dim=16, hidden=32))
    train = scan_examples("add_jump", "train")
    losses = can.fit_prior(train, src_v, tgt_v, steps=150, lr=1e-2)
    # commands without jump/run are fixed by the group: their prior term stays at log 2 (zero gradient)
    assert sum(losses[-10:]) < 0.75 * sum(losses[:10])
    # (commands with both jump and run have no jump-free pose under this group: the verb cycle covers them)
    test = [e for e in scan_examples("add_jump", "test") if "run" not in e.command][:300]
    src, _, _ = encode_batch(test, src_v, tgt_v)
    flip = sym.group.element("jump_run").index
    assert float((can.canonical_elements(src) == flip).float().mean()) > 0.95


def test_prior_fit_with_validation_never_ends_worse_than_it_started() -> None:
    """With held-out commands the best scorer is kept: a learning rate far too high cannot hurt."""
    torch.manual_seed(0)
    src_v, tgt_v = scan_vocabs()
    sym = scan_symmetry("left_right", src_v, tgt_v)
    model = Seq2Seq("gru", len(src_v), len(tgt_v), embedding=8, hidden=16)
    can = CanonicalSeq2Seq(model, sym, scorer=SequenceScorer(len(src_v), embed_dim=8, hidden=16))
    train = scan_examples("simple", "train")[:400]
    val = scan_examples("simple", "train")[400:600]
    v_src, _, _ = encode_batch(val, src_v, tgt_v)

    def identity_rate() -> float:
        return float((can.canonical_elements(v_src) == 0).float().mean())

    start = identity_rate()
    losses = can.fit_prior(train, src_v, tgt_v, steps=60, lr=50.0, val_examples=val, eval_every=5, patience=3)
    assert identity_rate() >= start
    assert len(losses) <= 60
