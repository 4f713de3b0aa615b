"""Strict YAML schema of the GPT-2 fairness commands (``equirl language gpt2-generate / gpt2-fairness``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from equirl.config import FieldError, Range
from equirl.registry import EQUITUNE, canonical_method, method_names

__all__ = ["GPT2_METHODS", "Gpt2RunConfig"]

#: the methods of the GPT-2 commands (no scorer-driven ones)
GPT2_METHODS = method_names(learned_scorer=False)


@dataclass(frozen=True)
class Gpt2RunConfig:
    """:param model: a hub name (``gpt2``), a local folder, or ``tiny`` (random weights, offline).
    :param tokenizer: ``default`` (real GPT-2 tokenizer from shared data, else a small local BPE), a folder
        with ``vocab.json`` + ``merges.txt``, or a hub name.
    :param variant: ``EquiGPT2`` or ``R-EquiGPT2``.
    :param method: ``base`` (``plain``), ``equitune``, ``equizero`` or ``lambda`` (aliases accepted).
    :param proxy: equizero's per-step proxy.
    :param attributes: which equality attributes to symmetrize.
    :param prompts: prompts; empty means the 60 packaged fairness prompts.
    :param scorer: ``lexicon`` (offline), ``none`` or a hub text-classifier name.
    """

    model: str = "gpt2"
    tokenizer: str = "default"
    variant: str = "R-EquiGPT2"
    method: str = EQUITUNE
    proxy: str = "entropy"
    attributes: list[str] = field(default_factory=lambda: ["gender", "color", "sexuality"])
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: Annotated[int, Range(ge=1, le=100_000)] = 15
    do_sample: bool = True
    top_k: Annotated[int, Range(ge=0)] = 40
    temperature: Annotated[float, Range(gt=0)] = 1.0
    seed: Annotated[int, Range(ge=0)] = 0
    samples_per_prompt: Annotated[int, Range(ge=1, le=100_000)] = 1
    scorer: str = "lexicon"
    out: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", canonical_method(self.method))
        if self.method not in GPT2_METHODS:
            raise FieldError("method", self.method, f"must be one of {', '.join(GPT2_METHODS)}")
        if self.variant.replace("-", "").lower() not in ("equigpt2", "requigpt2"):
            raise FieldError("variant", self.variant, "must be EquiGPT2 or R-EquiGPT2")
        for i, prompt in enumerate(self.prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise FieldError(
                    f"prompts[{i}]",
                    prompt,
                    "must be non-empty text (the model continues it; give a few words)",
                )
