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

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from equirl.actions import ImageAction
from equirl.errors import EquirlError
from equirl.registry import BASE, CANONICALIZE, EQUITUNE, EQUIZERO, LAMBDA, get_method
from equirl.symmetrizers import Canonicalize, LambdaEquiTune
from equirl.vision.classifier import (
    _split_val,
    accuracy,
    fit_canonicalizer,
    fit_lambda,
    symmetrize_classifier,
)
from equirl.vision.groups import vision_action

__all__ = ["DEFAULT_CLASSIFIER_CANDIDATES", "ClassifierChoice", "select_classifier_method"]

log = logging.getLogger(__name__)

#: candidates tried by default, cheapest first (the order breaks ties)
DEFAULT_CLASSIFIER_CANDIDATES: tuple[str, ...] = (BASE, CANONICALIZE, EQUIZERO, EQUITUNE, LAMBDA)


@dataclass
class ClassifierChoice:
    """The chosen method and its evidence.

    :ivar method: the chosen method name.
    :ivar model: the chosen classifier (fitted when learned; ``net`` itself for ``base``), in eval mode.
    :ivar val_accuracy: validation accuracy (randomly transformed held-out images) per candidate.
    :ivar n_val: number of validation images.
    :ivar reason: one line on why it was chosen.
    """

    method: str
    model: nn.Module
    val_accuracy: dict[str, float] = field(default_factory=dict)
    n_val: int = 0
    reason: str = ""


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
    reason = (
        f"{chosen}: {100 * scores[chosen]:.1f} % on {n} randomly transformed validation images "
        f"(best {100 * best:.1f} %, ties within one standard error ({100 * se:.1f}) go to the cheapest)"
    )
    log.info("method auto: %s", reason)
    return ClassifierChoice(chosen, models[chosen], scores, n, reason)
