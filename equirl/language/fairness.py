"""Fairness metrics for text generation: swap-consistency and classifier hooks (regard, sentiment).

**Swap-consistency** (Basu et al., 2023): a model is fair with respect to a word-swap group if the
probability of a continuation ``c`` given a prompt ``x`` equals that of the swapped continuation given
the swapped prompt, :math:`p(c \\mid x) = p(g\\cdot c \\mid g\\cdot x)`. :func:`swap_consistency` measures
``|log p(c|x) − log p(g·c|g·x)|``: exactly 0 (to float tolerance) for EquiGPT2, and measured for the
plain model.

**Classifier hooks** score generated texts with any callable ``list[str] -> list[float]`` -- a regard or
sentiment classifier from the hub (:func:`hf_text_scorer`), or the offline :class:`LexiconScorer` -- and
:func:`score_by_group` reports the mean score per demographic group and the largest gap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from equirl.errors import ConfigError, SymmetryError

__all__ = [
    "LexiconScorer",
    "continuation_logprob",
    "hf_text_scorer",
    "score_by_group",
    "swap_consistency",
]

TextScorer = Callable[[Sequence[str]], Sequence[float]]


@torch.no_grad()
def continuation_logprob(lm: Callable[[Tensor], Tensor], prompt: Tensor, continuation: Tensor) -> Tensor:
    """``log p(continuation | prompt)`` per row, with ``lm(ids (B,T)) -> next-token logits (B,T,V)``.

    :param lm: e.g. ``lambda ids: gpt2(input_ids=ids).logits`` or an :class:`~equirl.language.gpt2.EquiGPT2`.
    :param prompt: ``(B, P)`` ids.
    :param continuation: ``(B, C)`` ids.
    """
    ids = torch.cat([prompt, continuation], 1)
    logp = torch.log_softmax(lm(ids).float(), -1)
    P, C = prompt.shape[1], continuation.shape[1]
    pred = logp[:, P - 1 : P + C - 1]
    return pred.gather(-1, continuation.unsqueeze(-1)).squeeze(-1).sum(-1)


@torch.no_grad()
def swap_consistency(
    lm: Callable[[Tensor], Tensor], symmetry: Any, prompt: Tensor, continuation: Tensor
) -> dict[str, float]:
    """``|log p(c|x) − log p(g·c|g·x)|`` over all non-identity elements ``g`` and rows.

    :param symmetry: a :class:`~equirl.language.gpt2.WordSwapSymmetry` (its ``ids`` action is used).
    :returns: ``{"mean_abs_logprob_gap", "max_abs_logprob_gap", "mean_logprob"}``.
    """
    if symmetry.group.order < 2:
        raise SymmetryError("swap-consistency needs a group with a non-identity element")
    base = continuation_logprob(lm, prompt, continuation)
    gaps = []
    for g in range(1, symmetry.group.order):
        swapped = continuation_logprob(lm, symmetry.ids.apply(prompt, g), symmetry.ids.apply(continuation, g))
        gaps.append((swapped - base).abs())
    gap = torch.stack(gaps)
    return {
        "mean_abs_logprob_gap": float(gap.mean()),
        "max_abs_logprob_gap": float(gap.max()),
        "mean_logprob": float(base.mean()),
    }


@dataclass
class LexiconScorer:
    """A tiny offline sentiment/regard stand-in: (#positive − #negative words) / #words.

    :param positive: positive words.
    :param negative: negative words.
    """

    positive: set[str] = field(
        default_factory=lambda: {"good", "kind", "smart", "respected", "honest", "caring"}
    )
    negative: set[str] = field(
        default_factory=lambda: {"bad", "criminal", "violent", "lazy", "rude", "drunk"}
    )

    def __call__(self, texts: Sequence[str]) -> list[float]:
        out = []
        for t in texts:
            words = [w.strip(".,;:!?\"'").lower() for w in t.split()]
            n = max(len(words), 1)
            out.append((sum(w in self.positive for w in words) - sum(w in self.negative for w in words)) / n)
        return out


def hf_text_scorer(model: str, positive_label: str = "POSITIVE") -> TextScorer:
    """A hub text classifier (e.g. ``"sasha/regardv3"`` or a sentiment model) as a scorer returning the
    probability of ``positive_label``. Raises :class:`~equirl.errors.OfflineError` at once when it is
    not cached and the hub is unreachable.

    :param positive_label: the label whose probability is the score, among the model's own labels
        (``config.id2label``; case-insensitive).
    :raises ConfigError: the model has no label ``positive_label`` (the message lists its labels): a
        score of 0 for every text would look like a measurement.
    """
    from equirl.utils.hub import load_from_hub

    def load(name: str, local_only: bool) -> Any:
        from transformers import pipeline

        if local_only and not Path(name).is_dir():
            from huggingface_hub import snapshot_download

            name = snapshot_download(name, local_files_only=True)  # the cached folder, or an OSError
        return pipeline("text-classification", model=name, top_k=None)

    clf = load_from_hub(load, model, "text classifier")
    id2label = getattr(getattr(getattr(clf, "model", None), "config", None), "id2label", None) or {}
    labels = [str(v) for v in dict(id2label).values()]
    _check_label(model, positive_label, labels)

    def score(texts: Sequence[str]) -> list[float]:
        res: Any = clf(list(texts))
        out = []
        for r in res:
            found = [d["score"] for d in r if str(d["label"]).upper() == positive_label.upper()]
            if not found:  # a pipeline whose config did not list its labels
                _check_label(model, positive_label, [str(d["label"]) for d in r])
            out.append(float(found[0]))
        return out

    return score


def _check_label(model: str, label: str, labels: Sequence[str]) -> None:
    """One-line :class:`ConfigError` when the classifier ``model`` has no label ``label``."""
    if any(lb.upper() == label.upper() for lb in labels):
        return
    from equirl.utils.io import printable

    shown = ", ".join(printable(lb, 40) for lb in labels[:12]) + (", …" if len(labels) > 12 else "")
    raise ConfigError(
        f"text classifier {printable(model, 120)} has no label {printable(label, 40)!r} (its labels: "
        f"{shown or 'none'}): choose the label to score with scorer_label=LABEL (--set scorer_label=...)"
    )


def score_by_group(texts: Mapping[str, Sequence[str]], scorer: TextScorer) -> dict[str, Any]:
    """Mean classifier score per demographic group and the largest gap between two groups."""
    means = {}
    for group, ts in texts.items():
        if not ts:
            raise SymmetryError(f"group {group!r} has no generated texts")
        vals = list(scorer(ts))
        means[group] = sum(vals) / len(vals)
    return {"mean_score": means, "max_gap": max(means.values()) - min(means.values())}
