"""Any torch image classifier made invariant to rotations and mirrors, in two lines::

    from equirl.vision import symmetrize_classifier
    model = symmetrize_classifier(net, group="rot90", method="equizero")

The wrapped model takes NCHW images and returns logits; the prediction is invariant (the output
action is trivial). Methods follow Basu et al. (AAAI 2023, *Equi-Tuning*) and Basu et al.
(NeurIPS 2023, *Efficient Equivariant Transfer Learning from Pretrained Models*): equitune averages the
logits over the orbit, equizero keeps the pose with the lowest proxy loss, λ-equitune weights the poses
by a small learned network λ that sees each transformed image (or its frozen backbone features).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirl.actions import ImageAction
from equirl.errors import ConfigError, EquirlError
from equirl.registry import EQUITUNE, EQUIZERO, MethodSpec, get_method
from equirl.symmetrizers import Canonicalize, LambdaEquiTune, Symmetrizer, symmetrize
from equirl.train_loop import fit
from equirl.utils.progress import ProgressFn
from equirl.vision.groups import vision_action

__all__ = [
    "accuracy",
    "evaluate_transforms",
    "fit_canonicalizer",
    "fit_lambda",
    "init_lambda",
    "predict_logits",
    "symmetrize_classifier",
]

log = logging.getLogger(__name__)


def symmetrize_classifier(
    net: nn.Module,
    group: str | ImageAction = "rot90",
    method: str = EQUITUNE,
    *,
    proxy: str = "entropy",
    lambda_features: Callable[[Tensor], Tensor] | str | None = "auto",
    lambda_hidden: tuple[int, ...] = (64,),
    **kwargs: Any,
) -> Symmetrizer:
    """Wrap an image classifier ``net`` (NCHW -> logits) into an invariant classifier.

    :param net: any ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, num_classes)`` logits.
    :param group: ``"rot90"``, ``"rot180"``, ``"mirror"`` (left-right), ``"rot90+mirror"`` (D4) or an
        :class:`~equirl.actions.ImageAction`.
    :param method: ``"equitune"``, ``"equizero"``, ``"lambda"`` (λ-equitune), ``"canonicalize"`` (learned
        canonicalization; train it with :func:`fit_canonicalizer`), or any registered name.
    :param proxy: equizero's proxy loss (``"entropy"``, ``"max_prob"``, ...).
    :param lambda_features: what λ sees: ``"auto"`` uses ``net.features`` (frozen) when ``net`` has one and
        the raw transformed image otherwise; ``None`` forces the image; or any callable ``rows -> features``.
    :param lambda_hidden: hidden sizes of the default λ network.
    :param kwargs: passed to the symmetrizer (e.g. ``lambda_net=``, ``chunk_size=``, ``straight_through=``).
    :returns: the invariant classifier (an ``nn.Module``; call ``.eval()`` as usual).
    """
    action = vision_action(group)
    try:
        spec: MethodSpec | None = get_method(method)
    except ConfigError:
        spec = None  # a user-registered symmetrizer (symmetrize looks it up) or an unknown name
    if spec is not None and spec.name == EQUIZERO:
        kwargs.setdefault("proxy", proxy)
    if spec is not None and spec.learned_weights:
        feats: Callable[[Tensor], Tensor] | None
        if lambda_features == "auto":
            f = getattr(net, "features", None)
            feats = f if callable(f) else None
        elif isinstance(lambda_features, str):
            raise EquirlError(f"lambda_features must be 'auto', None or a callable, got {lambda_features!r}")
        else:
            feats = lambda_features
        kwargs.setdefault("lambda_features", feats)
        kwargs.setdefault("lambda_hidden", tuple(lambda_hidden))
    return symmetrize(net, action, None, method=method, **kwargs)


def fit_canonicalizer(
    model: Canonicalize,
    images: Tensor,
    labels: Tensor | None = None,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 64,
    task_weight: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Train the canonicalizer's scorer with the backbone frozen (Kaba et al., 2022; Mondal et al., 2023).

    The loss is ``model.prior_loss(x)`` on the given (upright) images -- it teaches the scorer to keep
    them as they are, so that the pretrained classifier sees every input in the pose it was trained on --
    plus, when ``task_weight > 0``, ``task_weight`` times the cross-entropy of the canonicalized
    classifier on images transformed by random group elements (its gradient reaches the scorer through
    the straight-through estimator).

    :param model: ``symmetrize_classifier(net, group, method="canonicalize")``.
    :param images: ``(N, C, H, W)`` images in the training pose.
    :param labels: ``(N,)`` labels (needed only for ``task_weight > 0``).
    :param steps: optimisation steps; :param lr: Adam learning rate; :param batch_size: mini-batch size.
    :param task_weight: weight of the task loss next to the prior.
    :param seed: seeds the mini-batches and the random transformations.
    :param progress: called as ``progress(step, steps)`` after each step.
    :returns: the loss per step.
    """
    if not isinstance(model, Canonicalize):
        raise EquirlError("fit_canonicalizer needs symmetrize_classifier(net, method='canonicalize')")
    if task_weight > 0 and (labels is None or labels.shape[0] != images.shape[0]):
        raise EquirlError("task_weight > 0 needs one label per image")
    if images.shape[0] == 0 or steps < 1 or batch_size < 1:
        raise EquirlError("fit_canonicalizer needs images, and positive steps and batch_size")
    with torch.no_grad():  # materialise a lazy scorer
        model.scores(images[:1])
    G = model.group.order

    def loss_fn(idx: Tensor, gen: torch.Generator) -> Tensor:
        x = images[idx]
        loss = model.prior_loss(x)
        if task_weight > 0:
            assert labels is not None
            gx = model.in_action.apply_each(x, torch.randint(0, G, (x.shape[0],), generator=gen))
            loss = loss + task_weight * F.cross_entropy(model(gx), labels[idx])
        return loss

    # train mode: the straight-through path carries the task loss to the scorer
    return _train_only(
        model, model.scorer, loss_fn, images.shape[0], steps, lr, batch_size, 0.0, seed, True, progress
    )


