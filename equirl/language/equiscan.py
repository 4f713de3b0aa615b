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

from equirl.actions import GroupAction, permutation_action, product_action, token_action, trivial_action
from equirl.errors import EquirlError, SymmetryError
from equirl.groups import Group, direct_product, permutation_group
from equirl.language.scan import ScanExample, interpret
from equirl.language.seq2seq import EOS, PAD, SOS, Seq2Seq, Vocab, batch_examples, scan_vocabs
from equirl.registry import EQUITUNE, get_method
from equirl.symmetrizers import EquiZero, Symmetrizer, symmetrize
from equirl.utils.progress import ProgressFn

__all__ = [
    "SCAN_SWAPS",
    "SPLIT_SYMMETRY",
    "ClauseSymmetry",
    "Frames",
    "ScanSymmetry",
    "SymmetrizedSeq2Seq",
    "exact_match",
    "global_symmetry",
    "scan_symmetry",
    "split_symmetry",
]

#: named word permutations: (source word cycle, target action cycle); ``w[i] ↦ w[i+1]``. A 2-cycle is a swap.
SCAN_SWAPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "jump_run": (("jump", "run"), ("I_JUMP", "I_RUN")),
    "left_right": (("left", "right"), ("I_TURN_LEFT", "I_TURN_RIGHT")),
    "walk_look": (("walk", "look"), ("I_WALK", "I_LOOK")),
    # C4 cycling the four primitives (Gordon et al., 2020): reaches every Add Jump test command, also
    # those that contain both jump and run, which jump_run alone maps to another test command
    "verbs": (("walk", "look", "run", "jump"), ("I_WALK", "I_LOOK", "I_RUN", "I_JUMP")),
}

#: the symmetry each SCAN split is evaluated with (canonical split names; others: ``jump_run``)
SPLIT_SYMMETRY: dict[str, str] = {
    "addprim_jump": "jump_run",
    "template_around_right": "left_right",
    "addprim_turn_left": "left_right",
}


def split_symmetry(split: str) -> str:
    """The symmetry spec for a canonical SCAN split name (:data:`SPLIT_SYMMETRY`, else ``jump_run``)."""
    return SPLIT_SYMMETRY.get(split, "jump_run")


@dataclass(frozen=True)
class ScanSymmetry:
    """A group with its three actions: on source ids, on target logits and on target ids.

    The same permutation acts at every position; :meth:`bind` gives the per-batch view that
    :class:`SymmetrizedSeq2Seq` uses (shared with :class:`ClauseSymmetry`, whose action depends on
    the position).
    """

    group: Group
    src: GroupAction[Any]
    logits: GroupAction[Any]
    tgt: GroupAction[Any]

    def bind(self, src: Tensor, src_len: Tensor) -> Frames:
        """The action on this batch of commands (``src`` ``(B, S)``) and on their outputs."""
        return _GlobalFrames(self, src)


class Frames:
    """How a SCAN symmetry acts on one batch of commands and on output sequences *for those commands*.

    Output positions are absolute: ``start`` is the position of the first column of ``ids``/``ys``.
    Element ``k`` is ``group[k]``; every method works on the whole orbit (group axis first).
    """

    group: Group
    src: Tensor

    def src_orbit(self) -> Tensor:
        """``(G, B, S)``: ``g·x`` for every element."""
        raise NotImplementedError

    def tgt_orbit(self, ids: Tensor, start: int = 0) -> Tensor:
        """``ids`` ``(B, T)`` (caller's frame) -> ``(G, B, T)``: ``g·ids``."""
        raise NotImplementedError

    def tgt_back(self, ids: Tensor, start: int = 0) -> Tensor:
        """``ids`` ``(G, B, T)`` in each copy's frame -> ``g⁻¹·ids[g]``."""
        raise NotImplementedError

    def logits_back(self, ys: Tensor, start: int = 0) -> Tensor:
        """``ys`` ``(G, B, T, V)`` in each copy's frame -> ``g⁻¹·ys[g]`` (a permutation of the last axis)."""
        raise NotImplementedError

    def apply_src(self, k: int) -> Tensor:
        """``g_k·x`` ``(B, S)``."""
        return self.src_orbit()[k]

    def apply_tgt(self, ids: Tensor, k: int, start: int = 0) -> Tensor:
        """``g_k·ids`` ``(B, T)``."""
        return self.tgt_orbit(ids, start)[k]

    def apply_logits(self, ys: Tensor, k: int, start: int = 0) -> Tensor:
        """``g_k·ys`` for logits ``(B, T, V)`` in the caller's frame."""
        inv = self.group.inverse_indices[k]
        stacked = ys.unsqueeze(0).expand(self.group.order, *ys.shape)
        return self.logits_back(stacked, start)[inv]


