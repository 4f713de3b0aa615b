"""Pretraining the small CNN, finetuning backbone and/or λ, evaluation — the engine of ``equirl vision``.

The configs' schemas are in :mod:`equirl.vision.config`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirl.errors import CheckpointError, ConfigError, EquirlError
from equirl.registry import AUTO, BASE, canonical_method, get_method
from equirl.symmetrizers import Canonicalize, EquiZero, LambdaEquiTune, Symmetrizer, get_proxy
from equirl.train_loop import fit
from equirl.utils.io import check_output_path, printable, remove_file
from equirl.utils.progress import ProgressFn, subtask
from equirl.utils.weights import load_state
from equirl.vision.classifier import (
    evaluate_transforms,
    fit_canonicalizer,
    fit_lambda,
    init_lambda,
    symmetrize_classifier,
)
from equirl.vision.config import EVAL_METHODS, DataConfig, FinetuneConfig, PretrainConfig, TrainConfig
from equirl.vision.data import ImageDataset, load_digits, load_image_folder, split_dataset
from equirl.vision.groups import vision_action
from equirl.vision.models import SmallCNN, check_cnn_memory, load_cnn, save_cnn
from equirl.vision.select import ClassifierChoice, select_classifier_method

__all__ = [
    "auto_choice_files",
    "auto_choice_path",
    "build_classifier",
    "check_fits",
    "check_model_output",
    "check_new_output",
    "drop_stale_choice",
    "eval_choice_files",
    "eval_choice_path",
    "evaluate_checkpoint",
    "finetune",
    "load_data",
    "load_finetuned",
    "pretrain",
]

log = logging.getLogger(__name__)


def load_data(cfg: DataConfig) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` for a data config."""
    if cfg.source == "digits":
        data = load_digits(cfg.size)
    else:
        assert cfg.root is not None
        data = load_image_folder(cfg.root, size=cfg.size, mode=cfg.mode)
    if len(data.classes) < 2:
        raise ConfigError(
            f"data.root {printable(cfg.root)} has {len(data.classes)} class folder "
            f"({_names(data.classes)}): a classifier needs at least 2 classes (one sub-folder per class)"
        )
    if cfg.n_test >= len(data):
        raise ConfigError(f"data.n_test={cfg.n_test} leaves no training images ({len(data)} images in all)")
    return split_dataset(data, cfg.n_test, cfg.split_seed)


def _names(classes: list[str], limit: int = 6) -> str:
    shown = ", ".join(printable(c, 40) for c in classes[:limit])
    return shown + (", ..." if len(classes) > limit else "")


def check_fits(
    net: SmallCNN, data: ImageDataset, where: str = "data", classes: list[str] | None = None
) -> None:
    """One-line error when the images do not fit the CNN (size or channels) or the data's classes are
    not as many as the CNN's outputs (a 10-class CNN scored on 3 classes would print 0 %).

    :param classes: the checkpoint's class names when it saved them (for the message).
    """
    c, size = net.hparams["in_channels"], net.hparams["image_size"]
    if tuple(data.images.shape[1:]) != (c, size, size):
        raise ConfigError(
            f"{where}: images are {tuple(data.images.shape[1:])} but the CNN expects "
            f"({c}, {size}, {size}); set data.size: {size} (and the mode) to match the checkpoint"
        )
    k = net.hparams["num_classes"]
    if len(data.classes) != k:
        saved = f" ({_names([str(c) for c in classes])})" if isinstance(classes, list) and classes else ""
        raise ConfigError(
            f"{where}: {len(data.classes)} classes ({_names(data.classes)}) but the checkpoint's CNN "
            f"has {k}{saved}: use data with the checkpoint's classes"
        )


