"""EquiGPT2, R-EquiGPT2 and equizero generation for fairness in text generation (Basu et al., 2023).

The group swaps *equality words* -- ``man ↔ woman``, ``Black ↔ White``, ``gay ↔ straight`` -- each
attribute a :math:`\\mathbb{Z}_2`, several attributes their direct product. It acts on input token ids
(``t ↦ table[t]``) and on the next-token logits (the same vocabulary permutation). Generation runs the
``|G|`` transformed copies of the prompt as one batch **with the KV cache**: the prompt orbit is encoded
once, then every step feeds each copy only its new token ``g·y_t`` (the released EquiNLG code re-encodes
the whole context for every token and every group element). At each step the copies' logits are mapped
back with ``g⁻¹`` and combined by a core symmetrizer (:mod:`equirl.symmetrizers`), so the next-token
distribution is exactly equivariant: swapping the prompt swaps the distribution of the continuation.

* **EquiGPT2**: the equality sets of the paper (gender from the line-aligned male/female word lists,
  colour, sexuality);
* **R-EquiGPT2** (relaxed): only ``man ↔ woman``, ``Black ↔ White``, ``gay ↔ straight``; *general words*
  (he, she, his, her, him) are never swapped, so they are left to the model.

Only single-token words (with GPT-2's leading space, ``" man"``) can be swapped by a vocabulary
permutation; a multi-token word is rejected with a clear message (``on_multi_token="error"``) or
skipped with a warning (``"skip"``), and so is a word that would be swapped with two partners.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction, SignedPermAction, permutation_action, product_action, token_action
from equirl.errors import CheckpointError, SymmetryError
from equirl.groups import Group, direct_product, permutation_group
from equirl.registry import EQUITUNE, get_method
from equirl.symmetrizers import Symmetrizer, symmetrize

log = logging.getLogger(__name__)

__all__ = [
    "EquiGPT2",
    "WordSwapSymmetry",
    "equality_pairs",
    "gender_word_pairs",
    "general_words",
    "generate_plain",
    "generate_reencode",
    "load_gpt2",
    "load_gpt2_tokenizer",
    "tiny_gpt2",
    "tokens_per_second",
    "variant_symmetry",
    "word_sets",
    "word_swap_symmetry",
]

ATTRIBUTES = ("gender", "color", "sexuality")


# --------------------------------------------------------------------------------------------------
# word sets
# --------------------------------------------------------------------------------------------------
def _data(name: str) -> Any:
    return resources.files("equirl.language").joinpath("data").joinpath(name)


def word_sets() -> dict[str, Any]:
    """The packaged EquiNLG word sets (``equinlg_word_sets.json``)."""
    return dict(json.loads(_data("equinlg_word_sets.json").read_text(encoding="utf-8")))


def gender_word_pairs(small: bool = False) -> list[tuple[str, str]]:
    """The line-aligned male/female word pairs (``fairness_words``), with GPT-2's leading space."""
    suffix = "_small" if small else ""
    d = _data("fairness_words")
    male = d.joinpath(f"male_words{suffix}.txt").read_text(encoding="utf-8").split()
    female = d.joinpath(f"female_words{suffix}.txt").read_text(encoding="utf-8").split()
    return [(f" {a}", f" {b}") for a, b in zip(male, female)]


def equality_pairs(
    variant: str = "R-EquiGPT2", attributes: Sequence[str] = ATTRIBUTES
) -> dict[str, list[tuple[str, str]]]:
    """Equality word pairs per attribute.

    :param variant: ``"EquiGPT2"`` (gender = all male/female word pairs) or ``"R-EquiGPT2"`` (gender =
        ``man/woman`` only, general words never swapped).
    :param attributes: a subset of ``gender``, ``color``, ``sexuality``.
    """
    key = variant.replace("-", "").replace("_", "").lower()
    if key not in ("equigpt2", "requigpt2"):
        raise SymmetryError(f"unknown variant {variant!r}: use 'EquiGPT2' or 'R-EquiGPT2'")
    ws = word_sets()
    table = ws["equality_word_sets_R_EquiGPT2"]
    out: dict[str, list[tuple[str, str]]] = {}
    # the long gender list goes last, so that the explicit colour/sexuality pairs keep their words
    for a in sorted(attributes, key=lambda x: x == "gender"):
        if a not in ATTRIBUTES:
            raise SymmetryError(f"unknown attribute {a!r}; choose from {list(ATTRIBUTES)}")
        if a == "gender" and key == "equigpt2":
            out[a] = gender_word_pairs()
        else:
            out[a] = [(p[0], p[1]) for p in table[a]]
    return out


