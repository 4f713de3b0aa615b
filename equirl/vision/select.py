"""``method="auto"`` for image classifiers: pick the method by its accuracy on a validation split.

No single method is best for every classifier (``docs/vision.md``, "Methods that never hurt"): on the
upright-trained digits CNN equitune (~25 %) and equizero (~30 %) are *below* the plain CNN under random
quarter turns (~40 %), while λ-equitune and learned canonicalization recover ~93-96 %.
:func:`select_classifier_method` fits the learned candidates on the training part of a few labelled
images, scores every candidate on the held-out part *transformed by random group elements* (the
deployment condition), and keeps the best; candidates within one standard error of the best count as
tied and a tie goes to the cheapest (``base`` first), so ``auto`` never moves away from the plain
classifier without evidence.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import ImageAction
from equirl.errors import EquirlError
from equirl.registry import BASE, get_method
from equirl.symmetrizers import Canonicalize, LambdaEquiTune
from equirl.utils.io import atomic_write_text
from equirl.vision.classifier import (
    _split_val,
    accuracy,
    fit_canonicalizer,
    fit_lambda,
    symmetrize_classifier,
)
from equirl.vision.config import DEFAULT_CLASSIFIER_CANDIDATES
from equirl.vision.groups import vision_action

__all__ = ["DEFAULT_CLASSIFIER_CANDIDATES", "ClassifierChoice", "select_classifier_method"]

log = logging.getLogger(__name__)


@dataclass
class ClassifierChoice:
    """The chosen method and its evidence.

    :ivar method: the chosen method name.
    :ivar model: the chosen classifier (fitted when learned; ``net`` itself for ``base``), in eval mode.
    :ivar val_accuracy: validation accuracy (randomly transformed held-out images) per candidate.
    :ivar n_val: number of validation images.
    :ivar reason: one line on why it was chosen.
    :ivar tolerance: the tie margin (one standard error of the best accuracy).
    :ivar group: the group name.
    :ivar seed: the seed of the split, the fits and the validation transformations.
    """

    method: str
    model: nn.Module
    val_accuracy: dict[str, float] = field(default_factory=dict)
    n_val: int = 0
    reason: str = ""
    tolerance: float = 0.0
    group: str = ""
    seed: int = 0

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate, in the order tried: ``method, val_accuracy, tied, chosen``."""
        best = max(self.val_accuracy.values()) if self.val_accuracy else 0.0
        return [
            {
                "method": m,
                "val_accuracy": acc,
                "tied": acc >= best - self.tolerance,
                "chosen": m == self.method,
            }
            for m, acc in self.val_accuracy.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON): the choice, the reason and the evidence table."""
        return {
            "method": self.method,
            "reason": self.reason,
            "group": self.group,
            "n_val": self.n_val,
            "tolerance": self.tolerance,
            "seed": self.seed,
            "candidates": self.table(),
        }

    def to_markdown(self) -> str:
        """The evidence table as Markdown, with the reason under it."""
        lines = [
            f"# method: auto (group {self.group})",
            "",
            f"Validation: {self.n_val} held-out images, each transformed by a random group element "
            f"(seed {self.seed}); ties within {100 * self.tolerance:.1f} points go to the cheapest.",
            "",
            "| candidate | validation accuracy % | tied with best | chosen |",
            "|---|---|---|---|",
        ]
        for r in self.table():
            lines.append(
                f"| {r['method']} | {100 * r['val_accuracy']:.1f} | {'yes' if r['tied'] else ''} | "
                f"{'**yes**' if r['chosen'] else ''} |"
            )
        return "\n".join([*lines, "", self.reason, ""])

    def save(self, json_path: str | Path) -> tuple[Path, Path]:
        """Write the JSON to ``json_path`` and the Markdown beside it (same name, ``.md``), atomically.

        :param json_path: e.g. ``runs/vision/finetuned.auto_choice.json``.
        :returns: ``(json path, markdown path)``.
        """
        jp = Path(json_path)
        jp.parent.mkdir(parents=True, exist_ok=True)
        mp = jp.with_suffix(".md")
        atomic_write_text(jp, json.dumps(self.to_dict(), indent=2))
        atomic_write_text(mp, self.to_markdown())
        return jp, mp


def select_classifier_method(
    net: nn.Module,
    group: str | ImageAction,
    images: Tensor,
    labels: Tensor,
    *,
    candidates: Sequence[str] = DEFAULT_CLASSIFIER_CANDIDATES,
    val_fraction: float = 0.2,
    steps: int = 300,
    lr: float = 3e-3,
    patience: int | None = 4,
    seed: int = 0,
) -> ClassifierChoice:
    """Fit and score every candidate; return the best on the validation split (ties: the cheapest).

    :param net: the pretrained classifier (frozen: only λ / the scorer are trained).
    :param group: the group the deployed classifier must be invariant to.
    :param images: ``(N, C, H, W)`` labelled images in the training (upright) pose.
    :param labels: ``(N,)`` class indices.
    :param candidates: method names, in order of cost (earlier wins ties).
    :param val_fraction: the held-out fraction (randomly transformed for scoring; also the fits'
        validation split for keeping their best λ / scorer).
    :param steps: fitting steps of λ and of the scorer; :param lr: their learning rate.
    :param patience: early-stopping patience of the fits.
    :param seed: seeds the split, the fits and the validation transformations.
    """
    if not candidates:
        raise EquirlError("select_classifier_method needs at least one candidate")
    names = [get_method(c).name for c in candidates]
    action = vision_action(group)
    x_tr, y_tr, x_va, y_va = _split_val(images, labels, None, None, val_fraction, seed)
    if x_va is None or y_va is None or y_tr is None:
        raise EquirlError("select_classifier_method needs val_fraction > 0")
    gen = torch.Generator().manual_seed(seed + 104729)
    x_va_t = action.apply_each(x_va, torch.randint(0, action.group.order, (x_va.shape[0],), generator=gen))
    models: dict[str, nn.Module] = {}
    scores: dict[str, float] = {}
    for name in names:
        if name == BASE:
            model: nn.Module = net
        else:
            model = symmetrize_classifier(net, action, name)
            torch.manual_seed(seed)
            if isinstance(model, (LambdaEquiTune, Canonicalize)):  # methods with weights to fit
                fit: Callable[..., list[float]] = (
                    fit_lambda if isinstance(model, LambdaEquiTune) else fit_canonicalizer
                )
                fit(
                    model,
                    x_tr,
                    y_tr,
                    steps,
                    lr,
                    seed=seed,
                    val_images=x_va,
                    val_labels=y_va,
                    patience=patience,
                )
        model.eval()
        models[name] = model
        scores[name] = accuracy(model, x_va_t, y_va)
    n = x_va.shape[0]
    best = max(scores.values())
    se = math.sqrt(max(best * (1 - best), 1.0 / n) / n)
    chosen = next(name for name in names if scores[name] >= best - se)
    if scores[chosen] == best:
        why = "the best validation accuracy"
    else:
        best_name = max(names, key=lambda m: scores[m])
        why = (
            f"within one standard error of the best ({best_name} {100 * best:.1f} ± {100 * se:.1f} %) "
            "and cheaper"
        )
        if chosen == BASE:
            why += ": the classifier is kept as it is"
    others = ", ".join(f"{m} {100 * scores[m]:.1f}" for m in names if m != chosen)
    reason = (
        f"auto picked {chosen} ({100 * scores[chosen]:.1f} % on {n} randomly transformed validation "
        f"images): {why}; others: {others or 'none'}"
    )
    log.info("%s", reason)
    name_g = group if isinstance(group, str) else str(getattr(action.group, "name", ""))
    return ClassifierChoice(chosen, models[chosen], scores, n, reason, se, name_g, seed)