class _GlobalFrames(Frames):
    """The same permutation at every position (:class:`ScanSymmetry`)."""

    def __init__(self, sym: ScanSymmetry, src: Tensor) -> None:
        self.sym, self.group, self.src = sym, sym.group, src

    def src_orbit(self) -> Tensor:
        return self.sym.src.orbit(self.src)

    def tgt_orbit(self, ids: Tensor, start: int = 0) -> Tensor:
        return self.sym.tgt.orbit(ids)

    def tgt_back(self, ids: Tensor, start: int = 0) -> Tensor:
        return self.sym.tgt.inverse_stacked(ids)

    def logits_back(self, ys: Tensor, start: int = 0) -> Tensor:
        G, B, T, V = ys.shape
        return self.sym.logits.inverse_stacked(ys.reshape(G, B * T, V)).view(G, B, T, V)


class ClauseSymmetry:
    """A SCAN symmetry applied to each clause of a command independently: ``H × H`` for a base group ``H``.

    A SCAN command is one clause or two joined by ``and`` / ``after``; its output is the concatenation
    of the clauses' outputs (``x after y``: ``y``'s first). Swapping ``left ↔ right`` inside one clause
    swaps ``I_TURN_LEFT ↔ I_TURN_RIGHT`` inside that clause's output segment only, and segment lengths do
    not change, so ``(h₁, h₂)`` acting by ``h₁`` on clause 1 and its segment and by ``h₂`` on clause 2 and
    its segment is a group action on (command, output) pairs. The global symmetry is its diagonal
    subgroup. On Around Right it maps *every* test command into the train set -- the global
    ``left ↔ right`` cannot for commands holding both ``around right`` and ``around left``.

    Output positions past the command's expected output length are left alone (identity), and a clause
    that is not in the SCAN grammar gets an empty segment; both keep the action well defined on any input.

    :param base: the symmetry used inside each clause (:func:`scan_symmetry`; must not move ``and``,
        ``after``, ``twice``, ``thrice``).
    :param src_vocab: source vocabulary.
    :param tgt_vocab: target vocabulary.
    """

    CONJUNCTIONS = ("and", "after")

    def __init__(self, base: ScanSymmetry, src_vocab: Vocab, tgt_vocab: Vocab) -> None:
        self.base, self.src_vocab, self.tgt_vocab = base, src_vocab, tgt_vocab
        H = base.group
        self.group = direct_product(H, H)
        hs = list(H.elements)
        self._src_tab = torch.stack([base.src.apply(torch.arange(len(src_vocab)), h) for h in hs])
        self._tgt_tab = torch.stack([base.tgt.apply(torch.arange(len(tgt_vocab)), h) for h in hs])
        ar = torch.arange(len(tgt_vocab), dtype=torch.float64)[None]
        self._logit_idx = torch.stack([base.logits.apply(ar, h)[0].round().long() for h in hs])
        self._inv = torch.tensor(H.inverse_indices)
        e = H.identity.index
        # per product element: the base element acting on [outside, clause 1, clause 2]
        self._clause_elem = torch.tensor([[e, i, j] for i, j in self.group.data])
        fixed = {src_vocab.id(w) for w in (*self.CONJUNCTIONS, "twice", "thrice") if w in src_vocab.tokens}
        for k in range(H.order):
            if any(int(self._src_tab[k, w]) != w for w in fixed):
                raise SymmetryError("a clause-wise SCAN symmetry must not move and/after/twice/thrice")
        self._cache: dict[tuple[int, ...], tuple[list[int], int, int, bool]] = {}

    @property
    def name(self) -> str:
        return f"{self.base.group.name}@clauses"

    def _parse(self, ids: tuple[int, ...]) -> tuple[list[int], int, int, bool]:
        """(clause of each source position, output length of clause 1, of clause 2, clause 2 first)."""
        hit = self._cache.get(ids)
        if hit is not None:
            return hit
        words = [self.src_vocab.tokens[i] for i in ids]
        cut = next((k for k, w in enumerate(words) if w in self.CONJUNCTIONS), len(words))
        seg = [1] * cut + [0] * (len(words) > cut) + [2] * max(0, len(words) - cut - 1)
        c1, c2 = words[:cut], words[cut + 1 :]
        second_first = cut < len(words) and words[cut] == "after"
        out = (seg, _out_len(c1), _out_len(c2), second_first)
        self._cache[ids] = out
        return out

    def bind(self, src: Tensor, src_len: Tensor) -> Frames:
        return _ClauseFrames(self, src, src_len)


