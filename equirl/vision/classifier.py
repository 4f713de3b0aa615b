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
import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from equirl.actions import ImageAction
from equirl.errors import ConfigError, EquirlError, SymmetryError, first_cause
from equirl.registry import CANONICALIZE, EQUITUNE, EQUIZERO, MethodSpec, get_method
from equirl.symmetrizers import Canonicalize, LambdaEquiTune, Symmetrizer, symmetrize
from equirl.symmetrizers.nets import ScoreNet
from equirl.train_loop import KeepBest, fit
from equirl.utils.progress import ProgressFn
from equirl.vision.features import penultimate_features
from equirl.vision.groups import vision_action

__all__ = [
    "FeatureScorer",
    "accuracy",
    "check_input",
    "evaluate_transforms",
    "fit_canonicalizer",
    "fit_lambda",
    "init_lambda",
    "predict_logits",
    "resolve_features",
    "symmetrize_classifier",
]

log = logging.getLogger(__name__)


def resolve_features(
    net: nn.Module | Callable[[Tensor], Tensor], features: Callable[[Tensor], Tensor] | str | None
) -> Callable[[Tensor], Tensor] | None:
    """What λ (or the canonicalizer's scorer) sees of each transformed image.

    :param net: the classifier.
    :param features: ``"auto"`` -- ``net.features`` when it is a method (e.g.
        :class:`~equirl.vision.models.SmallCNN`), else the penultimate layer found by
        :func:`~equirl.vision.features.penultimate_features`, else the raw image; ``"penultimate"`` -- the
        hooked penultimate layer (an error when none is found); ``None`` -- the raw image; or a callable.
    :returns: a callable ``images -> features`` or ``None`` (the raw image).
    """
    if features is None or callable(features):
        return features
    if features not in ("auto", "penultimate"):
        raise EquirlError(f"features must be 'auto', 'penultimate', None or a callable, got {features!r}")
    if features == "auto":
        f = getattr(net, "features", None)
        if callable(f) and not isinstance(f, nn.Module):
            return cast(Callable[[Tensor], Tensor], f)
    if not isinstance(net, nn.Module):
        if features == "auto":
            return None
        raise EquirlError("features='penultimate' needs an nn.Module classifier")
    try:
        return penultimate_features(net)
    except EquirlError:
        if features == "auto":
            log.info("no penultimate layer found in %s: λ sees the raw image", type(net).__name__)
            return None
        raise


class FeatureScorer(nn.Module):
    """A canonicalization scorer on frozen features: ``h(x) = ScoreNet(features(x))``.

    :param features: ``images -> (N, D)`` (run without gradients; not a registered sub-module).
    :param hidden: hidden sizes of the :class:`~equirl.symmetrizers.nets.ScoreNet`.
    """

    def __init__(self, features: Callable[[Tensor], Tensor], hidden: tuple[int, ...] = (64,)) -> None:
        super().__init__()
        self._features = features
        self.net = ScoreNet(hidden=hidden)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            z = self._features(x)
        return cast(Tensor, self.net(z.float()))


