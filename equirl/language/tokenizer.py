"""GPT-2 tokenizers that work offline: the real one from ``gpt2-tokenizer/`` in the shared data
folder (:func:`~equirl.utils.shared.shared_data_dir`) when present,
else a small byte-level BPE trained here on the packaged prompts and word lists (tests, benchmarks)."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["default_tokenizer", "tiny_tokenizer"]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer(vocab_size: int = 1000) -> Any:
    """A byte-level BPE (GPT-2 style, ``<|endoftext|>`` = eos) trained on the packaged prompts and word
    sets, so that the equality words (``" man"``, ``" woman"``, ``" Black"``...) are single tokens."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]

    from equirl.language.gpt2 import _data, equality_pairs, general_words

    prompts = _data("prompts.tsv").read_text(encoding="utf-8").splitlines()[1:]
    words = [w for pairs in equality_pairs("EquiGPT2").values() for p in pairs for w in p] + general_words()
    corpus = [p.split("\t")[-1] for p in prompts] * 20 + [" ".join(words)] * 50
    eos = "<|endoftext|>"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=vocab_size, min_frequency=2, special_tokens=[eos], show_progress=False
    )
    return GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=eos, bos_token=eos, unk_token=eos)


def default_tokenizer() -> Any:
    """The real GPT-2 tokenizer from shared data when available, else :func:`tiny_tokenizer`."""
    from equirl.language.gpt2 import load_gpt2_tokenizer
    from equirl.utils.shared import shared_data_dir

    d = shared_data_dir()
    if d is not None and (d / "gpt2-tokenizer" / "vocab.json").is_file():
        return load_gpt2_tokenizer(d / "gpt2-tokenizer")
    return tiny_tokenizer()