def _out_len(words: Sequence[str]) -> int:
    """Output length of one SCAN clause (0 if it is not in the grammar)."""
    if not words:
        return 0
    try:
        return len(interpret(list(words)))
    except EquirlError:
        return 0


class _ClauseFrames(Frames):
    def __init__(self, sym: ClauseSymmetry, src: Tensor, src_len: Tensor) -> None:
        self.sym, self.group, self.src = sym, sym.group, src
        B, S = src.shape
        seg = torch.zeros(B, S, dtype=torch.long)
        first, second = torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long)
        self._first_clause = torch.ones(B, dtype=torch.long)
        for b, (row, n) in enumerate(zip(src.tolist(), src_len.tolist())):
            sg, l1, l2, swap = sym._parse(tuple(row[:n]))
            seg[b, :n] = torch.tensor(sg, dtype=torch.long)
            first[b], second[b] = (l2, l1) if swap else (l1, l2)
            self._first_clause[b] = 2 if swap else 1
        dev = src.device
        self._src_seg, self._len1, self._len2 = seg.to(dev), first.to(dev), second.to(dev)
        self._first_clause = self._first_clause.to(dev)
        self._clause_elem = sym._clause_elem.to(dev)
        self._src_tab, self._tgt_tab = sym._src_tab.to(dev), sym._tgt_tab.to(dev)
        self._logit_idx, self._inv = sym._logit_idx.to(dev), sym._inv.to(dev)

    def _tgt_seg(self, start: int, T: int) -> Tensor:
        """``(B, T)`` clause (0 outside) of output positions ``start .. start+T-1``."""
        pos = torch.arange(start, start + T, device=self.src.device)[None]
        l1, l2 = self._len1[:, None], self._len2[:, None]
        fc = self._first_clause[:, None]
        seg = torch.where(pos < l1, fc, torch.where(pos < l1 + l2, 3 - fc, torch.zeros_like(fc)))
        return seg.masked_fill(pos < 0, 0)

    def _elems(self, seg: Tensor, inverse: bool = False) -> Tensor:
        idx = self._clause_elem[:, seg]  # (G, B, L) base element per position
        return self._inv[idx] if inverse else idx

    def src_orbit(self) -> Tensor:
        idx = self._elems(self._src_seg)
        return self._src_tab[idx, self.src.unsqueeze(0).expand_as(idx)]

    def tgt_orbit(self, ids: Tensor, start: int = 0) -> Tensor:
        idx = self._elems(self._tgt_seg(start, ids.shape[1]))
        return self._tgt_tab[idx, ids.unsqueeze(0).expand_as(idx)]

    def tgt_back(self, ids: Tensor, start: int = 0) -> Tensor:
        idx = self._elems(self._tgt_seg(start, ids.shape[2]), inverse=True)
        return self._tgt_tab[idx, ids]

    def logits_back(self, ys: Tensor, start: int = 0) -> Tensor:
        idx = self._elems(self._tgt_seg(start, ys.shape[2]), inverse=True)
        return ys.gather(-1, self._logit_idx[idx])


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
) -> ScanSymmetry | ClauseSymmetry:
    """The symmetry ``spec``: ``"jump_run"``, ``"left_right"``, a product ``"jump_run+left_right"``, or
    any of them applied clause by clause with the suffix ``@clauses`` (``"left_right@clauses"``:
    :class:`ClauseSymmetry`).

    :param spec: swap names joined by ``+`` (or a list of names); a product is the direct product.
    :param src_vocab: source vocabulary (default: SCAN's).
    :param tgt_vocab: target vocabulary (default: SCAN's).
    """
    if src_vocab is None or tgt_vocab is None:
        src_vocab, tgt_vocab = scan_vocabs()
    if isinstance(spec, str) and spec.strip().endswith(CLAUSES):
        return ClauseSymmetry(
            global_symmetry(spec.strip()[: -len(CLAUSES)], src_vocab, tgt_vocab), src_vocab, tgt_vocab
        )
    return global_symmetry(spec, src_vocab, tgt_vocab)