def general_words() -> list[str]:
    """Words R-EquiGPT2 never swaps (he, she, his, her, him)."""
    return list(word_sets()["general_words"])


# --------------------------------------------------------------------------------------------------
# the group
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WordSwapSymmetry:
    """The swap group with its actions on token ids and on vocabulary logits, and the swapped pairs."""

    group: Group
    ids: GroupAction[Any]
    logits: GroupAction[Any]
    pairs: dict[str, list[tuple[int, int]]]


def _single_id(tokenizer: Any, word: str) -> int | None:
    ids = tokenizer.encode(word, add_special_tokens=False) if hasattr(tokenizer, "encode") else None
    if not ids or len(ids) != 1:
        return None
    return int(ids[0])


def word_swap_symmetry(
    tokenizer: Any,
    pairs: Mapping[str, Sequence[tuple[str, str]]],
    vocab_size: int | None = None,
    exclude: Sequence[str] = (),
    on_multi_token: str = "error",
) -> WordSwapSymmetry:
    """Build the product of one :math:`\\mathbb{Z}_2` per attribute, each swapping all its word pairs.

    :param tokenizer: anything with ``encode(text, add_special_tokens=False) -> ids``.
    :param pairs: ``{attribute: [(word_a, word_b), ...]}`` -- words as the tokenizer sees them
        (GPT-2: with a leading space, ``" man"``).
    :param vocab_size: logits size (default ``len(tokenizer)``); the model's may exceed the tokenizer's.
    :param exclude: words never swapped (R-EquiGPT2's general words); a pair touching one is dropped.
    :param on_multi_token: ``"error"`` or ``"skip"`` for words that are not one token, or that would be
        swapped with two different partners.
    """
    if on_multi_token not in ("error", "skip"):
        raise SymmetryError(f"on_multi_token must be 'error' or 'skip', got {on_multi_token!r}")
    if not pairs:
        raise SymmetryError(
            "the word sets are empty: name at least one attribute to swap (attributes: gender, color, sexuality)"
        )
    V = int(vocab_size if vocab_size is not None else len(tokenizer))
    excluded = {w.strip().lower() for w in exclude}
    used: set[int] = set()
    groups: list[Group] = []
    id_acts: list[GroupAction[Any]] = []
    logit_acts: list[GroupAction[Any]] = []
    kept: dict[str, list[tuple[int, int]]] = {}
    for attr, plist in pairs.items():
        perm = list(range(V))
        kept[attr] = []
        for a, b in plist:
            if a.strip().lower() in excluded or b.strip().lower() in excluded:
                continue
            ia, ib = _single_id(tokenizer, a), _single_id(tokenizer, b)
            problem = None
            if ia is None or ib is None:
                problem = f"equality word {a if ia is None else b!r} is not a single token"
            elif ia in used or ib in used or ia == ib or max(ia, ib) >= V:
                problem = f"equality pair ({a!r}, {b!r}) reuses a token already swapped (or is out of range)"
            if problem is not None:
                if on_multi_token == "error":
                    raise SymmetryError(
                        f"{problem}; a vocabulary permutation can only swap single tokens -- use "
                        "on_multi_token='skip' to drop such pairs"
                    )
                log.warning("skipping: %s", problem)
                continue
            assert ia is not None and ib is not None
            perm[ia], perm[ib] = ib, ia
            used.update((ia, ib))
            kept[attr].append((ia, ib))
        if not kept[attr]:
            raise SymmetryError(f"attribute {attr!r} has no single-token equality pair left")
        g = permutation_group([tuple(perm)], name=f"Z2[{attr}]", labels=["e", f"swap_{attr}"])
        groups.append(g)
        id_acts.append(token_action(g))
        logit_acts.append(permutation_action(g))
    if len(groups) == 1:
        return WordSwapSymmetry(groups[0], id_acts[0], logit_acts[0], kept)
    prod = direct_product(*groups)
    return WordSwapSymmetry(prod, product_action(prod, id_acts), product_action(prod, logit_acts), kept)


