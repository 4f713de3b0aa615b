"""``equirl bench vision``: invariant classifiers on the offline pretrained digits CNN.

Single images (per seed: pretrain the upright-only CNN, then evaluate on the upright and on a randomly
rotated test set): base, equitune, equizero (entropy and max-probability proxies), λ-equitune with
λ learned from ``n_lambda`` labelled images (backbone frozen), equitune with the backbone finetuned,
and the plain CNN finetuned with random-rotation augmentation; plus the cost per image.

Multi-image (K digits per example, label = their sum, each image rotated independently): Baltaji et
al.'s equivariant-branch + IS-fusion design against equitune of a joint model over the full product
group ``C4^K``.

:func:`run_vision_bench` runs both (on one torch thread by default, restored afterwards), saves CSVs and
yields the tables; ``equirl bench vision`` prints them.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirl.bench.threads import torch_threads
from equirl.errors import EquirlError
from equirl.registry import AUTO, BASE, CANONICALIZE, EQUITUNE, EQUIZERO, LAMBDA
from equirl.symmetrizers import Canonicalize, LambdaEquiTune
from equirl.train_loop import fit
from equirl.utils.io import atomic_write_text
from equirl.utils.report import BenchTable, Column, Step, progress, write_csv
from equirl.vision.classifier import accuracy, fit_canonicalizer, fit_lambda, symmetrize_classifier
from equirl.vision.config import DataConfig, PretrainConfig, TrainConfig
from equirl.vision.data import ImageDataset
from equirl.vision.groups import vision_action
from equirl.vision.models import SmallCNN
from equirl.vision.multi_image import JointClassifier, MultiImageIS, ProductEquiTune, apply_per_image
from equirl.vision.select import select_classifier_method
from equirl.vision.train import load_data, pretrain, random_transform

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "multi_image_bench",
    "never_hurt_bench",
    "run_never_hurt_bench",
    "run_vision_bench",
    "single_image_bench",
]

log = logging.getLogger(__name__)


def _cost_ms(model: Callable[[Tensor], Tensor], x: Tensor, repeats: int = 2) -> float:
    """Milliseconds per image of a batched no-grad forward (best of ``repeats``)."""
    best = float("inf")
    with torch.no_grad():
        model(x[:8])
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return 1000 * best / x.shape[0]


def _train(
    model: nn.Module,
    params: list[nn.Parameter],
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float,
    seed: int,
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    batch_size: int = 64,
) -> None:
    """``steps`` Adam steps of cross-entropy on random mini-batches (drawn, and transformed, with a
    generator seeded with ``seed``); only ``params`` are trained."""
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step: int) -> Tensor:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
        xb = x[idx] if transform is None else transform(x[idx], gen)
        return F.cross_entropy(model(xb), y[idx])

    model.train()
    fit(params, loss_fn, steps, lr, what="training")
    model.eval()


def single_image_bench(
    seeds: int = 3,
    n_lambda: int = 1000,
    lambda_steps: int = 300,
    finetune_steps: int = 300,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Rows ``{seed, method, upright, random, ms_per_image}`` for every seed and method.

    :param console: show a transient progress bar there (``None``: silent).
    """
    with progress(console, "single images", 3 * seeds) as step:
        return _single_image(seeds, n_lambda, lambda_steps, finetune_steps, step)