def check_new_output(
    out: str | Path, overwrite: bool = False, inputs: tuple[str | Path, ...] = (), what: str = "out"
) -> Path:
    """Before any work: ``out`` can be written (:func:`~equirl.utils.io.check_output_path`) and does not
    exist yet unless ``overwrite`` -- nothing saved is replaced unless asked for.

    :param inputs: input files that ``out`` must not silently replace (the checkpoint being finetuned).
    :raises ConfigError: one line naming ``out`` and ``--overwrite``.
    """
    p = check_output_path(out, what, kind="file")
    if overwrite or not p.exists():
        return p
    for src in inputs:
        with contextlib.suppress(OSError):
            if os.path.samefile(p, src):
                raise ConfigError(
                    f"{what} {printable(p)} is the input checkpoint: it would be overwritten; set {what} to a "
                    "new file, or pass --overwrite to replace it"
                )
    raise ConfigError(
        f"{what} {printable(p)} already exists: set {what} to a new file, or pass --overwrite to replace it"
    )


def check_model_output(
    out: str | Path, overwrite: bool = False, inputs: tuple[str | Path, ...] = (), writes_choice: bool = False
) -> Path:
    """:func:`check_new_output` for a model file, and the same for the auto choice beside it
    (:func:`auto_choice_files`): a choice left by an earlier ``method: auto`` model at ``out`` would
    describe another model once ``out`` is replaced, so it is refused too unless ``overwrite`` (and then
    replaced, or removed by :func:`drop_stale_choice` once the new model is saved).

    :param writes_choice: the new model writes its own choice (``method: auto``).
    :raises ConfigError: one line naming the file and ``--overwrite``.
    """
    p = check_new_output(out, overwrite, inputs)
    if overwrite:
        return p
    for side in auto_choice_files(p):
        if side.exists() or side.is_symlink():
            why = "written beside out" if writes_choice else "of an earlier model at out: it would be stale"
            raise ConfigError(
                f"{printable(side)} (method auto's choice, {why}) already exists: set out to a new file, "
                "or pass --overwrite to replace it"
            )
    return p


def drop_stale_choice(out: str | Path) -> None:
    """Remove the auto choice beside ``out`` (:func:`auto_choice_files`) once a model that is not
    ``method: auto``'s has been saved there: it described the model that was replaced."""
    for side in auto_choice_files(out):
        remove_file(side)