def variant_symmetry(
    tokenizer: Any,
    variant: str = "R-EquiGPT2",
    attributes: Sequence[str] = ATTRIBUTES,
    vocab_size: int | None = None,
) -> WordSwapSymmetry:
    """The symmetry of EquiGPT2 (all single-token equality words; multi-token ones skipped with a
    warning) or R-EquiGPT2 (man/woman, Black/White, gay/straight; general words excluded; strict)."""
    relaxed = variant.replace("-", "").replace("_", "").lower() == "requigpt2"
    return word_swap_symmetry(
        tokenizer,
        equality_pairs(variant, attributes),
        vocab_size,
        exclude=general_words() if relaxed else (),
        on_multi_token="error" if relaxed else "skip",
    )


# --------------------------------------------------------------------------------------------------
# models and tokenizers
# --------------------------------------------------------------------------------------------------
def load_gpt2(name: str = "gpt2") -> nn.Module:
    """A pretrained ``GPT2LMHeadModel`` from a local folder, the local hub cache or the hub, in eval mode.

    A local folder is checked first (:func:`~equirl.utils.hf_local.check_model_folder`: a
    ``config.json`` of ``model_type`` ``gpt2`` and a weight file); whatever the folder, weights missing
    from it or holding NaN / inf are refused.

    :raises OfflineError: at once, when the model is not local and the hub is offline or unreachable.
    :raises CheckpointError: a broken local folder (one line naming it and the cause).
    """
    from equirl.utils.hf_local import check_loaded, check_model_folder, load_checked
    from equirl.utils.hub import load_from_hub

    def load(n: str, local_only: bool) -> tuple[nn.Module, dict[str, Any]]:
        from transformers import GPT2LMHeadModel

        loaded: Any = GPT2LMHeadModel.from_pretrained(
            n, local_files_only=local_only, output_loading_info=True
        )
        hf, info = loaded
        return hf.eval(), info

    folder = check_model_folder(name, "GPT-2 model", ("gpt2",))
    if folder is not None:
        model, info = load_checked(lambda: load(str(folder), True), folder, "GPT-2 model")
    else:
        model, info = load_from_hub(load, name, "GPT-2 model")
    check_loaded(model, info, name, "GPT-2 model")
    return model


def load_gpt2_tokenizer(name_or_dir: str | Path = "gpt2") -> Any:
    """The GPT-2 tokenizer: from a folder with ``vocab.json`` + ``merges.txt`` (works offline), a local
    ``transformers`` folder (``tokenizer.json``), the local hub cache or the hub (:class:`OfflineError`
    at once without network). A local path that is missing, a file, or a folder with neither is one
    :class:`~equirl.errors.ConfigError` / :class:`~equirl.errors.CheckpointError` line, and so are files
    that do not load (empty, truncated)."""
    from equirl.utils.hf_local import check_tokenizer_path, load_checked
    from equirl.utils.hub import load_from_hub

    what = "GPT-2 tokenizer"
    d = check_tokenizer_path(name_or_dir, what)
    if d is not None and (d / "vocab.json").is_file() and (d / "merges.txt").is_file():

        def from_files() -> Any:
            from tokenizers import ByteLevelBPETokenizer
            from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]

            bpe = ByteLevelBPETokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
            eos = "<|endoftext|>"
            return GPT2TokenizerFast(
                tokenizer_object=bpe._tokenizer, eos_token=eos, bos_token=eos, unk_token=eos
            )

        return _nonempty(load_checked(from_files, d, what), d, what)

    def load(n: str, local_only: bool) -> Any:
        from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]

        return GPT2TokenizerFast.from_pretrained(n, local_files_only=local_only)

    if d is not None:
        if not (d / "tokenizer.json").is_file():
            have = sorted(f for f in ("vocab.json", "merges.txt") if (d / f).is_file())
            raise CheckpointError(
                f"{what} folder {d} is not a tokenizer folder: it needs vocab.json + merges.txt, or "
                f"tokenizer.json (it has {', '.join(have) or 'none of them'})"
            )
        return _nonempty(load_checked(lambda: load(str(d), True), d, what), d, what)
    # transformers 5 returns an empty tokenizer (no vocabulary) for a missing cache entry
    return load_from_hub(load, name_or_dir, what, valid=lambda tok: len(tok) > 1)


