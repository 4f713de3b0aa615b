"""Recurrent encoder-decoders for SCAN: RNN, GRU and LSTM, optional attention, batched greedy decoding.

The decoder is written as a *step* function ``(prev_token, state) -> (logits, state)`` so that the
symmetrized decoders of :mod:`equirl.language.equiscan` can run the ``|G|`` transformed copies of a
batch side by side, one step at a time (Lake & Baroni, 2018 train such models on SCAN; Basu et al.,
2023 symmetrize them with equitune).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from equirl.errors import ConfigError
from equirl.language.scan import ScanExample, all_commands, interpret

__all__ = ["PAD", "Seq2Seq", "Vocab", "batch_examples", "encode_batch", "greedy_decode", "scan_vocabs"]

PAD, SOS, EOS = 0, 1, 2
CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass(frozen=True)
class Vocab:
    """A fixed token vocabulary; ids ``0..2`` are ``<pad>``, ``<sos>``, ``<eos>``."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        try:
            return self._index[token]  # type: ignore[attr-defined,no-any-return]
        except KeyError:
            raise ConfigError(f"token {token!r} is not in the vocabulary {list(self.tokens[3:])}") from None

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def decode(self, ids: Sequence[int]) -> tuple[str, ...]:
        """Tokens up to the first ``<eos>`` (pads and ``<sos>`` dropped)."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i > EOS:
                out.append(self.tokens[i])
        return tuple(out)


def scan_vocabs() -> tuple[Vocab, Vocab]:
    """The SCAN source and target vocabularies (fixed by the grammar, in sorted order)."""
    words = sorted({w for c in all_commands() for w in c.split()})
    acts = sorted({a for c in all_commands()[:102] for a in interpret(c)})
    special = ("<pad>", "<sos>", "<eos>")
    return Vocab(special + tuple(words)), Vocab(special + tuple(acts))


def encode_batch(
    examples: Sequence[ScanExample], src_vocab: Vocab, tgt_vocab: Vocab
) -> tuple[Tensor, Tensor, Tensor]:
    """``(src (B,S), src_len (B,), tgt (B,T))``; targets end with ``<eos>`` and are right-padded."""
    src = [src_vocab.encode(e.command) for e in examples]
    tgt = [[*tgt_vocab.encode(e.actions), EOS] for e in examples]
    S, T = max(map(len, src)), max(map(len, tgt))
    s = torch.full((len(src), S), PAD, dtype=torch.long)
    t = torch.full((len(tgt), T), PAD, dtype=torch.long)
    for i, (a, b) in enumerate(zip(src, tgt)):
        s[i, : len(a)] = torch.tensor(a)
        t[i, : len(b)] = torch.tensor(b)
    return s, torch.tensor([len(a) for a in src]), t


def batch_examples(
    examples: Sequence[ScanExample],
    batch_size: int,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    generator: torch.Generator | None = None,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Mini-batches (shuffled when ``generator`` is given)."""
    order = (
        torch.randperm(len(examples), generator=generator).tolist()
        if generator is not None
        else range(len(examples))
    )
    idx = list(order)
    return [
        encode_batch([examples[i] for i in idx[k : k + batch_size]], src_vocab, tgt_vocab)
        for k in range(0, len(idx), batch_size)
    ]


State = tuple[Tensor, ...]


class Seq2Seq(nn.Module):
    """An RNN/GRU/LSTM encoder-decoder with optional dot-product attention.

    :param cell: ``"rnn"``, ``"gru"`` or ``"lstm"``.
    :param src_vocab: source vocabulary size.
    :param tgt_vocab: target vocabulary size.
    :param embedding: embedding size.
    :param hidden: hidden size of encoder and decoder.
    :param attention: Luong-style dot attention over the encoder outputs.
    :param dropout: dropout on embeddings and decoder outputs.
    """

    def __init__(
        self,
        cell: str,
        src_vocab: int,
        tgt_vocab: int,
        embedding: int = 64,
        hidden: int = 128,
        attention: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"unknown cell {cell!r}; choose one of {sorted(CELLS)}")
        self.cell, self.hidden, self.attention = cell, hidden, attention
        self.src_emb = nn.Embedding(src_vocab, embedding, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab, embedding, padding_idx=PAD)
        self.encoder = CELLS[cell](embedding, hidden, batch_first=True)
        self.decoder = CELLS[cell](embedding, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden if attention else hidden, tgt_vocab)

    # -- encoder -------------------------------------------------------------------------------------
    def encode(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, State]:
        """``(memory (B,S,H), mask (B,S), initial decoder state)``."""
        emb = self.drop(self.src_emb(src))
        packed = nn.utils.rnn.pack_padded_sequence(emb, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        st: State = tuple(state) if isinstance(state, tuple) else (state,)
        return memory, src != PAD, st

    # -- decoder -------------------------------------------------------------------------------------
    def step(self, prev: Tensor, memory: Tensor, mask: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
        """One decoding step: ``(logits (B,V), features (B,H), new state)`` from ``prev`` ids ``(B,)``."""
        emb = self.drop(self.tgt_emb(prev)).unsqueeze(1)
        out, new = self.decoder(emb, state if self.cell == "lstm" else state[0])
        st: State = tuple(new) if isinstance(new, tuple) else (new,)
        return self.out(self.drop(self._attend(out, memory, mask)))[:, 0], out[:, 0], st

    def _attend(self, h: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """Output features for decoder outputs ``h`` ``(B, T, H)``: ``[h; context]`` with attention."""
        if not self.attention:
            return h
        scores = torch.einsum("bth,bsh->bts", h, memory).masked_fill(~mask[:, None, :], float("-inf"))
        return torch.cat([h, torch.einsum("bts,bsh->bth", torch.softmax(scores, -1), memory)], -1)

    def teacher_forced(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced ``(logits (N, T, V), decoder states (N, T, H))`` for targets ``tgt`` ``(N, T)``.

        The decoder input is ``<sos>, tgt[:, :-1]``; attention reads only the decoder output, so the whole
        target runs through the recurrent cell in one call (no Python loop over time).
        """
        memory, mask, state = self.encode(src, src_len)
        prev = torch.cat([torch.full_like(tgt[:, :1], SOS), tgt[:, :-1]], 1)
        out, _ = self.decoder(self.drop(self.tgt_emb(prev)), state if self.cell == "lstm" else state[0])
        return self.out(self.drop(self._attend(out, memory, mask))), out

    def forward(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, V)`` for targets ``tgt`` (fed ``<sos>, tgt[:, :-1]``)."""
        return self.teacher_forced(src, src_len, tgt)[0]


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src: Tensor, src_len: Tensor, max_len: int = 60) -> Tensor:
    """Batched greedy decoding of the plain model: ids ``(B, T)`` (``<eos>`` then pads after the end)."""
    memory, mask, state = model.encode(src, src_len)
    B = src.shape[0]
    prev = torch.full((B,), SOS, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_len):
        logits, _, state = model.step(prev, memory, mask, state)
        tok = logits.argmax(-1).masked_fill(done, PAD)
        out.append(tok)
        done = done | (tok == EOS)
        prev = tok
        if bool(done.all()):
            break
    return torch.stack(out, 1)