#: suffix of a clause-wise spec (:class:`ClauseSymmetry`)
CLAUSES = "@clauses"


def global_symmetry(
    spec: str | Sequence[str], src_vocab: Vocab | None = None, tgt_vocab: Vocab | None = None
) -> ScanSymmetry:
    """Like :func:`scan_symmetry`, for a symmetry acting the same way at every position."""
    if src_vocab is None or tgt_vocab is None:
        src_vocab, tgt_vocab = scan_vocabs()
    if isinstance(spec, str) and CLAUSES in spec:
        raise SymmetryError(f"{spec!r}: a clause-wise symmetry is not supported here; use a global one")
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
    :param symmetry: the group and its actions (:func:`scan_symmetry`; a :class:`ClauseSymmetry` for
        clause-wise swaps).
    :param method: ``"equitune"``, ``"equizero"``, ``"lambda"`` or any registered symmetrizer.
    :param level: for equizero, ``"sequence"`` (default: decode every copy ``g·x`` greedily in its own
        frame, sum the proxy over its steps, keep the best copy and map it back with ``g⁻¹``) or
        ``"step"`` (choose the element anew at every step). Other methods always combine per step.
        Teacher-forced :meth:`forward` (finetuning) is always per step (straight-through for equizero).
    :param kwargs: passed to the symmetrizer (``proxy="nll"`` for equizero...). For λ-equitune the
        λ-net reads the decoder state of each copy (``lambda_in_features`` defaults to its size).

    The copies' logits are mapped back by ``g⁻¹`` here (the action may depend on the position and on
    the command, see :class:`ClauseSymmetry`), and the core symmetrizer combines the mapped-back
    outputs (it is built with an invariant output action).
    """

    def __init__(
        self,
        model: Seq2Seq,
        symmetry: ScanSymmetry | ClauseSymmetry,
        method: str = EQUITUNE,
        level: str = "sequence",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if level not in ("sequence", "step"):
            raise SymmetryError(f"level must be 'sequence' or 'step', got {level!r}")
        self.level = level
        if get_method(method).learned_weights:
            kwargs.setdefault("lambda_in_features", model.hidden)
        self.symmetry = symmetry
        self.method = method
        self.sym: Symmetrizer = symmetrize(model, trivial_action(symmetry.group), None, method, **kwargs)

    @property
    def model(self) -> Seq2Seq:
        m = self.sym.model
        assert isinstance(m, Seq2Seq)
        return m

    def _encode(self, fr: Frames, src_len: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        G, (B, S) = self.symmetry.group.order, fr.src.shape
        return self.model.encode(fr.src_orbit().reshape(G * B, S), src_len.repeat(G))

    def _step(
        self, fr: Frames, t: int, prev: Tensor, memory: Tensor, mask: Tensor, state: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """Symmetrized step ``t``: ``prev`` ``(B,)`` (position ``t-1``, caller's frame) ->
        ``(logits (B,V), weights (G,B), state)``."""
        G, B = self.symmetry.group.order, prev.shape[0]
        rows = fr.tgt_orbit(prev[:, None], t - 1).reshape(G * B)
        logits, feats, state = self.model.step(rows, memory, mask, state)
        back = fr.logits_back(logits.view(G, B, 1, -1), t).view(G, B, -1)
        out = self.sym.combine(feats, back)
        return out.output, out.weights, state

    def forward(self, src: Tensor, src_len: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced symmetrized logits ``(B, T, V)``: copy ``g`` reads ``g·x`` and ``g·tgt``."""
        G, (B, T) = self.symmetry.group.order, tgt.shape
        fr = self.symmetry.bind(src, src_len)
        rows = fr.src_orbit().reshape(G * B, -1)
        trows = fr.tgt_orbit(tgt).reshape(G * B, T)
        logits, feats = self.model.teacher_forced(rows, src_len.repeat(G), trows)
        back = fr.logits_back(logits.view(G, B, T, -1))
        out = self.sym.combine(feats.reshape(G * B * T, -1), back.reshape(G, B * T, -1))
        return out.output.view(B, T, -1)

    @torch.no_grad()
    def greedy(self, src: Tensor, src_len: Tensor, max_len: int = 60, return_logits: bool = False) -> Any:
        """Batched greedy decoding from the symmetrized step distributions.

        :returns: ids ``(B, T)``; with ``return_logits`` also the step logits ``(B, T, V)`` and the orbit
            weights ``(T, G, B)`` (equizero's picks, λ's weights).
        """
        fr = self.symmetry.bind(src, src_len)
        if self.level == "sequence" and isinstance(self.sym, EquiZero):
            return self._greedy_sequence(fr, src_len, max_len, return_logits)
        memory, mask, state = self._encode(fr, src_len)
        B = src.shape[0]
        prev = torch.full((B,), SOS, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        toks, logs, ws = [], [], []
        for t in range(max_len):
            logits, w, state = self._step(fr, t, prev, memory, mask, state)
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

    def _greedy_sequence(self, fr: Frames, src_len: Tensor, max_len: int, return_logits: bool) -> Any:
        """Sequence-level equizero: ``g* = argmin_g Σ_t ℓ_t(M(g·x))``, output ``g*⁻¹·y_{g*}``."""
        assert isinstance(self.sym, EquiZero)
        G, B = self.symmetry.group.order, src_len.shape[0]
        dev = src_len.device
        memory, mask, state = self._encode(fr, src_len)
        prev = torch.full((G * B,), SOS, dtype=torch.long, device=dev)
        done = torch.zeros(G * B, dtype=torch.bool, device=dev)
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
        ar = torch.arange(B, device=dev)
        ids = fr.tgt_back(torch.stack(toks, 1).view(G, B, -1))[pick, ar]
        if not return_logits:
            return ids
        T = len(logs)
        back = fr.logits_back(torch.stack(logs, 1).view(G, B, T, -1))[pick, ar]
        w = torch.zeros(T, G, B, device=dev)
        w[:, pick, ar] = 1.0
        return ids, back, w


def exact_match(
    decode: Callable[[Tensor, Tensor], Tensor],
    examples: Sequence[ScanExample],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> float:
    """Fraction of ``examples`` whose greedy output equals the reference action sequence.

    :param progress: called as ``progress(examples done, len(examples))`` after each batch.
    """
    if not examples:
        raise SymmetryError("no examples to evaluate")
    hits, k = 0, 0
    for src, src_len, _ in batch_examples(examples, batch_size, src_vocab, tgt_vocab):
        ids = decode(src, src_len).tolist()
        hits += sum(tgt_vocab.decode(i) == e.actions for i, e in zip(ids, examples[k : k + len(ids)]))
        k += len(ids)
        if progress is not None:
            progress(k, len(examples))
    return hits / len(examples)
