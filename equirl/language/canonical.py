"""Learned canonicalization for SCAN (Kaba et al., 2022; Mondal et al., 2023).

A small scorer ``h`` reads every transformed command ``g·x`` (e.g. ``jump`` ↔ ``run``, ``left`` ↔
``right``, or their product), the best-scoring element ``g*`` is chosen, the pretrained seq2seq model
decodes **once**, on ``g*·x``, and its action tokens are mapped back by ``g*⁻¹``. The scorer is trained
with the *prior* towards the identity on the training commands: it learns which poses the model was
trained on, so that at test time an unseen combination such as ``jump twice`` is read as ``run twice``
(seen in training), decoded, and mapped back to ``JUMP JUMP``.

Because the scores of ``g·x`` permute with the input, the choice moves with it and the decoder is
exactly equivariant: ``decode(g·x) = g·decode(x)`` (up to exact ties, which only happen when ``x`` is
fixed by a group element; then every choice reads the same command).

Example::

    >>> import torch
    >>> from equirl.language.seq2seq import Seq2Seq, scan_vocabs
    >>> from equirl.language.equiscan import global_symmetry
    >>> src_v, tgt_v = scan_vocabs()
    >>> model = Seq2Seq("gru", len(src_v), len(tgt_v), embedding=8, hidden=16)
    >>> can = CanonicalSeq2Seq(model, global_symmetry("jump_run"))
    >>> src = torch.tensor([[src_v.id("jump"), src_v.id("twice")]])
    >>> can.greedy(src, torch.tensor([2]), max_len=5).shape[0]
    1
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from equirl.errors import SymmetryError
from equirl.language.equiscan import ScanSymmetry
from equirl.language.scan import ScanExample
from equirl.language.seq2seq import PAD, Seq2Seq, Vocab, encode_batch, greedy_decode
from equirl.symmetrizers.canonicalize import Canonicalize
from equirl.train_loop import KeepBest, fit

__all__ = ["CanonicalSeq2Seq", "SequenceScorer"]

log = logging.getLogger(__name__)


class SequenceScorer(nn.Module):
    """``h(x)``: a bag of token embeddings (padding ignored) and the length, through an MLP.

    Order-free, so cheap and length-agnostic; non-linear, so it can tell ``jump`` alone (seen in
    training) from ``jump`` inside a longer command (never seen).

    :param vocab_size: source vocabulary size.
    :param embed_dim: embedding size.
    :param hidden: hidden units of the MLP.
    :param pad_id: the padding id (ignored).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden: int = 64, pad_id: int = PAD) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.pad_id = pad_id
        self.mlp = nn.Sequential(nn.Linear(embed_dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, ids: Tensor) -> Tensor:
        keep = (ids != self.pad_id).unsqueeze(-1).float()
        bag = (self.embed(ids.long()) * keep).sum(1)
        length = keep.sum(1)
        return self.mlp(torch.cat([bag, length], dim=-1)).squeeze(-1)


class CanonicalSeq2Seq(nn.Module):
    """A seq2seq model behind a learned canonicalizer over a SCAN symmetry.

    :param model: the pretrained :class:`~equirl.language.seq2seq.Seq2Seq` (run once per command).
    :param symmetry: the group and its actions (:func:`~equirl.language.equiscan.global_symmetry`).
    :param scorer: the canonicalization network (default :class:`SequenceScorer`).
    :param prior_weight: weight of the prior towards the identity.
    """

    def __init__(
        self,
        model: Seq2Seq,
        symmetry: ScanSymmetry,
        scorer: nn.Module | None = None,
        prior_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.symmetry = symmetry
        if scorer is None:
            scorer = SequenceScorer(model.src_emb.num_embeddings)
        # the core canonicalizer supplies the scores, the prior and the tie rule; decoding is ours
        self.can = Canonicalize(model, symmetry.src, symmetry.tgt, scorer=scorer, prior_weight=prior_weight,
                                tie_break="first")  # fmt: skip

    @property
    def model(self) -> Seq2Seq:
        m = self.can.model
        assert isinstance(m, Seq2Seq)
        return m

    def canonical_elements(self, src: Tensor) -> Tensor:
        """``(B,)`` index of ``g*`` per command (the lowest index among exact ties)."""
        with torch.no_grad():
            return self.can.scores(src).argmax(0)

    def prior_loss(self, src: Tensor) -> Tensor:
        """Cross-entropy of the canonicalizer's distribution to the identity (training commands)."""
        return self.can.prior_loss(src)

    @torch.no_grad()
    def greedy(self, src: Tensor, src_len: Tensor, max_len: int = 60) -> Tensor:
        """Decode ``g*⁻¹ · greedy(M, g*·x)``: one pass of the seq2seq model per command."""
        pick = self.canonical_elements(src)
        canon = self.symmetry.src.apply_each(src, pick)
        ids = greedy_decode(self.model, canon, src_len, max_len)
        return self.symmetry.tgt.apply_each(ids, pick, inverse=True)

    def fit_prior(
        self,
        examples: Sequence[ScanExample],
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        steps: int = 500,
        batch_size: int = 128,
        lr: float = 3e-3,
        seed: int = 0,
        *,
        val_examples: Sequence[ScanExample] | None = None,
        eval_every: int = 50,
        patience: int | None = None,
    ) -> list[float]:
        """Train the scorer (only) with the prior on training commands; returns the loss per step.

        :param val_examples: held-out training commands: the scorer is scored before the first step and
            every ``eval_every`` steps by its identity rate on them (the fraction left as they are; by
            equivariance, the fraction of transformed commands brought back), ties broken by the prior
            loss, and the best scorer is kept (:class:`~equirl.train_loop.KeepBest`).
        :param eval_every: steps between validation scores.
        :param patience: stop after this many scores without improvement (``None``: never early).
        """
        if not examples:
            raise SymmetryError("fit_prior needs training examples")
        src, _, _ = encode_batch(examples, src_vocab, tgt_vocab)
        gen = torch.Generator().manual_seed(seed)

        def loss_fn(step: int) -> Tensor:
            idx = torch.randint(0, src.shape[0], (min(batch_size, src.shape[0]),), generator=gen)
            return self.prior_loss(src[idx])

        keep: KeepBest | None = None
        if val_examples:
            v_src, _, _ = encode_batch(val_examples, src_vocab, tgt_vocab)

            @torch.no_grad()
            def score() -> tuple[float, float]:
                ident = float((self.canonical_elements(v_src) == 0).float().mean())
                return ident, -float(self.prior_loss(v_src))

            keep = KeepBest(self.can.scorer, score, steps, eval_every, patience)
        self.can.scorer.train()
        if keep is not None:
            keep.start()
        losses = fit(
            self.can.scorer.parameters(),
            loss_fn,
            steps,
            lr,
            what="fitting the canonicalizer prior",
            on_step=None if keep is None else keep.on_step,
        )
        if keep is not None:
            log.info("canonicalizer prior: kept the scorer of step %d", keep.restore())
        self.can.scorer.eval()
        log.info("canonicalizer prior: %.4f -> %.4f over %d steps", losses[0], losses[-1], len(losses))
        return losses
