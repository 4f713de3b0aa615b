"""Language: SCAN compositional generalization and GPT-2 fairness with equirl's symmetrizers.

* :mod:`equirl.language.scan` -- the SCAN grammar, its standard splits, file generation and loading;
* :mod:`equirl.language.seq2seq` -- RNN/GRU/LSTM encoder-decoders, batched greedy decoding, training;
* :mod:`equirl.language.equiscan` -- symmetrized autoregressive decoding on SCAN (equitune, equizero,
  λ-equitune, products of word-swap groups), exactly equivariant over whole decoded sequences;
* :mod:`equirl.language.gpt2` -- EquiGPT2 / R-EquiGPT2 / equizero generation with the KV cache;
* :mod:`equirl.language.fairness` -- swap-consistency and classifier hooks;
* :mod:`equirl.language.config` -- the commands' config schemas (torch-free).

Heavy modules (torch, transformers) are imported lazily by their submodules.
"""

from __future__ import annotations

__all__: list[str] = []