def symmetrize_classifier(
    net: nn.Module,
    group: str | ImageAction = "rot90",
    method: str = EQUITUNE,
    *,
    proxy: str = "entropy",
    lambda_features: Callable[[Tensor], Tensor] | str | None = "auto",
    lambda_hidden: tuple[int, ...] = (64,),
    scorer_features: Callable[[Tensor], Tensor] | str | None = None,
    **kwargs: Any,
) -> Symmetrizer:
    """Wrap an image classifier ``net`` (NCHW -> logits) into an invariant classifier.

    :param net: any ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, num_classes)`` logits.
    :param group: ``"rot90"``, ``"rot180"``, ``"mirror"`` (left-right), ``"rot90+mirror"`` (D4) or an
        :class:`~equirl.actions.ImageAction`.
    :param method: ``"equitune"``, ``"equizero"``, ``"lambda"`` (λ-equitune), ``"canonicalize"`` (learned
        canonicalization; train it with :func:`fit_canonicalizer`), or any registered name.
    :param proxy: equizero's proxy loss (``"entropy"``, ``"max_prob"``, ...).
    :param lambda_features: what λ sees (see :func:`resolve_features`): ``"auto"`` (default) -- the
        frozen backbone features (``net.features`` or the hooked penultimate layer), else the image;
        ``"penultimate"``; ``None`` forces the raw image; or any callable ``rows -> features``.
    :param lambda_hidden: hidden sizes of the default λ network.
    :param scorer_features: what the canonicalizer's scorer sees (same choices; default ``None``: the raw
        image, so the backbone runs once per input; features cost ``|G|`` backbone passes).
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
        kwargs.setdefault("lambda_features", resolve_features(net, lambda_features))
        kwargs.setdefault("lambda_hidden", tuple(lambda_hidden))
    if spec is not None and spec.name == CANONICALIZE and scorer_features is not None:
        feats = resolve_features(net, scorer_features)
        if feats is not None and "scorer" not in kwargs:
            kwargs["scorer"] = FeatureScorer(feats, tuple(kwargs.pop("scorer_hidden", (64,))))
    sym = symmetrize(net, action, None, method=method, **kwargs)
    if _has_lazy(sym):  # λ or the scorer is sized by its first call: only by one the classifier accepts
        sym.register_forward_pre_hook(_check_before_sizing)
    return sym


def _has_lazy(module: nn.Module) -> bool:
    """Whether a part of ``module`` (a lazy λ-net or scorer) still waits for its input size."""
    return any(is_lazy(p) for p in module.parameters())


def check_input(model: Symmetrizer, x: Tensor) -> None:
    """Before a lazy part of ``model`` (λ-net, canonicalizer's scorer) is sized by ``x``: run the wrapped
    classifier on one image of ``x`` (eval mode, no gradients) and refuse inputs it does not take.

    A lazy part takes the size of the first input it sees, for good; without this check a call with
    wrong images (1 channel for an RGB net) would size it wrongly even though the call fails, and
    every later, correct call would fail too. Nothing is checked once nothing is lazy.

    :raises SymmetryError: one line naming the input shape and the classifier's own error.
    """
    if not _has_lazy(model):
        return
    if not isinstance(x, Tensor) or x.dim() < model._batched_dims:
        return  # the symmetrizer's own checks name these
    net = model._modules.get("model")
    modes = [(m, m.training) for m in net.modules()] if net is not None else []
    try:
        if net is not None:
            net.eval()  # no batch-norm statistics updated, no dropout
        with torch.no_grad():
            model._run_model(x[:1])
    except EquirlError:
        raise
    except (
        RuntimeError,
        ValueError,
        IndexError,
        TypeError,
    ) as exc:  # shape / dtype errors; not OOM, not bugs
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        raise SymmetryError(
            f"the classifier does not take images of shape {tuple(x.shape)}: {type(exc).__name__}: "
            f"{first_cause(exc)}"
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode


def _check_before_sizing(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of :func:`symmetrize_classifier` while a part is lazy (:func:`check_input`); it
    removes itself once nothing is lazy any more."""
    if not _has_lazy(module):
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _check_before_sizing:
                del module._forward_pre_hooks[key]
        return
    if args and isinstance(module, Symmetrizer):
        check_input(module, args[0])


def _split_val(
    images: Tensor,
    labels: Tensor | None,
    val_images: Tensor | None,
    val_labels: Tensor | None,
    val_fraction: float,
    seed: int,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """``(train images, train labels, val images, val labels)``: the given split, or a seeded random
    ``val_fraction`` of the images held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise EquirlError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_images is not None:
        if val_fraction > 0:
            raise EquirlError("pass val_images or val_fraction, not both")
        if val_labels is not None and val_labels.shape[0] != val_images.shape[0]:
            raise EquirlError("val_images and val_labels must have the same length")
        return images, labels, val_images, val_labels
    if val_fraction == 0.0:
        return images, labels, None, None
    n = images.shape[0]
    n_val = round(val_fraction * n)
    if n_val < 1 or n_val >= n:
        raise EquirlError(f"val_fraction={val_fraction} of {n} images leaves no train or no validation set")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    tr, va = perm[n_val:], perm[:n_val]
    return (
        images[tr],
        None if labels is None else labels[tr],
        images[va],
        None if labels is None else labels[va],
    )


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
    *,
    val_images: Tensor | None = None,
    val_labels: Tensor | None = None,
    val_fraction: float = 0.0,
    eval_every: int = 25,
    patience: int | None = None,
    val_history: list[tuple[int, float]] | None = None,
) -> list[float]:
    """Train the canonicalizer's scorer with the backbone frozen (Kaba et al., 2022; Mondal et al., 2023).

    The loss is ``model.prior_loss(x)`` on the given (upright) images -- Mondal et al.'s dataset-dependent
    prior: it teaches the scorer to map the training distribution to the identity, so that the
    pretrained classifier sees every input in the pose it was trained on -- plus, when ``task_weight > 0``,
    ``task_weight`` times the cross-entropy of the canonicalized classifier on images transformed by
    random group elements (its gradient reaches the scorer through the straight-through estimator).

    With a validation split (``val_images`` or ``val_fraction``) the scorer is scored before training and
    every ``eval_every`` steps, the best scorer seen is kept and restored at the end (so the fit never
    ends worse on the validation split than it started), and ``patience`` evaluations without
    improvement stop it early. The score is the validation accuracy of the canonicalized classifier when
    labels are given, else the identity rate: the fraction of upright validation images whose canonical
    pose is the identity -- by equivariance, exactly the fraction of transformed images brought back
    upright (ties broken by the prior loss).

    :param model: ``symmetrize_classifier(net, group, method="canonicalize")``.
    :param images: ``(N, C, H, W)`` images in the training pose.
    :param labels: ``(N,)`` labels (needed only for ``task_weight > 0``).
    :param steps: optimisation steps; :param lr: Adam learning rate; :param batch_size: mini-batch size.
    :param task_weight: weight of the task loss next to the prior.
    :param seed: seeds the mini-batches, the random transformations and the ``val_fraction`` split.
    :param progress: called as ``progress(step, steps)`` after each step.
    :param val_images: upright validation images (keeps the best scorer).
    :param val_labels: their labels (then the score is the validation accuracy).
    :param val_fraction: hold out this fraction of ``images`` (and labels) as the validation split instead.
    :param eval_every: steps between validation scores.
    :param patience: stop after this many scores without improvement (``None``: never stop early).
    :param val_history: if given, ``(step, score)`` of every validation score is appended to it.
    :returns: the loss per step (until an early stop).
    """
    if not isinstance(model, Canonicalize):
        raise EquirlError("fit_canonicalizer needs symmetrize_classifier(net, method='canonicalize')")
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise EquirlError("labels must have one entry per image")
    if task_weight > 0 and labels is None:
        raise EquirlError("task_weight > 0 needs one label per image")
    if images.shape[0] == 0 or steps < 1 or batch_size < 1:
        raise EquirlError("fit_canonicalizer needs images, and positive steps and batch_size")
    images, labels, v_x, v_y = _split_val(images, labels, val_images, val_labels, val_fraction, seed)
    check_input(model, images)
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

    score: Callable[[], tuple[float, float]] | None = None
    if v_x is not None:
        vx = v_x

        @torch.no_grad()
        def score() -> tuple[float, float]:
            prior = sum(
                float(model.prior_loss(vx[i : i + 256])) * min(256, vx.shape[0] - i)
                for i in range(0, vx.shape[0], 256)
            ) / max(1, vx.shape[0])
            if v_y is not None:
                return accuracy(model, vx, v_y), -prior
            ident = torch.cat([model.canonical_elements(vx[i : i + 256]) for i in range(0, vx.shape[0], 256)])
            return float((ident == 0).float().mean()), -prior

    # train mode: the straight-through path carries the task loss to the scorer
    return _train_only(
        model,
        model.scorer,
        loss_fn,
        images.shape[0],
        steps,
        lr,
        batch_size,
        0.0,
        seed,
        True,
        progress,
        score=score,
        eval_every=eval_every,
        patience=patience,
        val_history=val_history,
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
    *,
    score: Callable[[], tuple[float, float]] | None = None,
    eval_every: int = 25,
    patience: int | None = None,
    val_history: list[tuple[int, float]] | None = None,
) -> list[float]:
    """Adam on ``part``'s parameters only, over random mini-batch indices of ``range(n)``; every other
    parameter of ``model`` is frozen meanwhile (``requires_grad`` and the train/eval mode are restored).

    With ``score`` (higher is better, compared as a tuple; run in eval mode), ``part`` is scored before the
    first step, every ``eval_every`` steps and after the last; the best state is restored at the end and
    ``patience`` scores without improvement stop the fit."""
    own = {id(p) for p in part.parameters()}
    frozen = [p for p in model.parameters() if id(p) not in own]
    saved = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training

    def scored_in_eval_mode() -> tuple[float, float]:
        assert score is not None
        model.eval()
        try:
            return score()
        finally:
            model.train(train_mode)
            part.train()

    keep = (
        None
        if score is None
        else KeepBest(part, scored_in_eval_mode, steps, eval_every, patience, val_history)
    )

    def on_step(step: int, loss: float) -> bool:
        if progress is not None:
            progress(step + 1, steps)
        return keep is not None and keep.on_step(step, loss)

    model.train(train_mode)
    part.train()
    try:
        if keep is not None:
            keep.start()
        losses = fit(
            part.parameters(),
            lambda step: loss_fn(torch.randint(0, n, (min(batch_size, n),), generator=gen), gen),
            steps,
            lr,
            weight_decay=weight_decay,
            what=f"fitting the {type(part).__name__}",
            on_step=on_step if (progress is not None or keep is not None) else None,
        )
        if keep is not None:
            best_step = keep.restore()
            assert keep.best is not None
            log.info(
                "kept the %s of step %d of %d (validation %.4f)",
                type(part).__name__,
                best_step,
                len(losses),
                keep.best[0],
            )
    finally:
        for p, r in zip(frozen, saved):
            p.requires_grad_(r)
        model.train(was_training)
    return losses


def init_lambda(model: LambdaEquiTune, example: Tensor) -> None:
    """Materialise lazy λ layers with one small forward pass on ``example[:1]`` (refused, with nothing
    sized, when the classifier does not take ``example``: :func:`check_input`)."""
    check_input(model, example)
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
    *,
    val_images: Tensor | None = None,
    val_labels: Tensor | None = None,
    val_fraction: float = 0.0,
    eval_every: int = 25,
    patience: int | None = None,
    lambda_reg: float = 0.0,
    val_history: list[tuple[int, float]] | None = None,
) -> list[float]:
    """Learn λ of a λ-equitune classifier from a few labelled images, with the backbone frozen.

    Only ``model.lambda_net`` is trained (cross-entropy on the symmetrized logits); the wrapped model's
    parameters are left untouched (their ``requires_grad`` is restored afterwards). Because the
    λ-equitune classifier is exactly invariant, the orientation of the training images does not
    matter: λ learns which pose the frozen classifier reads best (the "upright" one), a soft
    canonicalization.

    With a validation split (``val_images, val_labels`` or ``val_fraction``) λ is scored (validation
    accuracy, ties broken by the validation loss) before the first step and every ``eval_every`` steps;
    the best λ seen is restored at the end, so the fit never ends worse on the validation split than its
    start (equitune, for the default zero-initialised λ); ``patience`` scores without improvement stop it.

    :param model: a λ-equitune classifier, e.g. ``symmetrize_classifier(net, method="lambda")``.
    :param images: ``(N, C, H, W)`` labelled images (a few hundred are enough).
    :param labels: ``(N,)`` class indices.
    :param steps: optimisation steps (mini-batches).
    :param lr: Adam learning rate.
    :param batch_size: mini-batch size.
    :param weight_decay: Adam weight decay on λ's parameters.
    :param seed: seeds the mini-batch sampling and the ``val_fraction`` split.
    :param progress: called as ``progress(step, steps)`` after each step.
    :param val_images: validation images (keeps the best λ).
    :param val_labels: their labels.
    :param val_fraction: hold out this fraction of the images as the validation split instead.
    :param eval_every: steps between validation scores.
    :param patience: stop after this many scores without improvement (``None``: never stop early).
    :param lambda_reg: weight of ``KL(uniform || λ)`` (pulls λ toward equitune's uniform weights).
    :param val_history: if given, ``(step, validation accuracy)`` of every score is appended to it.
    :returns: the training loss per step (until an early stop).
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
    if lambda_reg < 0 or not math.isfinite(lambda_reg):
        raise EquirlError(f"lambda_reg must be a finite number >= 0, got {lambda_reg}")
    if val_images is not None and val_labels is None:
        raise EquirlError("val_images needs val_labels")
    x_tr, y_tr, v_x, v_y = _split_val(images, labels, val_images, val_labels, val_fraction, seed)
    assert y_tr is not None
    init_lambda(model, x_tr)
    log_g = math.log(model.group.order)

    def loss_fn(idx: Tensor, gen: torch.Generator) -> Tensor:
        if lambda_reg == 0:
            return F.cross_entropy(model(x_tr[idx]), y_tr[idx])
        out, w = model.forward_with_weights(x_tr[idx])
        kl = -(w.float().clamp_min(1e-12).log().mean(0)) - log_g  # KL(uniform || λ) per sample
        return F.cross_entropy(out, y_tr[idx]) + lambda_reg * kl.mean()

    score: Callable[[], tuple[float, float]] | None = None
    if v_x is not None and v_y is not None:
        vx, vy = v_x, v_y

        def score() -> tuple[float, float]:
            logits = predict_logits(model, vx)
            return (
                float((logits.argmax(-1) == vy).float().mean()),
                -float(F.cross_entropy(logits.float(), vy)),
            )

    # eval mode: the backbone keeps its eval behaviour (dropout / batch-norm statistics)
    losses = _train_only(
        model,
        model.lambda_net,
        loss_fn,
        x_tr.shape[0],
        steps,
        lr,
        batch_size,
        weight_decay,
        seed,
        False,
        progress,
        score=score,
        eval_every=eval_every,
        patience=patience,
        val_history=val_history,
    )
    log.info("fit_lambda: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], len(losses))
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