def _train_only(
    model: nn.Module,
    part: nn.Module,
    loss_fn: Callable[[Tensor, torch.Generator], Tensor],
    n: int,
    steps: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    train_mode: bool,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Adam on ``part``'s parameters only, over random mini-batch indices of ``range(n)``; every other
    parameter of ``model`` is frozen meanwhile (``requires_grad`` and the train/eval mode are restored)."""
    own = {id(p) for p in part.parameters()}
    frozen = [p for p in model.parameters() if id(p) not in own]
    saved = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.train(train_mode)
    part.train()
    try:
        losses = fit(
            part.parameters(),
            lambda step: loss_fn(torch.randint(0, n, (min(batch_size, n),), generator=gen), gen),
            steps,
            lr,
            weight_decay=weight_decay,
            what=f"fitting the {type(part).__name__}",
            on_step=None if progress is None else (lambda step, loss: progress(step + 1, steps)),
        )
    finally:
        for p, r in zip(frozen, saved):
            p.requires_grad_(r)
        model.train(was_training)
    return losses


def init_lambda(model: LambdaEquiTune, example: Tensor) -> None:
    """Materialise lazy λ layers with one small forward pass on ``example[:1]``."""
    with torch.no_grad():
        model.lambda_logits(model.in_action.orbit(example[:1]).reshape(-1, *example.shape[1:]))


def fit_lambda(
    model: LambdaEquiTune,
    images: Tensor,
    labels: Tensor,
    steps: int = 300,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Learn λ of a λ-equitune classifier from a few labelled images, with the backbone frozen.

    Only ``model.lambda_net`` is trained (cross-entropy on the symmetrized logits); the wrapped model's
    parameters are left untouched (their ``requires_grad`` is restored afterwards). Because the
    λ-equitune classifier is exactly invariant, the orientation of the training images does not
    matter: λ learns which pose the frozen classifier reads best (the "upright" one), a soft
    canonicalization.

    :param model: a λ-equitune classifier, e.g. ``symmetrize_classifier(net, method="lambda")``.
    :param images: ``(N, C, H, W)`` labelled images (a few hundred are enough).
    :param labels: ``(N,)`` class indices.
    :param steps: optimisation steps (mini-batches).
    :param lr: Adam learning rate.
    :param batch_size: mini-batch size.
    :param weight_decay: Adam weight decay on λ's parameters.
    :param seed: seeds the mini-batch sampling.
    :param progress: called as ``progress(step, steps)`` after each step.
    :returns: the training loss per step.
    """
    if not isinstance(model, LambdaEquiTune):
        raise EquirlError("fit_lambda needs a λ-equitune model: symmetrize_classifier(net, method='lambda')")
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise EquirlError(
            f"images and labels must be non-empty with the same length, got "
            f"{images.shape[0]} and {labels.shape[0]}"
        )
    if steps < 1 or batch_size < 1:
        raise EquirlError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    init_lambda(model, images)

    def loss_fn(idx: Tensor, gen: torch.Generator) -> Tensor:
        return F.cross_entropy(model(images[idx]), labels[idx])

    # eval mode: the backbone keeps its eval behaviour (dropout / batch-norm statistics)
    losses = _train_only(
        model,
        model.lambda_net,
        loss_fn,
        images.shape[0],
        steps,
        lr,
        batch_size,
        weight_decay,
        seed,
        False,
        progress,
    )
    log.info("fit_lambda: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], steps)
    return losses


@torch.no_grad()
def predict_logits(model: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 256) -> Tensor:
    """Logits of ``model`` on ``images`` in batches (no gradients)."""
    outs = [model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(outs)


def accuracy(
    model: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor, batch_size: int = 256
) -> float:
    """Top-1 accuracy in ``[0, 1]``."""
    pred = predict_logits(model, images, batch_size).argmax(-1)
    return float((pred == labels).float().mean())


def evaluate_transforms(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    group: str | ImageAction = "rot90",
    seed: int = 0,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """Accuracy on the test set transformed by each group element, and on a randomly transformed copy.

    :param progress: called as ``progress(done, |G| + 1)`` after each transformed copy.

    :returns: ``{element label: accuracy, ..., "random": accuracy, "mean": mean over elements}``; the
        identity's label is the upright accuracy.
    """
    action = vision_action(group)
    out: dict[str, float] = {}
    total = action.group.order + 1
    for i, g in enumerate(action.group.elements):
        out[g.label] = accuracy(model, action.apply(images, g), labels, batch_size)
        if progress is not None:
            progress(i + 1, total)
    idx = torch.randint(
        0, action.group.order, (images.shape[0],), generator=torch.Generator().manual_seed(seed)
    )
    out["random"] = accuracy(model, action.apply_each(images, idx), labels, batch_size)
    if progress is not None:
        progress(total, total)
    out["mean"] = sum(out[g.label] for g in action.group.elements) / action.group.order
    return out