def _single_image(
    seeds: int, n_lambda: int, lambda_steps: int, finetune_steps: int, step: Step
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    data = DataConfig()
    train, test = load_data(data)
    if not 0 < n_lambda <= len(train):
        raise EquirlError(f"--n-lambda must be in 1..{len(train)}, got {n_lambda}")
    act = vision_action("rot90")
    for seed in range(seeds):
        step(0, f"seed {seed}: pretraining the CNN")
        net, _ = pretrain(PretrainConfig(data=data, train=TrainConfig(seed=seed)), save=False)
        step(1, f"seed {seed}: fitting λ and finetuning")
        x_rand = random_transform(test.images, "rot90", seed=1000 + seed)
        sub = train.subset(torch.arange(n_lambda))
        models: dict[str, nn.Module] = {
            BASE: net,
            EQUITUNE: symmetrize_classifier(net, "rot90", EQUITUNE),
            "equizero (entropy)": symmetrize_classifier(net, "rot90", EQUIZERO, proxy="entropy"),
            "equizero (max prob)": symmetrize_classifier(net, "rot90", EQUIZERO, proxy="max_prob"),
        }
        lam = symmetrize_classifier(net, "rot90", LAMBDA)
        assert isinstance(lam, LambdaEquiTune)
        torch.manual_seed(seed)
        fit_lambda(lam, sub.images, sub.labels, steps=lambda_steps, lr=3e-3, seed=seed)
        models[f"λ-equitune (λ fit on {n_lambda})"] = lam
        # finetuned baselines (copies of the backbone)
        eq_net = SmallCNN(**net.hparams)
        eq_net.load_state_dict(net.state_dict())
        eq_ft = symmetrize_classifier(eq_net, "rot90", EQUITUNE)
        _train(eq_ft, list(eq_net.parameters()), sub.images, sub.labels, finetune_steps, 1e-3, seed)
        models[f"equitune finetuned ({n_lambda})"] = eq_ft
        aug_net = SmallCNN(**net.hparams)
        aug_net.load_state_dict(net.state_dict())

        def rot(xb: Tensor, g: torch.Generator) -> Tensor:
            return act.apply_each(xb, torch.randint(0, 4, (xb.shape[0],), generator=g))

        _train(aug_net, list(aug_net.parameters()), sub.images, sub.labels, finetune_steps, 1e-3, seed, rot)
        models[f"plain finetuned + rot. aug. ({n_lambda})"] = aug_net
        step(1, f"seed {seed}: evaluating")
        for name, m in models.items():
            m.eval()
            rows.append(
                {
                    "seed": seed,
                    "method": name,
                    "upright": accuracy(m, test.images, test.labels),
                    "random_rot90": accuracy(m, x_rand, test.labels),
                    "ms_per_image": _cost_ms(m, test.images[:256]),
                }
            )
        log.info("seed %d done", seed)
        step()
    return rows


def _pairs(data: ImageDataset, n: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(data), (n, k), generator=g)
    return data.images[idx], data.labels[idx].sum(1)


def multi_image_bench(
    k: int = 2, steps: int = 400, n_train: int = 4000, seed: int = 0, console: Console | None = None
) -> list[dict[str, Any]]:
    """Rows ``{method, upright, random_independent, ms_per_example, trunk_passes}`` (labels: digit sums).

    :param console: show a transient progress bar there (``None``: silent).
    """
    with progress(console, "multi-image: pretraining the CNN", 6) as step:
        return _multi_image(k, steps, n_train, seed, step)


def _multi_image(k: int, steps: int, n_train: int, seed: int, step: Step) -> list[dict[str, Any]]:
    data = DataConfig()
    train, test = load_data(data)
    net, _ = pretrain(PretrainConfig(data=data, train=TrainConfig(seed=seed)), save=False)
    for p in net.parameters():
        p.requires_grad_(False)
    n_classes = 9 * k + 1
    xtr, ytr = _pairs(train, n_train, k, seed)
    xte, yte = _pairs(test, 1000, k, seed + 1)
    act = vision_action("rot90")
    g = torch.Generator().manual_seed(seed + 2)
    xte_rot = apply_per_image(act, xte, torch.randint(0, 4, (xte.shape[0], k), generator=g))
    torch.manual_seed(seed)
    is_models: dict[str, MultiImageIS] = {}
    for branch, trunk in ((EQUITUNE, net.feature_maps), (LAMBDA, net.features)):
        step(1, f"multi-image: training the {branch} IS model")
        ism = MultiImageIS(trunk, k, n_classes, "rot90", hidden=128, branch=branch)
        ism(xtr[:2])  # materialise lazy layers
        _train(ism, [p for p in ism.parameters() if p.requires_grad], xtr, ytr, steps, 3e-3, seed)
        is_models[branch] = ism
    step(1, "multi-image: training the joint model")
    joint = JointClassifier(net.features, net.hparams["hidden"], k, n_classes, hidden=128)
    _train(joint, list(joint.mlp.parameters()), xtr, ytr, steps, 3e-3, seed)
    step(1, "multi-image: finetuning the product equitune head")
    prod_zero = ProductEquiTune(joint, k, "rot90")
    joint2 = JointClassifier(net.features, net.hparams["hidden"], k, n_classes, hidden=128)
    joint2.load_state_dict(joint.state_dict())
    prod_ft = ProductEquiTune(joint2, k, "rot90")
    _train(prod_ft, list(joint2.mlp.parameters()), xtr, ytr, max(1, steps // 4), 3e-3, seed, batch_size=32)
    step(1, "multi-image: evaluating")
    G = act.group.order
    rows = []
    for name, m, passes in [
        ("joint (plain)", joint, k),
        (f"equitune over C4^{k} (zero-shot)", prod_zero, k * G**k),
        (f"equitune over C4^{k} (head finetuned, {max(1, steps // 4)} steps)", prod_ft, k * G**k),
        (
            "equitune branches (feature maps) + IS layer",
            is_models[EQUITUNE],
            is_models[EQUITUNE].trunk_passes(),
        ),
        ("λ-equitune branches + IS layer", is_models[LAMBDA], is_models[LAMBDA].trunk_passes()),
    ]:
        m.eval()
        rows.append(
            {
                "method": name,
                "upright": accuracy(m, xte, yte, 128),
                "random_independent": accuracy(m, xte_rot, yte, 128),
                "ms_per_example": _cost_ms(m, xte[:128]),
                "trunk_passes": passes,
            }
        )
    step()
    return rows


def _summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        row: dict[str, Any] = {"method": name, "seeds": len(rs)}
        for key in ("upright", "random_rot90"):
            vals = [100 * r[key] for r in rs]
            row[key] = statistics.mean(vals)
            row[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        row["ms_per_image"] = statistics.median(r["ms_per_image"] for r in rs)
        out.append(row)
    return out


def run_vision_bench(
    seeds: int = 3,
    n_lambda: int = 1000,
    lambda_steps: int = 300,
    multi_k: int = 2,
    skip_multi: bool = False,
    out: str | Path | None = None,
    threads: int | None = 1,
    console: Console | None = None,
) -> Iterator[BenchTable]:
    """Run the single-image benchmark (and the multi-image one unless ``skip_multi``); yield each table
    as it is ready; with ``out``, save ``vision_single_seeds.csv``, ``vision_single_summary.csv`` and
    ``vision_multi_image.csv`` there.

    :param threads: torch threads while it runs (restored afterwards; ``None``: as they are).
    :param console: show transient progress bars there (``None``: silent).
    """
    if seeds < 1:
        raise EquirlError(f"--seeds must be >= 1, got {seeds}")
    with torch_threads(threads):
        rows = single_image_bench(seeds, n_lambda, lambda_steps, console=console)
        summary = _summarise(rows)
        if out is not None:
            write_csv(Path(out) / "vision_single_seeds.csv", rows, float_format=".4f")
            write_csv(Path(out) / "vision_single_summary.csv", summary, float_format=".4f")
        yield BenchTable(
            summary,
            f"digits CNN (upright-trained), C4, {seeds} seed(s), 500 test images: accuracy % (mean ± std)",
            [
                Column("method"),
                Column(
                    "upright", fmt=lambda r: f"{r['upright']:.1f} ± {r['upright_std']:.1f}", justify="right"
                ),
                Column(
                    "random_rot90",
                    "random rot90",
                    lambda r: f"{r['random_rot90']:.1f} ± {r['random_rot90_std']:.1f}",
                    "right",
                ),
                Column("ms_per_image", "ms / image", ".3f"),
            ],
        )
        if skip_multi:
            return
        multi = multi_image_bench(k=multi_k, console=console)
        if out is not None:
            write_csv(Path(out) / "vision_multi_image.csv", multi, float_format=".4f")
        yield BenchTable(
            multi,
            f"multi-image: {multi_k} digits per example, label = sum, independent rotations",
            [
                Column("method"),
                Column("upright", "upright %", lambda r: f"{100 * r['upright']:.1f}", "right"),
                Column(
                    "random_independent",
                    "indep. rotated %",
                    lambda r: f"{100 * r['random_independent']:.1f}",
                    "right",
                ),
                Column("ms_per_example", "ms / example", ".3f"),
                Column("trunk_passes", "trunk passes"),
            ],
        )


def never_hurt_bench(
    seeds: int = 5,
    n_labels: int = 1000,
    steps: int = 300,
    bad_lr: float = 0.3,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Methods that never hurt (see docs/vision.md) on the digits CNN under random quarter turns: rows
    ``{seed, method, upright, random_rot90, ms_per_image, backbone_passes}``.

    λ with the raw image as input and the plain fit (all ``n_labels`` images, the last λ kept) against λ
    on the backbone's features with validation keeping (20 % held out, best λ kept, patience 4), both
    also with a deliberately bad learning rate ``bad_lr``; learned canonicalization with the prior, plain
    fit vs validation keeping, on the raw image (one backbone pass) or on the backbone's features; and
    ``auto`` (:func:`~equirl.vision.select.select_classifier_method` on the same labelled images).

    :param console: show a transient progress bar there (``None``: silent).
    """
    with progress(console, "never hurt", seeds) as step:
        return _never_hurt(seeds, n_labels, steps, bad_lr, step)


def _never_hurt(seeds: int, n_labels: int, steps: int, bad_lr: float, step: Step) -> list[dict[str, Any]]:
    data = DataConfig()
    train, test = load_data(data)
    if not 10 <= n_labels <= len(train):
        raise EquirlError(f"n_labels must be in 10..{len(train)}, got {n_labels}")
    rows: list[dict[str, Any]] = []
    keep: dict[str, Any] = {"val_fraction": 0.2, "patience": 4}
    for seed in range(seeds):
        step(0, f"seed {seed}: pretraining the CNN")
        net, _ = pretrain(PretrainConfig(data=data, train=TrainConfig(seed=seed)), save=False)
        sub = train.subset(torch.arange(n_labels))
        x_rand = random_transform(test.images, "rot90", seed=1000 + seed)
        models: dict[str, tuple[nn.Module, int]] = {
            BASE: (net, 1),
            EQUITUNE: (symmetrize_classifier(net, "rot90", EQUITUNE), 4),
            f"{EQUIZERO} (entropy)": (symmetrize_classifier(net, "rot90", EQUIZERO, proxy="entropy"), 4),
        }
        for label, feats, kw, lr, passes in (
            ("λ: image input, plain fit", None, {}, 3e-3, 4),
            ("λ: image input + validation keeping", None, keep, 3e-3, 4),
            ("λ: features, plain fit", "auto", {}, 3e-3, 8),
            ("λ: features + validation keeping", "auto", keep, 3e-3, 8),
            (f"λ: image input, plain fit, lr {bad_lr}", None, {}, bad_lr, 4),
            (f"λ: image input + validation keeping, lr {bad_lr}", None, keep, bad_lr, 4),
            (f"λ: features, plain fit, lr {bad_lr}", "auto", {}, bad_lr, 8),
            (f"λ: features + validation keeping, lr {bad_lr}", "auto", keep, bad_lr, 8),
        ):
            lam = symmetrize_classifier(net, "rot90", LAMBDA, lambda_features=feats)
            assert isinstance(lam, LambdaEquiTune)
            torch.manual_seed(seed)
            fit_lambda(lam, sub.images, sub.labels, steps, lr, seed=seed, **kw)
            models[label] = (lam, passes)
        for label, sfeats, kw, passes in (
            ("canonicalize: prior, plain fit", None, {}, 1),
            ("canonicalize: prior + validation keeping", None, keep, 1),
            ("canonicalize: prior on features + keeping", "auto", keep, 5),
        ):
            can = symmetrize_classifier(net, "rot90", CANONICALIZE, scorer_features=sfeats)
            assert isinstance(can, Canonicalize)
            torch.manual_seed(seed)
            fit_canonicalizer(can, sub.images, sub.labels, steps, seed=seed, **kw)
            models[label] = (can, passes)
        choice = select_classifier_method(net, "rot90", sub.images, sub.labels, steps=steps, seed=seed)
        passes_of = {BASE: 1, CANONICALIZE: 1, EQUIZERO: 4, EQUITUNE: 4, LAMBDA: 8}
        models[f"{AUTO} (chose {choice.method})"] = (choice.model, passes_of.get(choice.method, 0))
        for name, (m, passes) in models.items():
            m.eval()
            rows.append(
                {
                    "seed": seed,
                    "method": name.split(" (chose")[0] if name.startswith(AUTO) else name,
                    "chosen": choice.method if name.startswith(AUTO) else "",
                    "upright": accuracy(m, test.images, test.labels),
                    "random_rot90": accuracy(m, x_rand, test.labels),
                    "ms_per_image": _cost_ms(m, test.images[:256]),
                    "backbone_passes": passes,
                }
            )
        log.info("never-hurt seed %d done (auto chose %s)", seed, choice.method)
        step()
    return rows


def _never_hurt_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = _summarise(rows)
    for row in out:
        rs = [r for r in rows if r["method"] == row["method"]]
        row["backbone_passes"] = rs[0]["backbone_passes"]
        chosen = [r["chosen"] for r in rs if r["chosen"]]
        row["chosen"] = " ".join(f"{c}×{chosen.count(c)}" for c in dict.fromkeys(chosen))
    return out


def _markdown(summary: list[dict[str, Any]], seeds: int) -> str:
    lines = [
        f"Digits CNN trained upright; 500 test digits under random quarter turns; {seeds} seeds, mean ± std.",
        "",
        "| method | upright % | random 90° % | backbone passes / image | ms / image |",
        "|---|---|---|---|---|",
    ]
    for r in summary:
        name = r["method"] + (f" (chose {r['chosen']})" if r["chosen"] else "")
        lines.append(
            f"| {name} | {r['upright']:.1f} ± {r['upright_std']:.1f} | "
            f"{r['random_rot90']:.1f} ± {r['random_rot90_std']:.1f} | {r['backbone_passes']} | "
            f"{r['ms_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def run_never_hurt_bench(
    seeds: int = 5,
    n_labels: int = 1000,
    steps: int = 300,
    out: str | Path | None = None,
    threads: int | None = 1,
    console: Console | None = None,
) -> BenchTable:
    """Run :func:`never_hurt_bench`; with ``out``, save ``vision_never_hurt_seeds.csv``,
    ``vision_never_hurt_summary.csv`` and ``vision_never_hurt.md`` there.

    :param threads: torch threads while it runs (restored afterwards; ``None``: as they are).
    """
    if seeds < 1:
        raise EquirlError(f"--seeds must be >= 1, got {seeds}")
    with torch_threads(threads):
        rows = never_hurt_bench(seeds, n_labels, steps, console=console)
    summary = _never_hurt_summary(rows)
    if out is not None:
        write_csv(Path(out) / "vision_never_hurt_seeds.csv", rows, float_format=".4f")
        write_csv(Path(out) / "vision_never_hurt_summary.csv", summary, float_format=".4f")
        atomic_write_text(Path(out) / "vision_never_hurt.md", _markdown(summary, seeds))
    return BenchTable(
        summary,
        f"never hurt: digits CNN, random quarter turns, {seeds} seed(s): accuracy % (mean ± std)",
        [
            Column("method"),
            Column("chosen"),
            Column("upright", fmt=lambda r: f"{r['upright']:.1f} ± {r['upright_std']:.1f}", justify="right"),
            Column(
                "random_rot90",
                "random rot90",
                lambda r: f"{r['random_rot90']:.1f} ± {r['random_rot90_std']:.1f}",
                "right",
            ),
            Column("backbone_passes", "backbone passes"),
            Column("ms_per_image", "ms / image", ".3f"),
        ],
    )
