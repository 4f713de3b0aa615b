"""Strict YAML schemas of the language commands: SCAN pretraining (``equirl language pretrain``) and the
GPT-2 fairness commands (``equirl language gpt2-generate / gpt2-fairness``), and the method names they
take.

Configs are read by :func:`equirl.config.load_config`: unknown keys and wrong types are one-line errors.
This module imports neither torch nor transformers, so the command line can build its parsers from it
cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from equirl.config import FieldError, Range
from equirl.language.scan import canonical_split
from equirl.registry import EQUITUNE, canonical_method, method_names

__all__ = [
    "EVAL_METHODS",
    "GPT2_METHODS",
    "DataConfig",
    "Gpt2RunConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
]

#: the methods ``language eval`` runs on SCAN (the scorer-driven ones have their own benchmark)
EVAL_METHODS = method_names(learned_scorer=False)
#: the methods of the GPT-2 commands (no scorer-driven ones: the same as :data:`EVAL_METHODS`)
GPT2_METHODS = EVAL_METHODS


@dataclass(frozen=True)
class DataConfig:
    """:param split: SCAN split (``simple``, ``add_jump``, ``around_right``, ``length``...).
    :param root: folder of official SCAN files; ``null`` generates them from the grammar.
    :param limit: use only the first ``limit`` train and test examples (0: all; for smoke runs)."""

    split: str = "add_jump"
    root: str | None = None
    limit: Annotated[int, Range(ge=0)] = 0

    def __post_init__(self) -> None:
        canonical_split(self.split)


@dataclass(frozen=True)
class ModelConfig:
    """:param cell: ``rnn``, ``gru`` or ``lstm``."""

    cell: str = "lstm"
    embedding: Annotated[int, Range(ge=1, le=1_000_000)] = 32
    hidden: Annotated[int, Range(ge=1, le=1_000_000)] = 64
    attention: bool = True
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.1

    def __post_init__(self) -> None:
        from equirl.language.seq2seq import CELLS  # torch: only when a config is built

        if self.cell not in CELLS:
            raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {self.cell!r}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: Annotated[int, Range(ge=0, le=1_000_000)] = 8
    batch_size: Annotated[int, Range(ge=1, le=1_000_000)] = 64
    lr: Annotated[float, Range(gt=0)] = 2e-3
    grad_clip: Annotated[float, Range(gt=0)] = 5.0
    seed: Annotated[int, Range(ge=0)] = 0
    max_len: Annotated[int, Range(ge=2)] = 60
    eval_examples: Annotated[int, Range(ge=1)] = 1000


@dataclass(frozen=True)
class PretrainConfig:
    """The schema of ``configs/language/*.yaml`` (``equirl language pretrain CONFIG``)."""

    name: str = "scan"
    out: str = "runs/language"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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
    :param scorer_label: the hub classifier's label whose probability is the score (one of its own labels,
        e.g. ``POSITIVE``, ``LABEL_1``).
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
    scorer_label: str = "POSITIVE"
    out: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", canonical_method(self.method))
        if self.method not in GPT2_METHODS:
            raise FieldError("method", self.method, f"must be one of {', '.join(GPT2_METHODS)}")
        if self.variant.replace("-", "").lower() not in ("equigpt2", "requigpt2"):
            raise FieldError("variant", self.variant, "must be EquiGPT2 or R-EquiGPT2")
        if not self.attributes:
            raise FieldError(
                "attributes",
                self.attributes,
                "names no word set: give at least one of gender, color, sexuality",
            )
        for i, prompt in enumerate(self.prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise FieldError(
                    f"prompts[{i}]",
                    prompt,
                    "must be non-empty text (the model continues it; give a few words)",
                )
