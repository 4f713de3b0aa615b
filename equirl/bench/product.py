"""Benchmark: product groups and canonicalization against equitune and equizero on one offline task.

Task: scikit-learn's 8×8 handwritten digits, a small CNN (the "big model") trained on upright,
positive-contrast images only, then tested on images transformed by a random element of a product
group ``G_1 × G_2`` acting on the flattened image:

* ``C4xZ2``: quarter turns × contrast inversion (``x ↦ -x`` on centred pixels);
* ``D4xZ2``: quarter turns and mirrors × contrast inversion.

(Rotations and mirrors alone do not commute -- together they form ``D4``, one factor here -- so
"C4 × mirror" is not a direct product action; contrast inversion commutes with every spatial map.)

Each method wraps the same frozen model: full-product equitune (``|G|`` passes), equizero
(``|G|`` passes, entropy proxy), the multi-group design (``Σ|G_i| - k + 1`` passes), learned
canonicalization (one pass) and, for reference, the plain model. The canonicalizer's scorer (a small
MLP) is trained with the identity prior only, on a few hundred upright training images, and is shared
by the multi-group design; rows with an untrained scorer show what the prior buys.

Call :func:`run_product_bench` (returns rows) and :func:`product_table` (a
:class:`~equirl.utils.report.BenchTable`); ``equirl bench product`` prints them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction, product_action, signed_permutation_action
from equirl.bench.threads import torch_threads
from equirl.errors import EquirlError
from equirl.groups import cyclic, dihedral, direct_product, permutation_group
from equirl.registry import MULTIGROUP
from equirl.symmetrizers import Canonicalize, EquiTune, EquiZero, MultiGroup, ScoreNet
from equirl.train_loop import fit
from equirl.utils.report import BenchTable, Column, Step, progress, write_csv

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["COLUMNS", "flat_image_product_action", "product_table", "run_product_bench"]

log = logging.getLogger(__name__)

#: columns of a result row, in table order
COLUMNS = (
    "group",
    "regime",
    "method",
    "accuracy",
    "model_passes",
    "scorer_passes",
    "ms_per_100",
    "train_s",
    "equiv_error",
)

SIDE = 8


def flat_image_product_action(spec: str, side: int = SIDE) -> GroupAction[Any]:
    """The action of ``C4xZ2`` or ``D4xZ2`` on flattened ``side×side`` images (last axis).

    The spatial factor permutes pixels (quarter turns, and left-right mirrors for ``D4``); the second
    factor, labelled ``neg``, inverts the contrast ``x ↦ -x``.

    :param spec: ``"C4xZ2"`` or ``"D4xZ2"``.
    :param side: image side length.
    """
    grid = torch.arange(side * side).view(side, side)
    rot = torch.rot90(grid, 1, (0, 1)).flatten().tolist()
    mirror = grid.flip(1).flatten().tolist()
    if spec == "C4xZ2":
        spatial, imgs = cyclic(4), [rot]
    elif spec == "D4xZ2":
        spatial, imgs = dihedral(4), [rot, mirror]
    else:
        raise EquirlError(f"unknown product benchmark group {spec!r}: use 'C4xZ2' or 'D4xZ2'")
    neg = permutation_group([(1, 0)], name="Z2", labels=["e", "neg"])
    a_sp = signed_permutation_action(spatial, imgs)
    a_neg = signed_permutation_action(neg, [list(range(side * side))], signs=[[-1.0] * (side * side)])
    return product_action(direct_product(spatial, neg), [a_sp, a_neg])


class DigitCNN(nn.Module):
    """The "big model": a small CNN on flattened 8×8 digits (input ``(B, 64)``, 10 logits)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.view(-1, 1, SIDE, SIDE))


