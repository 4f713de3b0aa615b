"""Symmetrized autoregressive decoding on SCAN (equitune, equizero, λ-equitune; Basu et al., 2023).

A SCAN symmetry swaps words of the command and the matching actions: ``jump ↔ run`` with
``I_JUMP ↔ I_RUN`` (Add Jump), ``left ↔ right`` with ``I_TURN_LEFT ↔ I_TURN_RIGHT`` (Around Right),
or a direct product of such swaps. :class:`SymmetrizedSeq2Seq` runs the ``|G|`` transformed copies of a
batch side by side: copy ``g`` encodes ``g·x`` and, at every step, is fed ``g·y_{<t}`` -- the tokens
chosen so far, *in its own frame*. Its logits are mapped back with ``g⁻¹`` (a vocabulary permutation)
and combined by a core symmetrizer (:mod:`equirl.symmetrizers`). If the input is replaced by ``s·x``,
copy ``g`` sees exactly what copy ``g s`` saw before, so the combined step distribution is ``s·`` the old
one at every step and, by induction, the whole greedy sequence is ``s·y``: exact equivariance of the
decoded sequence, not only of one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction, permutation_action, product_action, token_action
from equirl.errors import SymmetryError
from equirl.groups import Group, direct_product, permutation_group
from equirl.language.scan import ScanExample
from equirl.language.seq2seq import EOS, PAD, SOS, Seq2Seq, Vocab, batch_examples, scan_vocabs
from equirl.symmetrizers import EquiZero, Symmetrizer, symmetrize

__all__ = ["SCAN_SWAPS", "ScanSymmetry", "SymmetrizedSeq2Seq", "exact_match", "scan_symmetry"]

#: named word permutations: (source word cycle, target action cycle); ``w[i] ↦ w[i+1]``. A 2-cycle is a swap.
SCAN_SWAPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "jump_run": (("jump", "run"), ("I_JUMP", "I_RUN")),
    "left_right": (("left", "right"), ("I_TURN_LEFT", "I_TURN_RIGHT")),
    "walk_look": (("walk", "look"), ("I_WALK", "I_LOOK")),
    # C4 cycling the four primitives (Gordon et al., 2020): reaches every Add Jump test command, also
    # those that contain both jump and run, which jump_run alone maps to another test command
    "verbs": (("walk", "look", "run", "jump"), ("I_WALK", "I_LOOK", "I_RUN", "I_JUMP")),
}


@dataclass(frozen=True)
class ScanSymmetry:
    """A group with its three actions: on source ids, on target logits and on target ids."""

    group: Group
    src: GroupAction[Any]
    logits: GroupAction[Any]
    tgt: GroupAction[Any]


def _cycle(n: int, ids: Sequence[int]) -> tuple[int, ...]:
    """The permutation of ``0..n-1`` sending ``ids[i]`` to ``ids[i+1]`` (cyclically)."""
    if len(set(ids)) != len(ids):
        raise SymmetryError("a word cycle repeats a word")
    p = list(range(n))
    for k, i in enumerate(ids):
        p[i] = ids[(k + 1) % len(ids)]
    return tuple(p)


def _single(name: str, src_vocab: Vocab, tgt_vocab: Vocab) -> ScanSymmetry:
    if name not in SCAN_SWAPS:
        raise SymmetryError(
            f"unknown SCAN symmetry {name!r}; choose from {sorted(SCAN_SWAPS)} (join with '+')"
        )
    words, acts = SCAN_SWAPS[name]
    sp = _cycle(len(src_vocab), [src_vocab.id(w) for w in words])
    tp = _cycle(len(tgt_vocab), [tgt_vocab.id(a) for a in acts])
    n = len(words)
    labels = ["e", name] if n == 2 else ["e"] + [f"{name}^{k}" for k in range(1, n)]
    group = permutation_group([sp], name=f"{'Z' if n == 2 else 'C'}{n}[{name}]", labels=labels)
    return ScanSymmetry(
        group, token_action(group), permutation_action(group, [tp]), token_action(group, [tp])
    )


def scan_symmetry(
    spec: str | Sequence[str], src_vocab: Vocab | None = None, tgt_vocab: Vocab | None = None
) -> ScanSymmetry:
    """The symmetry ``spec``: ``"jump_run"``, ``"left_right"``, or a product ``"jump_run+left_right"``.

    :param spec: swap names joined by ``+`` (or a list of names); a product is the direct product.
    :param src_vocab: source vocabulary (default: SCAN's).
    :param tgt_vocab: target vocabulary (default: SCAN's).
    """
    if src_vocab is None or tgt_vocab is None:
        src_vocab, tgt_vocab = scan_vocabs()
    names = [n.strip() for n in (spec.split("+") if isinstance(spec, str) else spec) if n.strip()]
    if not names:
        raise SymmetryError("empty SCAN symmetry spec")
    if len(set(names)) != len(names):
        raise SymmetryError(f"repeated swap in {spec!r}")
    parts = [_single(n, src_vocab, tgt_vocab) for n in names]
    if len(parts) == 1:
        return parts[0]
    group = direct_product(*(p.group for p in parts))
    return ScanSymmetry(
        group,
        product_action(group, [p.src for p in parts]),
        product_action(group, [p.logits for p in parts]),
        product_action(group, [p.tgt for p in parts]),
    )


class SymmetrizedSeq2Seq(nn.Module):
    """A seq2seq model made equivariant to a SCAN symmetry at every decoding step.

    :param model: the (pretrained) :class:`~equirl.language.seq2seq.Seq2Seq`.
    :param symmetry: the group and its actions (:func:`scan_symmetry`).
    :param method: ``"equitune"``, ``"equizero"``, ``"lambda"`` or any registered symmetrizer.
    :param level: for equizero, ``"sequence"`` (default: decode every copy ``g·x`` greedily in its own
        frame, sum the proxy over its steps, keep the best copy and map it back with ``g⁻¹``) or
        ``"step"`` (choose the element anew at every step). Other methods always combine per step.
        Teacher-forced :meth:`forward` (finetuning) is always per step (straight-through for equizero).
    :param kwargs: passed to the symmetrizer (``proxy="nll"`` for equizero...). For λ-equitune the
        λ-net reads the decoder state of each copy (``lambda_in_features`` defaults to its size).
    """

    def __init__(
        self,
        model: Seq2Seq,
        symmetry: ScanSymmetry,
        method: str = "equitune",
        level: str = "sequence",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if level not in ("sequence", "step"):
            raise SymmetryError(f"level must be 'sequence' or 'step', got {level!r}")
        self.level = level
        if method in ("lambda", "lambda_equitune", "lambda-equitune"):
            kwargs.setdefault("lambda_in_features", model.hidden)
        self.symmetry = symmetry
        self.method = method
        self.sym: Symmetrizer = symmetrize(model, symmetry.src, symmetry.logits, method, **kwargs)

    @property
    def model(self) -> Seq2Seq:
        m = self.sym.model
        assert isinstance(m, Seq2Seq)
        return m

    def _encode(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        G, (B, S) = self.symmetry.group.order, src.shape
        rows = self.symmetry.src.orbit(src).reshape(G * B, S)
        return self.model.encode(rows, src_len.repeat(G))

    def _step(
        self, prev: Tensor, memory: Tensor, mask: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """Symmetrized step: ``prev`` ``(B,)`` in the caller's frame -> ``(logits (B,V), weights (G,B), state)``."""
        G, B = self.symmetry.group.order, prev.shape[0]
        rows = self.symmetry.tgt.orbit(prev).reshape(G * B)
        logits, feats, state = self.model.step(rows, memory, mask, state)
        out = self.sym.combine(feats, logits.view(G, B, -1))
        return out.output, out.weights, state

    def forward(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced symmetrized logits ``(B, T, V)``: copy ``g`` reads ``g·x`` and ``g·tgt``."""
        G, (B, T) = self.symmetry.group.order, tgt.shape
        rows = self.symmetry.src.orbit(src).reshape(G * B, -1)
        trows = self.symmetry.tgt.orbit(tgt).reshape(G * B, T)
        logits, feats = self.model.teacher_forced(rows, src_len.repeat(G), trows)
        ys = logits.view(G, B * T, -1)
        out = self.sym.combine(feats.reshape(G * B * T, -1), ys)
        return out.output.view(B, T, -1)

    @torch.no_grad()
    def greedy(self, src: Tensor, src_len: Tensor, max_len: int = 60, return_logits: bool = False) -> Any:
        """Batched greedy decoding from the symmetrized step distributions.

        :returns: ids ``(B, T)``; with ``return_logits`` also the step logits ``(B, T, V)`` and the orbit
            weights ``(T, G, B)`` (equizero's picks, λ's weights).
        """
        if self.level == "sequence" and isinstance(self.sym, EquiZero):
            return self._greedy_sequence(src, src_len, max_len, return_logits)
        memory, mask, state = self._encode(src, src_len)
        B = src.shape[0]
        prev = torch.full((B,), SOS, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        toks, logs, ws = [], [], []
        for _ in range(max_len):
            logits, w, state = self._step(prev, memory, mask, state)
            tok = logits.argmax(-1).masked_fill(done, PAD)
            toks.append(tok)
            logs.append(logits)
            ws.append(w)
            done = done | (tok == EOS)
            prev = tok
            if bool(done.all()):
                break
        ids = torch.stack(toks, 1)
        if return_logits:
            return ids, torch.stack(logs, 1), torch.stack(ws)
        return ids

    def _greedy_sequence(self, src: Tensor, src_len: Tensor, max_len: int, return_logits: bool) -> Any:
        """Sequence-level equizero: ``g* = argmin_g Σ_t ℓ_t(M(g·x))``, output ``g*⁻¹·y_{g*}``."""
        assert isinstance(self.sym, EquiZero)
        G, B = self.symmetry.group.order, src.shape[0]
        memory, mask, state = self._encode(src, src_len)
        prev = torch.full((G * B,), SOS, dtype=torch.long, device=src.device)
        done = torch.zeros(G * B, dtype=torch.bool, device=src.device)
        toks, logs, losses = [], [], []
        for _ in range(max_len):
            logits, _, state = self.model.step(prev, memory, mask, state)
            step_loss = self.sym.proxy(logits.view(G * B, 1, -1)).view(G * B)
            losses.append(step_loss.masked_fill(done, 0.0))
            tok = logits.argmax(-1).masked_fill(done, PAD)
            toks.append(tok)
            logs.append(logits)
            done = done | (tok == EOS)
            prev = tok
            if bool(done.all()):
                break
        pick = torch.stack(losses, 1).sum(1).view(G, B).argmin(0)
        ar = torch.arange(B, device=src.device)
        ids = self.symmetry.tgt.inverse_stacked(torch.stack(toks, 1).view(G, B, -1))[pick, ar]
        if not return_logits:
            return ids
        T = len(logs)
        lg = torch.stack(logs, 1).view(G, B, T, -1).transpose(1, 2).reshape(G, T * B, -1)
        back = self.symmetry.logits.inverse_stacked(lg).view(G, T, B, -1)[pick, :, ar]
        w = torch.zeros(T, G, B, device=src.device)
        w[:, pick, ar] = 1.0
        return ids, back, w


def exact_match(
    decode: Callable[[Tensor, Tensor], Tensor],
    examples: Sequence[ScanExample],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    batch_size: int = 256,
) -> float:
    """Fraction of ``examples`` whose greedy output equals the reference action sequence."""
    if not examples:
        raise SymmetryError("no examples to evaluate")
    hits, k = 0, 0
    for src, src_len, _ in batch_examples(examples, batch_size, src_vocab, tgt_vocab):
        ids = decode(src, src_len).tolist()
        hits += sum(tgt_vocab.decode(i) == e.actions for i, e in zip(ids, examples[k : k + len(ids)]))
        k += len(ids)
    return hits / len(examples)