def _steps(train: TrainConfig, n: int) -> int:
    return train.steps if train.steps > 0 else max(1, train.epochs * -(-n // train.batch_size))


def pretrain(
    cfg: PretrainConfig, save: bool = True, progress: ProgressFn | None = None, overwrite: bool = False
) -> tuple[SmallCNN, dict[str, Any]]:
    """Train the small CNN on upright images only; returns ``(model, metrics)`` and saves ``cfg.out``.

    ``cfg.threads`` is for the caller (the CLI sets torch's thread count from it); this function leaves
    torch's global state alone.

    :param progress: called as ``progress(done, total)``: the training steps, then the evaluation.
    :param overwrite: replace an existing ``cfg.out`` (else refused before any work).
    """
    if save:
        check_model_output(cfg.out, overwrite)  # before any work
    size = {"image_size": cfg.data.size, "width": cfg.model.width, "hidden": cfg.model.hidden}
    channels = 3 if cfg.data.source == "folder" and cfg.data.mode == "RGB" else 1
    check_cnn_memory({"in_channels": channels, **size}, "model", ConfigError)  # before loading any data
    train_set, test_set = load_data(cfg.data)
    torch.manual_seed(cfg.train.seed)
    c = train_set.images.shape[1]
    model = SmallCNN(c, len(train_set.classes), cfg.data.size, cfg.model.width, cfg.model.hidden)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    n = len(train_set)
    steps = _steps(cfg.train, n)
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(n, generator=gen)
    pos = 0
    n_eval = vision_action("rot90").group.order + 1

    def loss_fn(step: int) -> Tensor:
        nonlocal perm, pos
        if pos + cfg.train.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + cfg.train.batch_size]
        pos += cfg.train.batch_size
        return F.cross_entropy(model(train_set.images[idx]), train_set.labels[idx])

    fit(model.parameters(), loss_fn, steps, cfg.train.lr, weight_decay=cfg.train.weight_decay,
        what="pretraining the CNN",
        on_step=None if progress is None else (lambda step, loss: progress(step + 1, steps + n_eval)))  # fmt: skip
    model.eval()
    metrics: dict[str, Any] = {"steps": steps, "seconds": time.perf_counter() - t0, "n_train": n}
    acc = evaluate_transforms(
        model, test_set.images, test_set.labels, "rot90", progress=subtask(progress, steps, steps + n_eval)
    )
    metrics.update({f"test_{k}": v for k, v in acc.items()})
    if save:
        meta = {
            "classes": train_set.classes,
            "data": {"source": cfg.data.source, "size": cfg.data.size},
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        save_cnn(model, cfg.out, meta)
        drop_stale_choice(cfg.out)
        metrics["path"] = str(cfg.out)
    return model, metrics


def build_classifier(
    net: nn.Module, method: str, group: str, proxy: str = "entropy", prior_weight: float = 1.0
) -> nn.Module:
    """``net`` itself for ``base`` (or ``plain``), else its symmetrization (λ on the frozen ``net.features``)."""
    spec = get_method(method)
    if not spec.symmetrizes:
        return net
    if spec.learned_scorer:
        return symmetrize_classifier(net, group=group, method=method, prior_weight=prior_weight)
    return symmetrize_classifier(net, group=group, method=method, proxy=proxy)


def _train_model(
    model: nn.Module,
    params: list[nn.Parameter],
    data: ImageDataset,
    cfg: TrainConfig,
    augment_group: str | None,
    progress: ProgressFn | None = None,
) -> list[float]:
    gen = torch.Generator().manual_seed(cfg.seed)
    action = vision_action(augment_group) if augment_group else None
    n = len(data)

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        x = data.images[idx]
        if action is not None:
            x = action.apply_each(x, torch.randint(0, action.group.order, (x.shape[0],), generator=gen))
        return F.cross_entropy(model(x), data.labels[idx])

    model.train()
    steps = _steps(cfg, n)
    losses = fit(
        params,
        loss_fn,
        steps,
        cfg.lr,
        weight_decay=cfg.weight_decay,
        what="finetuning",
        on_step=None if progress is None else (lambda step, loss: progress(step + 1, steps)),
    )
    model.eval()
    return losses


def _evaluate_test(
    model: nn.Module, test_set: ImageDataset, cfg: FinetuneConfig, progress: ProgressFn | None
) -> dict[str, float]:
    """Accuracy on the test set upright and under each group element (the run's seed)."""
    return evaluate_transforms(
        model, test_set.images, test_set.labels, cfg.group, seed=cfg.train.seed, progress=progress
    )


def finetune(
    cfg: FinetuneConfig,
    save: bool = True,
    net: SmallCNN | None = None,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Finetune a pretrained CNN's backbone and/or λ under ``cfg.method``; returns ``(classifier, metrics)``.

    ``cfg.threads`` is for the caller (the CLI sets torch's thread count from it).

    :param net: use this CNN instead of loading ``cfg.checkpoint`` (it is modified in place when
        ``train_backbone`` is on).
    :param progress: called as ``progress(done, total)``: evaluation before, training steps, evaluation
        after.
    :param overwrite: replace an existing ``cfg.out`` -- even the input checkpoint (else refused before any
        work).
    """
    if save and cfg.out:
        inputs = (cfg.checkpoint,) if net is None else ()
        check_model_output(cfg.out, overwrite, inputs, writes_choice=cfg.method == AUTO)
    meta: dict[str, Any] = {}
    if net is None:
        net, meta = load_cnn(cfg.checkpoint)
    train_set, test_set = load_data(cfg.data)
    check_fits(net, test_set, classes=meta.get("classes"))
    sub = train_set.subset(torch.arange(min(cfg.n_train, len(train_set))))
    torch.manual_seed(cfg.train.seed)
    if cfg.method == AUTO:
        return _finetune_auto(cfg, net, sub, test_set, save, progress)
    model = build_classifier(net, cfg.method, cfg.group, cfg.proxy, cfg.prior_weight)
    t0 = time.perf_counter()
    steps = _steps(cfg.train, len(sub))
    n_eval = vision_action(cfg.group).group.order + 1
    total = steps + 2 * n_eval

    def evaluate(offset: int) -> dict[str, float]:
        return _evaluate_test(model, test_set, cfg, subtask(progress, offset, total))

    before = evaluate(0)
    losses: list[float] = []
    fit_kw: dict[str, Any] = dict(
        steps=steps,
        lr=cfg.train.lr,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        progress=subtask(progress, n_eval, total),
    )
    keep_kw: dict[str, Any] = dict(val_fraction=cfg.val_fraction, patience=cfg.patience)
    if isinstance(model, Canonicalize) and cfg.train_lambda and not cfg.train_backbone:
        losses = fit_canonicalizer(
            model, sub.images, sub.labels, task_weight=cfg.task_weight, **fit_kw, **keep_kw
        )
    elif get_method(cfg.method).learned_weights and cfg.train_lambda and not cfg.train_backbone:
        assert isinstance(model, LambdaEquiTune)
        losses = fit_lambda(
            model,
            sub.images,
            sub.labels,
            weight_decay=cfg.train.weight_decay,
            lambda_reg=cfg.lambda_reg,
            **fit_kw,
            **keep_kw,
        )
    else:
        if isinstance(model, LambdaEquiTune):
            init_lambda(model, sub.images)
        params: list[nn.Parameter] = []
        if cfg.train_backbone:
            params += list(net.parameters())
        if cfg.train_lambda and isinstance(model, LambdaEquiTune):
            params += list(model.lambda_net.parameters())
        if isinstance(model, EquiZero) and not model.straight_through:
            raise EquirlError("equizero finetuning needs straight_through=True")
        aug = cfg.group if (cfg.augment and cfg.method == BASE) else None
        losses = _train_model(model, params, sub, cfg.train, aug, fit_kw["progress"])
    model.eval()
    after = evaluate(n_eval + steps)
    metrics: dict[str, Any] = {
        "seconds": time.perf_counter() - t0,
        "n_train": len(sub),
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": losses[-1] if losses else float("nan"),
    }
    metrics.update({f"before_{k}": v for k, v in before.items()})
    metrics.update({f"after_{k}": v for k, v in after.items()})
    if save and cfg.out:
        _save_finetuned(
            net, model, cfg.method, cfg.group, cfg.proxy, cfg.prior_weight, metrics, cfg.out, test_set.classes
        )
        drop_stale_choice(cfg.out)  # an earlier auto model's choice (only there with --overwrite)
        metrics["path"] = str(cfg.out)
    return model, metrics


def _save_finetuned(
    net: SmallCNN,
    model: nn.Module,
    method: str,
    group: str,
    proxy: str,
    prior_weight: float,
    metrics: dict[str, Any],
    out: str,
    classes: list[str] | None = None,
) -> None:
    """Save the CNN with what :func:`load_finetuned` needs to rebuild ``model`` (λ / scorer weights)."""
    meta: dict[str, Any] = {
        "classes": list(classes or []),
        "method": method,
        "group": group,
        "proxy": proxy,
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    if isinstance(model, LambdaEquiTune):
        meta["lambda_state"] = model.lambda_net.state_dict()
    if isinstance(model, Canonicalize):
        meta["scorer_state"] = model.scorer.state_dict()
        meta["prior_weight"] = prior_weight
    save_cnn(net, out, meta)


def auto_choice_path(out: str | Path) -> Path:
    """Where ``method: auto`` writes its choice beside a finetuned model: ``{stem}.auto_choice.json``
    (the Markdown evidence table is the same name with ``.md``).

    :param out: the finetuned model's path (``out`` of the finetune config).
    """
    p = Path(out)
    return p.with_name(f"{p.stem}.auto_choice.json")


def auto_choice_files(out: str | Path) -> tuple[Path, Path]:
    """The two files of :func:`auto_choice_path`: ``(json, markdown)``."""
    jp = auto_choice_path(out)
    return jp, jp.with_suffix(".md")


def eval_choice_path(folder: str | Path) -> Path:
    """Where :func:`evaluate_checkpoint` with ``method="auto"`` and ``choice_out=folder`` writes the
    choice: ``folder/auto_choice.json`` (the Markdown evidence table is the same name with ``.md``)."""
    return Path(folder) / "auto_choice.json"


def eval_choice_files(folder: str | Path) -> tuple[Path, Path]:
    """The two files of :func:`eval_choice_path`: ``(json, markdown)`` (the names ``equirl eval`` uses)."""
    jp = eval_choice_path(folder)
    return jp, jp.with_suffix(".md")


def _finetune_auto(
    cfg: FinetuneConfig,
    net: SmallCNN,
    sub: ImageDataset,
    test_set: ImageDataset,
    save: bool,
    progress: ProgressFn | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """``method: auto``: select among ``cfg.candidates`` on the ``n_train`` images (backbone frozen),
    evaluate the base CNN and the choice on the test set, save the choice and its evidence."""
    t0 = time.perf_counter()
    n_eval = vision_action(cfg.group).group.order + 1
    total = 2 * n_eval + 1

    def evaluate(model: nn.Module, offset: int) -> dict[str, float]:
        return _evaluate_test(model, test_set, cfg, subtask(progress, offset, total))

    before = evaluate(net, 0)
    choice = select_classifier_method(
        net,
        cfg.group,
        sub.images,
        sub.labels,
        candidates=cfg.candidates,
        val_fraction=cfg.val_fraction if cfg.val_fraction > 0 else 0.2,
        steps=_steps(cfg.train, len(sub)),
        lr=cfg.train.lr,
        patience=cfg.patience if cfg.patience is not None else 4,
        seed=cfg.train.seed,
    )
    if progress is not None:
        progress(n_eval + 1, total)
    model = choice.model
    after = evaluate(model, n_eval + 1)
    metrics: dict[str, Any] = {"seconds": time.perf_counter() - t0, "n_train": len(sub)}
    metrics.update({f"before_{k}": v for k, v in before.items()})
    metrics.update({f"after_{k}": v for k, v in after.items()})
    metrics.update({"method": choice.method, "auto_reason": choice.reason, "auto_choice": choice})
    if save and cfg.out:
        proxy = getattr(getattr(model, "proxy", None), "__name__", cfg.proxy)
        prior = float(getattr(model, "prior_weight", cfg.prior_weight))
        _save_finetuned(
            net, model, choice.method, cfg.group, proxy, prior, metrics, cfg.out, test_set.classes
        )
        metrics["path"] = str(cfg.out)
        json_path, md_path = choice.save(auto_choice_path(cfg.out))
        metrics["auto_choice_json"], metrics["auto_choice_md"] = str(json_path), str(md_path)
    return model, metrics


def load_finetuned(path: str | Path, method: str | None = None, group: str | None = None) -> nn.Module:
    """Rebuild a classifier saved by :func:`finetune` (or a plain pretrained checkpoint)."""
    net, meta = load_cnn(path)
    method = method or str(meta.get("method", BASE))
    group = group or str(meta.get("group", "rot90"))
    model = build_classifier(net, method, group, str(meta.get("proxy", "entropy")))
    if isinstance(model, LambdaEquiTune):
        state = meta.get("lambda_state")
        if state is None:
            raise CheckpointError(f"{path} has no λ weights: finetune with method: lambda first")
        c, s = net.hparams["in_channels"], net.hparams["image_size"]
        init_lambda(model, torch.zeros(1, c, s, s))
        load_state(model.lambda_net, state, f"checkpoint {path}: its λ weights (meta.lambda_state)")
    if isinstance(model, Canonicalize):
        state = meta.get("scorer_state")
        if state is None:
            raise CheckpointError(
                f"{path} has no canonicalizer weights: finetune with method: canonicalize first"
            )
        c, s = net.hparams["in_channels"], net.hparams["image_size"]
        with torch.no_grad():
            model.scores(torch.zeros(1, c, s, s))
        load_state(model.scorer, state, f"checkpoint {path}: its canonicalizer weights (meta.scorer_state)")
    model.eval()
    return model


#: group names as symmetrizers report them -> the names vision commands take
_GROUP_ALIASES = {"C4": "rot90", "Z2": "mirror", "D4": "rot90+mirror", "C2": "rot180", "flip": "mirror"}


def evaluate_checkpoint(
    path: str | Path,
    method: str | None = None,
    group: str | None = None,
    proxy: str = "entropy",
    data: DataConfig | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    n_train: int = 1000,
    on_choice: Callable[[ClassifierChoice], None] | None = None,
    choice_out: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[str, int, dict[str, float]]:
    """Accuracy of a saved classifier per group element and on a randomly transformed test set.

    :param path: a checkpoint from :func:`pretrain` or :func:`finetune`.
    :param method: one of :data:`~equirl.vision.config.VISION_METHODS` (``base``, ``equitune``, ``equizero``, ``lambda``,
        ``canonicalize``) or an alias such as ``plain`` (default: as saved), or ``auto``: the saved CNN's
        method is chosen by :func:`~equirl.vision.select.select_classifier_method` on the first
        ``n_train`` images of the *training* split (never the test images) and then evaluated.
    :param group: ``rot90``, ``rot180``, ``mirror`` or ``rot90+mirror`` (default: as saved).
    :param proxy: equizero's proxy (``entropy`` or ``max_prob``).
    :param data: the test data (default: the digits split).
    :param seed: seed of the randomly transformed test set.
    :param progress: called as ``progress(done, |G| + 1)``.
    :param n_train: ``auto``: labelled training images for fitting and scoring the candidates.
    :param on_choice: ``auto``: called with the :class:`~equirl.vision.select.ClassifierChoice`.
    :param choice_out: ``auto``: a folder to save the choice and its evidence in, once evaluated
        (:func:`eval_choice_files`); refused before any work when they exist, unless ``overwrite``.
    :param overwrite: replace the choice files in ``choice_out``.
    :returns: ``(group, number of test images, {element: accuracy, ..., "random", "mean"})``.
    """
    if method is not None:
        method = canonical_method(method)
        if method not in EVAL_METHODS:
            raise ConfigError(f"method must be one of {', '.join(EVAL_METHODS)}, got {method!r}")
    if choice_out is not None:
        if method != AUTO:
            raise ConfigError("choice_out saves the choice of method auto: set method='auto' or drop it")
        check_output_path(choice_out, "choice_out")  # before any work
        for f in eval_choice_files(choice_out):
            check_output_path(f, "choice_out file", kind="file")
        found = [f for f in eval_choice_files(choice_out) if f.exists() or f.is_symlink()]
        if found and not overwrite:
            raise ConfigError(
                f"{printable(found[0])} (an earlier choice) already exists: choose another folder, or pass "
                "--overwrite to replace it"
            )
    if method == AUTO:
        if n_train < 5:
            raise ConfigError(f"n_train must be >= 5 (images to fit and to validate on), got {n_train}")
        cnn, meta = load_cnn(path)
        given = group or str(meta.get("group", "rot90"))
        name = _GROUP_ALIASES.get(given, given)
        train, test = load_data(data or DataConfig())
        check_fits(cnn, test, classes=meta.get("classes"))
        sub = train.subset(torch.arange(min(n_train, len(train))))
        choice = select_classifier_method(cnn, name, sub.images, sub.labels, seed=seed)
        if on_choice is not None:
            on_choice(choice)
        res = evaluate_transforms(choice.model, test.images, test.labels, name, seed=seed, progress=progress)
        if choice_out is not None:
            choice.save(eval_choice_path(choice_out))
        return name, len(test), res
    model = load_finetuned(path, method, group)
    name = group or getattr(getattr(model, "group", None), "name", None) or "rot90"
    name = _GROUP_ALIASES.get(name, name)
    if isinstance(model, EquiZero) and proxy != "entropy":
        model.proxy = get_proxy(proxy)
    _, test = load_data(data or DataConfig())
    net = model.model if isinstance(model, Symmetrizer) else model
    if isinstance(net, SmallCNN):
        check_fits(net, test)
    res = evaluate_transforms(model, test.images, test.labels, name, seed=seed, progress=progress)
    return name, len(test), res


def random_transform(images: Tensor, group: str, seed: int) -> Tensor:
    """Each image transformed by its own seeded random group element."""
    action = vision_action(group)
    idx = torch.randint(
        0, action.group.order, (images.shape[0],), generator=torch.Generator().manual_seed(seed)
    )
    return action.apply_each(images, idx)