class _RowCounter(nn.Module):
    """Counts the rows a wrapped module is called on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.inner(x)


def _load_digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits (:func:`equirl.vision.data.load_digits`), flattened, centred and split 67/33."""
    try:
        from equirl.vision.data import load_digits

        data = load_digits(size=SIDE)
    except ImportError as exc:  # pragma: no cover - sklearn is a vision extra
        raise EquirlError("the product benchmark needs scikit-learn (pip install 'equirl[vision]')") from exc
    x = data.images.flatten(1) * 2.0 - 1.0  # centred: background -1, ink up to +1
    y = data.labels
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = int(0.67 * len(y))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _epoch_batches(n: int, epochs: int, seed: int) -> tuple[int, Callable[[int], Tensor]]:
    """``(steps, batch)``: ``epochs`` passes over ``n`` rows in mini-batches of 64 (the last one
    smaller), reshuffled at each epoch by a generator seeded with ``seed``; ``batch(step)`` is the row
    indices of step ``step`` (called in order, as :func:`~equirl.train_loop.fit` does)."""
    g = torch.Generator().manual_seed(seed)
    per_epoch = -(-n // 64)
    order = torch.empty(0, dtype=torch.long)

    def batch(step: int) -> Tensor:
        nonlocal order
        i = step % per_epoch
        if i == 0:  # a new epoch: reshuffle
            order = torch.randperm(n, generator=g)
        return order[64 * i : 64 * (i + 1)]

    return epochs * per_epoch, batch


def _train_model(x: Tensor, y: Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = DigitCNN()
    steps, batch = _epoch_batches(len(y), epochs, seed)

    def loss_fn(step: int) -> Tensor:
        idx = batch(step)
        return nn.functional.cross_entropy(model(x[idx]), y[idx])

    fit(model.parameters(), loss_fn, steps, 2e-3, what="training the digits CNN")
    return model.eval()


def _train_scorer(can: Canonicalize, x: Tensor, steps: int, seed: int) -> list[float]:
    """Fit the canonicalizer's scorer with the identity prior only (Mondal et al., 2023); returns the
    loss of about every fifth of the fit and of its last step."""
    torch.manual_seed(seed)

    def loss_fn(step: int) -> Tensor:
        return can.prior_loss(x[torch.randint(0, len(x), (64,))])

    losses = fit(can.scorer.parameters(), loss_fn, steps, 3e-3, what="fitting the canonicalizer prior")
    return [v for step, v in enumerate(losses) if step % max(1, steps // 5) == 0 or step == steps - 1]


def _evaluate(
    sym: nn.Module, counter: _RowCounter, x: Tensor, y: Tensor, batch: int = 128
) -> tuple[float, float, float]:
    """Accuracy, model rows per input and milliseconds per 100 inputs."""
    counter.rows = 0
    correct = 0
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((sym(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum())
    elapsed = time.perf_counter() - start
    return correct / len(y), counter.rows / len(y), 1e5 * elapsed / len(y)


def run_product_bench(
    out_dir: str | Path | None = None,
    groups: Sequence[str] = ("C4xZ2", "D4xZ2"),
    seed: int = 0,
    epochs: int = 12,
    finetune_epochs: int = 10,
    scorer_images: int = 300,
    scorer_steps: int = 400,
    threads: int | None = 1,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Run the benchmark and return one row per (group, regime, method) with the :data:`COLUMNS` keys.

    Two regimes: ``zero-shot`` wraps the frozen upright model; ``finetuned`` finetunes a copy of it
    through each wrapper (equi-tuning) for ``finetune_epochs`` on the upright training set.

    :param out_dir: if given, write ``product_bench.csv`` there (atomically).
    :param groups: product groups to test (``"C4xZ2"``, ``"D4xZ2"``).
    :param seed: seed of the split, the training runs and the test transforms.
    :param epochs: training epochs of the upright model.
    :param finetune_epochs: epochs of finetuning through each wrapper (``0``: zero-shot only).
    :param scorer_images: upright training images the canonicalizer's prior is fitted on.
    :param scorer_steps: optimisation steps of the prior.
    :param threads: torch threads for the run (1 keeps timings comparable and shared machines
        responsive; restored afterwards; ``None``: as they are).
    :param console: show a transient progress bar there (``None``: silent).
    """
    methods = 8 + (4 if finetune_epochs > 0 else 0)
    with (
        torch_threads(threads),
        progress(console, "training the digits CNN", 1 + len(groups) * methods) as step,
    ):
        rows = _run(groups, seed, epochs, finetune_epochs, scorer_images, scorer_steps, step)
    if out_dir is not None:
        write_csv(Path(out_dir) / "product_bench.csv", rows, COLUMNS)
    return rows


def _run(
    groups: Sequence[str],
    seed: int,
    epochs: int,
    finetune_epochs: int,
    scorer_images: int,
    scorer_steps: int,
    step: Step,
) -> list[dict[str, Any]]:
    x_tr, y_tr, x_te, y_te = _load_digits(seed)
    t0 = time.perf_counter()
    base = _train_model(x_tr, y_tr, epochs, seed)
    for p in base.parameters():
        p.requires_grad_(False)
    log.info("trained the upright model in %.1fs", time.perf_counter() - t0)
    step()
    rows: list[dict[str, Any]] = []
    for spec in groups:
        act = flat_image_product_action(spec)
        G = act.group.order
        gen = torch.Generator().manual_seed(seed + 1)
        g_test = torch.randint(0, G, (len(y_te),), generator=gen)
        x_test = act.apply_each(x_te, g_test)
        probe = x_te[:16]

        torch.manual_seed(seed)
        scorer = ScoreNet(in_features=SIDE * SIDE, hidden=(32,))
        raw_scorer = copy.deepcopy(scorer)  # the same initial weights, left untrained
        prior_fit = Canonicalize(base, act, scorer=scorer)
        losses = _train_scorer(prior_fit, x_tr[:scorer_images], scorer_steps, seed)
        log.info("%s prior loss %s", spec, " -> ".join(f"{v:.3f}" for v in losses))
        with torch.no_grad():
            inv = torch.tensor(act.group.inverse_indices)[g_test]
            pose_acc = float((prior_fit.canonical_elements(x_test) == inv).float().mean())
        log.info("%s: the canonicalizer recovers the test pose of %.1f%% of inputs", spec, 100 * pose_acc)

        plan: list[tuple[str, str, nn.Module]] = [
            ("upright test", "plain model", scorer),
            ("zero-shot", "plain model", scorer),
            ("zero-shot", "equitune (full product)", scorer),
            ("zero-shot", "equizero (entropy)", scorer),
            ("zero-shot", MULTIGROUP, scorer),
            ("zero-shot", "canonicalize (prior)", scorer),
            ("zero-shot", "multigroup (untrained scorer)", raw_scorer),
            ("zero-shot", "canonicalize (untrained scorer)", raw_scorer),
        ]
        if finetune_epochs > 0:
            plan += [
                ("finetuned", "equitune (full product)", scorer),
                ("finetuned", "equizero (entropy)", scorer),
                ("finetuned", MULTIGROUP, scorer),
                ("finetuned", "canonicalize (prior)", scorer),
            ]
        for regime, name, sc in plan:
            step(0, f"{spec}: {regime} {name}")
            train_s = 0.0
            if regime != "finetuned":
                counter = _RowCounter(base)
                sym, scorer_passes = _build(name, counter, act, sc)
            else:
                model = copy.deepcopy(base)
                for p in model.parameters():
                    p.requires_grad_(True)
                counter = _RowCounter(model)
                sym, scorer_passes = _build(name, counter, act, copy.deepcopy(sc))
                train_s = _finetune(sym, x_tr, y_tr, finetune_epochs, seed)
            sym.eval()
            acc, passes, ms = _evaluate(sym, counter, x_te if regime == "upright test" else x_test, y_te)
            rows.append(
                {
                    "group": spec,
                    "regime": regime,
                    "method": name,
                    "accuracy": round(100 * acc, 2),
                    "model_passes": round(passes, 3),
                    "scorer_passes": scorer_passes,
                    "ms_per_100": round(ms, 2),
                    "train_s": round(train_s, 2),
                    "equiv_error": float(f"{_equiv_error(sym, act, probe):.2e}"),
                }
            )
            log.info("%s", rows[-1])
            step()
    return rows


def _build(name: str, model: nn.Module, act: GroupAction[Any], scorer: nn.Module) -> tuple[nn.Module, int]:
    """The wrapper for a method name, and the scorer passes it costs per input."""
    if name == "plain model":
        return model, 0
    if name == "equitune (full product)":
        return EquiTune(model, act), 0
    if name == "equizero (entropy)":
        return EquiZero(model, act, proxy="entropy"), 0
    if name.startswith(MULTIGROUP):
        return MultiGroup(model, act, scorer=scorer), act.group.order
    return Canonicalize(model, act, scorer=scorer), act.group.order


def _finetune(sym: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> float:
    """Equi-tune: train the wrapped model (and a canonicalizer's scorer, with its prior) through
    the wrapper on upright data; returns the wall time in seconds."""
    torch.manual_seed(seed)
    steps, batch = _epoch_batches(len(y), epochs, seed)

    def loss_fn(step: int) -> Tensor:
        idx = batch(step)
        loss = nn.functional.cross_entropy(sym(x[idx]), y[idx])
        if isinstance(sym, Canonicalize):
            loss = loss + sym.prior_loss(x[idx])
        return loss

    sym.train()
    start = time.perf_counter()
    fit([p for p in sym.parameters() if p.requires_grad], loss_fn, steps, 2e-3, what="equi-tuning")
    sym.eval()
    return time.perf_counter() - start


def _equiv_error(f: nn.Module, act: GroupAction[Any], x: Tensor) -> float:
    """``max_g |f(g·x) - f(x)|`` on logits (invariance) over every element of the product."""
    from equirl.symmetrizers import check_equivariance

    return check_equivariance(f, act, None, x)


def product_table(rows: Sequence[dict[str, Any]]) -> BenchTable:
    """The rows of :func:`run_product_bench` as a table."""
    headers = {
        "group": "group",
        "regime": "regime",
        "method": "method",
        "accuracy": "acc %",
        "model_passes": "model passes/input",
        "scorer_passes": "scorer passes/input",
        "ms_per_100": "ms / 100 inputs",
        "train_s": "finetune s",
        "equiv_error": "max equiv. error",
    }
    return BenchTable(
        rows,
        "Product groups and canonicalization on digits (model trained upright)",
        [Column(key, headers[key]) for key in COLUMNS],
        keys=3,
    )