def _nonempty(tok: Any, folder: Path, what: str) -> Any:
    """``tok``, refused when it has no vocabulary (an empty ``vocab.json``...)."""
    if len(tok) <= 1:
        raise CheckpointError(f"{what} folder {folder} holds no vocabulary ({len(tok)} tokens): refused")
    return tok


def tiny_gpt2(
    vocab_size: int = 50257,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 256,
    seed: int = 0,
) -> nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` (tests, benchmarks)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions
    )
    return GPT2LMHeadModel(cfg).eval()


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------
#: per model class: the name of its KV cache (:func:`_cache_name`)
_CACHE_NAMES: dict[type, str] = {}


def _cache_name(cls: type) -> str:
    """The keyword (and output field) of a ``transformers`` model's KV cache: ``cache`` where its
    ``forward`` takes it (transformers 5, where ``past_key_values`` is deprecated and warns), else
    ``past_key_values``."""
    name = _CACHE_NAMES.get(cls)
    if name is None:
        try:
            params = inspect.signature(cls.forward).parameters  # type: ignore[attr-defined]
            name = "cache" if "cache" in params else "past_key_values"
        except (AttributeError, TypeError, ValueError):
            name = "past_key_values"
        _CACHE_NAMES[cls] = name
    return name


def _cache_arg(model: Any, past: Any) -> dict[str, Any]:
    return {_cache_name(type(model)): past}


def _cache_of(model: Any, out: Any) -> Any:
    return getattr(out, _cache_name(type(model)))


def _positions(mask: Tensor) -> Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _choose(
    logits: Tensor, do_sample: bool, top_k: int, temperature: float, generator: torch.Generator | None
) -> Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / max(temperature, 1e-6)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _sample_loop(
    next_logits: Callable[[Tensor | None], Tensor],
    max_new_tokens: int,
    do_sample: bool,
    top_k: int,
    temperature: float,
    generator: torch.Generator | None,
) -> Tensor:
    """The KV-cache generation loop shared by plain and symmetrized GPT-2.

    :param next_logits: ``next_logits(None)`` reads the prompt and returns the first step's ``(B, V)``
        logits; ``next_logits(tok)`` feeds the chosen tokens ``(B,)`` and returns the next step's.
    """
    out: list[Tensor] = []
    logits = next_logits(None)
    for i in range(max_new_tokens):
        tok = _choose(logits, do_sample, top_k, temperature, generator)
        out.append(tok)
        if i < max_new_tokens - 1:
            logits = next_logits(tok)
    return torch.stack(out, 1)


class EquiGPT2(nn.Module):
    """A causal LM made equivariant to a word-swap group, step by step, with the KV cache.

    :param model: a ``transformers`` causal LM (``GPT2LMHeadModel``) returning ``.logits`` and
        its KV cache (``.cache``; ``.past_key_values`` before transformers 5).
    :param symmetry: the swap group and its actions (:func:`word_swap_symmetry`).
    :param method: ``"equitune"`` (EquiGPT2 / R-EquiGPT2), ``"equizero"`` (per-step proxy, e.g.
        ``proxy="entropy"``) or ``"lambda"`` (λ-net on the last hidden state).
    :param fast_head: for equitune and λ-equitune with a bias-free linear LM head (GPT-2), use that the
        head is linear: the average of ``g⁻¹·(h_g W^T)`` equals ``(Σ_g w_g h_g) W^T`` on every token no
        element moves, so :meth:`generate` runs the vocabulary projection once on the averaged hidden
        state and fixes the few swapped columns per copy -- the same logits up to float rounding, at
        the head cost of the plain model. Equizero needs every copy's full distribution and never uses it.
    :param kwargs: passed to the core symmetrizer.
    """

    def __init__(
        self,
        model: nn.Module,
        symmetry: WordSwapSymmetry,
        method: str = EQUITUNE,
        fast_head: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        spec = get_method(method)
        is_lambda = spec.learned_weights
        hf: Any = model
        if is_lambda:
            kwargs.setdefault("lambda_in_features", int(hf.config.n_embd))
        self.symmetry = symmetry
        self.sym: Symmetrizer = symmetrize(model, symmetry.ids, symmetry.logits, method, **kwargs)
        self._needs_hidden = is_lambda
        head = getattr(hf, "lm_head", None)
        self._fast = (
            fast_head
            and (spec.name == EQUITUNE or is_lambda)
            and isinstance(head, nn.Linear)
            and head.bias is None
            and hasattr(hf, "transformer")
            and isinstance(symmetry.logits, SignedPermAction)
            and not symmetry.logits.has_signs
        )
        if self._fast:
            acts = symmetry.logits
            moved = sorted({v for t in acts.transforms for v, s in enumerate(t.src) if v != s})
            pos = {v: k for k, v in enumerate(moved)}
            inv = symmetry.group.inverse_indices
            # (g⁻¹·y)[v] = y[src_{g⁻¹}[v]]; the moved set is closed under the group
            table = [
                [pos[acts.transforms[inv[g]].src[v]] for v in moved] for g in range(symmetry.group.order)
            ]
            self.register_buffer("_moved", torch.tensor(moved, dtype=torch.long), persistent=False)
            self.register_buffer("_moved_src", torch.tensor(table, dtype=torch.long), persistent=False)

    @property
    def model(self) -> nn.Module:
        return self.sym.model

    def _run(self, ids: Tensor, mask: Tensor, past: Any = None) -> tuple[Tensor, Tensor | None, Any]:
        pos = _positions(mask)[:, -ids.shape[1] :]
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=self._needs_hidden,
            **_cache_arg(self.model, past),
        )
        feats = out.hidden_states[-1][:, -1] if self._needs_hidden else None
        return out.logits, feats, _cache_of(self.model, out)

    def _run_fast(self, ids: Tensor, mask: Tensor, past: Any = None) -> tuple[Tensor, Any]:
        """The transformer body only: last hidden states ``(G·B, H)`` and the cache."""
        hf: Any = self.model
        out = hf.transformer(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask)[:, -ids.shape[1] :],
            use_cache=True,
            **_cache_arg(hf.transformer, past),
        )
        return out.last_hidden_state[:, -1], _cache_of(hf.transformer, out)

    def _combine_fast(self, hidden: Tensor, B: int) -> Tensor:
        """Equitune / λ-equitune logits from hidden states with one vocabulary projection."""
        G = self.symmetry.group.order
        hf: Any = self.model
        h = hidden.view(G, B, -1)
        if self._needs_hidden:
            w = torch.softmax(self.sym.lambda_logits(hidden).view(G, B).float(), dim=0).to(h.dtype)  # type: ignore[operator]
        else:
            w = h.new_full((G, B), 1.0 / G)
        logits = hf.lm_head((w[..., None] * h).sum(0))
        moved: Any = self._moved
        moved_src: Any = self._moved_src
        part = h @ hf.lm_head.weight[moved].T  # (G, B, |moved|), in each copy's frame
        back = part.gather(-1, moved_src[:, None, :].expand(G, B, -1))
        logits[:, moved] = (w[..., None] * back).sum(0)
        return logits

    def _combine(self, logits: Tensor, feats: Tensor | None, B: int) -> tuple[Tensor, Tensor]:
        G = self.symmetry.group.order
        x_rows = feats if feats is not None else logits
        out = self.sym.combine(x_rows, logits.view(G, B, -1))
        return out.output, out.weights

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Symmetrized next-token logits at every position, ``(B, T, V)`` (teacher forcing, no cache)."""
        G, (B, T) = self.symmetry.group.order, input_ids.shape
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = self.symmetry.ids.orbit(input_ids).reshape(G * B, T)
        out = self.model(
            input_ids=rows,
            attention_mask=mask.repeat(G, 1),
            position_ids=_positions(mask).repeat(G, 1),
            output_hidden_states=self._needs_hidden,
        )
        ys = out.logits.view(G, B, T, -1).transpose(1, 2).reshape(G, T * B, -1)
        feats = (
            out.hidden_states[-1].view(G, B, T, -1).transpose(1, 2).reshape(G * T * B, -1)
            if self._needs_hidden
            else ys
        )
        res = self.sym.combine(feats, ys)
        return res.output.view(T, B, -1).transpose(0, 1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int = 15,
        attention_mask: Tensor | None = None,
        do_sample: bool = False,
        top_k: int = 40,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Generate ``max_new_tokens`` tokens after (left-padded) prompts ``(B, T)``; returns ``(B, new)``.

        The orbit of the prompt is encoded once; each step feeds every copy ``g`` its own ``g·y_t``.
        """
        G, (B, T) = self.symmetry.group.order, input_ids.shape
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = self.symmetry.ids.orbit(input_ids).reshape(G * B, T)
        rmask = mask.repeat(G, 1)
        past: Any = None

        def next_logits(tok: Tensor | None) -> Tensor:
            nonlocal rmask, past
            ids = rows
            if tok is not None:  # every copy g is fed its own g·y_t
                ids = self.symmetry.ids.orbit(tok).reshape(G * B, 1)
                rmask = torch.cat([rmask, rmask.new_ones(G * B, 1)], 1)
            if self._fast:
                hidden, past = self._run_fast(ids, rmask, past)
                return self._combine_fast(hidden, B)
            logits, feats, past = self._run(ids, rmask, past)
            return self._combine(logits[:, -1], feats, B)[0]

        return _sample_loop(next_logits, max_new_tokens, do_sample, top_k, temperature, generator)

    @torch.no_grad()
    def generate_equizero(
        self,
        input_ids: Tensor,
        scorer: Callable[[Tensor], Tensor],
        max_new_tokens: int = 15,
        attention_mask: Tensor | None = None,
        do_sample: bool = False,
        top_k: int = 40,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sequence-level equizero with a pluggable scorer: generate a continuation for every ``g·x`` (one
        batch, KV cache), map each back with ``g⁻¹``, and keep the one with the *lowest* score.

        :param scorer: maps continuations ``(N, new)`` (ids in the caller's frame) to ``(N,)`` losses
            (e.g. minus a regard classifier's positive probability).
        :returns: ``(continuations (B, new), chosen element index (B,))``; ties pick the lowest index.
        """
        G, (B, T) = self.symmetry.group.order, input_ids.shape
        rows = self.symmetry.ids.orbit(input_ids).reshape(G * B, T)
        mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).repeat(G, 1)
        cont = generate_plain(self.model, rows, max_new_tokens, mask, do_sample, top_k, generator=generator)
        back = self.symmetry.ids.inverse_stacked(cont.view(G, B, -1))  # g⁻¹ · continuation of g·x
        scores = torch.as_tensor(scorer(back.reshape(G * B, -1))).view(G, B)
        pick = scores.argmin(0)
        return back[pick, torch.arange(B)], pick


@torch.no_grad()
def generate_plain(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int = 15,
    attention_mask: Tensor | None = None,
    do_sample: bool = False,
    top_k: int = 40,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Plain generation with the KV cache (the same loop as :meth:`EquiGPT2.generate`, no group)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    past: Any = None

    def next_logits(tok: Tensor | None) -> Tensor:
        nonlocal mask, past
        if tok is None:
            ids, pos = input_ids, _positions(mask)
        else:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            ids, pos = tok[:, None], _positions(mask)[:, -1:]
        out_ = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **_cache_arg(model, past),
        )
        past = _cache_of(model, out_)
        return out_.logits[:, -1]

    return _sample_loop(next_logits, max_new_tokens, do_sample, top_k, temperature, generator)


@torch.no_grad()
def generate_reencode(
    model: nn.Module, symmetry: WordSwapSymmetry, input_ids: Tensor, max_new_tokens: int = 15
) -> Tensor:
    """The reference loop of the released EquiNLG code: for every new token and every group element,
    re-encode the whole transformed context without a cache (greedy equitune). For benchmarks and tests."""
    ids = input_ids
    out = []
    inv = symmetry.group.inverse_indices
    for _ in range(max_new_tokens):
        acc = None
        for g in range(symmetry.group.order):
            lg = model(input_ids=symmetry.ids.apply(ids, g), use_cache=False, logits_to_keep=1).logits[:, -1]
            back = symmetry.logits.apply(lg, inv[g])
            acc = back if acc is None else acc + back
        assert acc is not None
        tok = (acc / symmetry.group.order).argmax(-1)
        out.append(tok)
        ids = torch.cat([ids, tok[:, None]], 1)
    return torch.stack(out, 1)


def tokens_per_second(fn: Callable[[], Tensor], n_tokens: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` generated tokens per second of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_tokens / best
