"""Training, checkpoints and evaluation of SCAN seq2seq models (``equirl language pretrain / eval``).

The configs' schemas are in :mod:`equirl.language.config`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from equirl.config import to_dict
from equirl.errors import CheckpointError, ConfigError
from equirl.language.config import EVAL_METHODS, ModelConfig, PretrainConfig
from equirl.language.equiscan import SymmetrizedSeq2Seq, exact_match, scan_symmetry
from equirl.language.scan import ScanExample, canonical_split, scan_examples
from equirl.language.seq2seq import PAD, Seq2Seq, batch_examples, greedy_decode, scan_vocabs
from equirl.registry import BASE, EQUIZERO, canonical_method, get_method
from equirl.train_loop import fit
from equirl.utils.io import (
    atomic_write_bytes,
    atomic_write_text,
    json_dumps,
    printable,
    replace_dir,
    torch_load_weights,
    torch_save_bytes,
)
from equirl.utils.progress import ProgressFn, subtask
from equirl.utils.weights import load_state

log = logging.getLogger(__name__)

__all__ = [
    "EVAL_METHODS",
    "build_model",
    "check_model_memory",
    "evaluate",
    "evaluate_checkpoint",
    "finetune",
    "load_checkpoint",
    "model_param_count",
    "pretrain",
    "save_checkpoint",
    "train_model",
]


def model_param_count(cfg: ModelConfig) -> int:
    """The number of parameters :func:`build_model` would allocate for ``cfg``, computed without building it:
    two embeddings, the encoder and decoder cells (gates x hidden x (embedding + hidden) plus two biases)
    and the output layer."""
    sv, tv = scan_vocabs()
    e, h = cfg.embedding, cfg.hidden
    gates = {"rnn": 1, "gru": 3, "lstm": 4}.get(cfg.cell, 4)
    cell = gates * h * (e + h) + 2 * gates * h
    out = (2 * h if cfg.attention else h) * len(tv) + len(tv)
    return (len(sv) + len(tv)) * e + 2 * cell + out


def check_model_memory(cfg: ModelConfig, where: str = "config", error: type[Exception] = ConfigError) -> int:
    """Refuse (one line naming ``where``) a model whose float32 weights alone exceed this machine's RAM,
    before anything is allocated; returns the bytes its weights take."""
    from equirl.utils.io import total_ram_bytes

    need = 4 * model_param_count(cfg)
    ram = total_ram_bytes()
    if ram is not None and need > ram:
        raise error(
            f"{where}: model.embedding={cfg.embedding}, model.hidden={cfg.hidden} ({cfg.cell}) would need "
            f"{need / 1e9:.1f} GB for its weights but this machine has {ram / 1e9:.1f} GB of RAM; refused"
        )
    return need


def build_model(cfg: ModelConfig) -> Seq2Seq:
    """The seq2seq model of ``cfg`` (refused in one line when its weights would not fit in RAM)."""
    check_model_memory(cfg)
    sv, tv = scan_vocabs()
    return Seq2Seq(cfg.cell, len(sv), len(tv), cfg.embedding, cfg.hidden, cfg.attention, cfg.dropout)


def _loss(logits: Tensor, tgt: Tensor) -> Tensor:
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD
    )


def train_model(
    model: nn.Module,
    examples: Sequence[ScanExample],
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    grad_clip: float = 5.0,
    seed: int = 0,
    writer: Any = None,
    tag: str = "train",
    progress: ProgressFn | None = None,
) -> list[float]:
    """Teacher-forced cross-entropy training of ``model(src, src_len, tgt) -> logits`` (a plain
    :class:`Seq2Seq` or a :class:`SymmetrizedSeq2Seq`, for finetuning) with Adam and a cosine learning
    rate decay. Returns the mean loss per epoch.

    :param progress: called as ``progress(examples seen, epochs * len(examples))`` after each batch.
    """
    sv, tv = scan_vocabs()
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    n_batches = (len(examples) + batch_size - 1) // batch_size
    if n_batches == 0:
        model.eval()
        return [0.0] * epochs
    total = max(1, epochs * n_batches)
    batches: list[tuple[Tensor, Tensor, Tensor]] = []
    losses: list[float] = []
    epoch_total = 0.0

    def loss_fn(step: int) -> Tensor:
        nonlocal batches
        if step % n_batches == 0:  # a new epoch: reshuffle
            batches = batch_examples(examples, batch_size, sv, tv, generator=gen)
        src, src_len, tgt = batches[step % n_batches]
        return _loss(model(src, src_len, tgt), tgt)

    def on_step(step: int, loss: float) -> None:
        nonlocal epoch_total
        epoch_total += loss
        if progress is not None:
            progress(step + 1, total)
        if writer is not None and (step + 1) % 20 == 0:
            writer.add_scalar(f"{tag}/loss", loss, step + 1)
        if (step + 1) % n_batches == 0:  # end of an epoch
            losses.append(epoch_total / n_batches)
            epoch_total = 0.0
            log.info("%s epoch %d loss %.4f", tag, len(losses), losses[-1])
            if writer is not None:
                writer.add_scalar(f"{tag}/epoch_loss", losses[-1], len(losses))

    model.train()
    # cosine decay to 5 % of lr: the low-lr tail polishes exact-match accuracy
    fit(params, loss_fn, epochs * n_batches, lr, clip=grad_clip, on_step=on_step, what=tag,
        lr_lambda=lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / total)))  # fmt: skip
    model.eval()
    return losses


def save_checkpoint(path: str | Path, model: Seq2Seq, cfg: PretrainConfig, metrics: dict[str, Any]) -> Path:
    """Atomically save ``{config, state_dict, metrics}``."""
    blob = {
        "format": "equirl.language.seq2seq/1",
        "config": to_dict(cfg),
        "state_dict": model.state_dict(),
        "metrics": metrics,
    }
    return atomic_write_bytes(path, torch_save_bytes(blob))


def load_checkpoint(path: str | Path) -> tuple[Seq2Seq, PretrainConfig]:
    """Load a checkpoint written by :func:`pretrain` (one-line :class:`CheckpointError` otherwise)."""
    from equirl.config import from_dict

    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    blob = torch_load_weights(p)  # weights only: a pickled Python object is refused, never run
    if not isinstance(blob, dict) or blob.get("format") != "equirl.language.seq2seq/1":
        raise CheckpointError(f"{p} is not an equirl SCAN seq2seq checkpoint")
    if not isinstance(blob.get("config"), dict) or not isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(f"{p} is not an equirl SCAN seq2seq checkpoint (no config or no weights)")
    try:
        cfg = from_dict(PretrainConfig, blob["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid config: {exc}") from None
    check_model_memory(cfg.model, f"checkpoint {p}", CheckpointError)  # before allocating anything
    model = build_model(cfg.model)
    # one line naming the key and both shapes (or the missing keys); NaN / inf weights refused
    load_state(model, blob["state_dict"], f"checkpoint {p}: its weights (the model in its config)")
    return model.eval(), cfg


def evaluate(
    model: Seq2Seq,
    examples: Sequence[ScanExample],
    method: str = BASE,
    symmetry: str = "jump_run",
    max_len: int = 60,
    progress: ProgressFn | None = None,
    **kwargs: Any,
) -> float:
    """Exact-match accuracy of the plain (``method="base"``) or symmetrized model on ``examples``.

    :param progress: called as ``progress(examples done, len(examples))``.
    """
    sv, tv = scan_vocabs()
    model.eval()
    if not get_method(method).symmetrizes:
        return exact_match(
            lambda s, n: greedy_decode(model, s, n, max_len), examples, sv, tv, progress=progress
        )
    eq = SymmetrizedSeq2Seq(model, scan_symmetry(symmetry), method, **kwargs).eval()
    return exact_match(lambda s, n: eq.greedy(s, n, max_len), examples, sv, tv, progress=progress)


def finetune(
    model: Seq2Seq,
    examples: Sequence[ScanExample],
    method: str,
    symmetry: str,
    epochs: int = 1,
    lr: float = 5e-4,
    seed: int = 0,
    train_backbone: bool = True,
    batch_size: int = 64,
    writer: Any = None,
    progress: ProgressFn | None = None,
    **kwargs: Any,
) -> SymmetrizedSeq2Seq:
    """Equi-tuning (Basu et al., AAAI 2023): finetune the pretrained model *through* its symmetrizer.

    The teacher-forced loss is taken on the symmetrized step logits, so every copy ``g·x`` receives the
    gradient: with ``jump ↔ run`` the backbone sees ``jump`` in all of ``run``'s training contexts.

    :param model: the pretrained model (modified in place; pass a copy to keep it).
    :param examples: finetuning examples (usually the split's own train set).
    :param method: ``"equitune"``, ``"equizero"`` (straight-through: forward equizero, gradient
        equitune) or ``"lambda"`` (λ-net and, with ``train_backbone``, all weights).
    :param symmetry: SCAN symmetry spec (:func:`~equirl.language.equiscan.scan_symmetry`).
    :param epochs: passes over ``examples``.
    :param lr: Adam learning rate (cosine decay to 5 %).
    :param seed: shuffling seed.
    :param train_backbone: ``False`` freezes the pretrained weights (only λ learns).
    :param batch_size: mini-batch size.
    :param writer: optional TensorBoard ``SummaryWriter``.
    :param progress: called as ``progress(examples seen, epochs * len(examples))``.
    :param kwargs: symmetrizer options (``proxy``, ``level``...).
    """
    eq = SymmetrizedSeq2Seq(model, scan_symmetry(symmetry), method, **kwargs)
    if not train_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
    if not any(p.requires_grad for p in eq.parameters()):
        raise ConfigError(f"nothing to finetune: {method} with a frozen backbone has no parameters")
    train_model(
        eq,
        examples,
        epochs,
        batch_size,
        lr,
        seed=seed,
        writer=writer,
        tag=f"finetune_{method}",
        progress=progress,
    )
    return eq.eval()


#: what a run folder of :func:`pretrain` holds: ``--overwrite`` replaces only such a folder (or an empty one)
_RUN_FILES = ("model.pt", "config.yaml", "metrics.json", "tb")


def _check_run_out(out_dir: Path, overwrite: bool) -> None:
    """Before any work: an existing ``--out`` folder is refused unless ``overwrite``, and even then only a
    previous run folder (or an empty one) is replaced -- never a folder of other files."""
    if not out_dir.exists():
        return
    shown = printable(out_dir)
    if not overwrite:
        raise ConfigError(
            f"--out {shown} already exists: choose a new folder, or pass --overwrite to replace that run"
        )
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in _RUN_FILES)
    if others:
        raise ConfigError(
            f"--out {shown} is not a language run folder (it holds {printable(', '.join(others[:5]), 120)}): "
            "--overwrite replaces only a previous run's folder; choose a new folder"
        )


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path | None = None,
    tensorboard: bool = True,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Train a seq2seq model on ``cfg.data.split``'s train part; writes ``model.pt``, ``config.yaml``,
    ``metrics.json`` and TensorBoard curves into a fresh run folder. Returns ``(run_dir, metrics)``.

    :param out_dir: the run folder (default: a fresh one under ``cfg.out``); an existing one is refused
        before any work unless ``overwrite``.
    :param progress: called as ``progress(done, total)`` in examples: training, then the evaluations.
    :param overwrite: replace an existing ``out_dir`` that holds a previous run (only once the new run is
        complete).
    """

    import yaml

    from equirl.utils.io import atomic_dir, check_output_path
    from equirl.utils.runs import run_name, unique_run_dir

    check_output_path(out_dir if out_dir is not None else cfg.out, "out")  # before any work
    if out_dir is not None:
        _check_run_out(Path(out_dir), overwrite)
    check_model_memory(cfg.model)
    torch.manual_seed(cfg.train.seed)
    train = scan_examples(cfg.data.split, "train", cfg.data.root)
    test = scan_examples(cfg.data.split, "test", cfg.data.root)
    if cfg.data.limit:
        train, test = train[: cfg.data.limit], test[: cfg.data.limit]
    model = build_model(cfg.model)
    final = (
        Path(out_dir)
        if out_dir is not None
        else unique_run_dir(
            cfg.out,
            run_name(
                "scan", f"{cfg.name}_{cfg.model.cell}_{canonical_split(cfg.data.split)}", cfg.train.seed
            ),
        )
    )
    rng = torch.Generator().manual_seed(cfg.train.seed)
    sub = [train[i] for i in torch.randperm(len(train), generator=rng)[: cfg.train.eval_examples].tolist()]
    n_train = cfg.train.epochs * len(train)
    total = n_train + len(sub) + len(test)
    t0 = time.time()
    build = final.with_name(f".{final.name}.new-{os.getpid()}") if final.exists() else final
    with atomic_dir(build) as tmp:
        writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(tmp / "tb"))
        losses = train_model(
            model,
            train,
            cfg.train.epochs,
            cfg.train.batch_size,
            cfg.train.lr,
            cfg.train.grad_clip,
            cfg.train.seed,
            writer,
            progress=subtask(progress, 0, total),
        )
        metrics: dict[str, Any] = {
            "split": canonical_split(cfg.data.split),
            "cell": cfg.model.cell,
            "train_loss": losses,
            "train_exact_match_subset": evaluate(
                model, sub, max_len=cfg.train.max_len, progress=subtask(progress, n_train, total)
            ),
            "test_exact_match": evaluate(
                model, test, max_len=cfg.train.max_len, progress=subtask(progress, n_train + len(sub), total)
            ),
            "seconds": round(time.time() - t0, 1),
        }
        if writer is not None:
            writer.add_scalar("eval/test_exact_match", metrics["test_exact_match"], cfg.train.epochs)
            writer.close()
        save_checkpoint(tmp / "model.pt", model, cfg, metrics)
        atomic_write_text(tmp / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        atomic_write_text(tmp / "metrics.json", json_dumps(metrics, indent=1))
    if build != final:
        replace_dir(build, final)
    return final, metrics


def evaluate_checkpoint(
    checkpoint: str | Path,
    methods: Sequence[str] = EVAL_METHODS,
    split: str | None = None,
    part: str = "test",
    root: str | None = None,
    symmetry: str | None = None,
    proxy: str = "nll",
    level: str = "sequence",
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-3,
    limit: int = 0,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Exact match of a checkpoint on a SCAN split, plain and symmetrized (``equirl language eval``).

    :param checkpoint: a run folder or ``model.pt`` written by :func:`pretrain`.
    :param methods: among ``base``, ``equitune``, ``equizero``, ``lambda`` (or their aliases, such as
        ``plain`` or ``λ``; the rows give the canonical names).
    :param split: SCAN split (default: the checkpoint's).
    :param part: ``"train"`` or ``"test"``.
    :param root: folder of official SCAN files (default: generated from the grammar).
    :param symmetry: symmetry spec (default: the split's, :func:`~equirl.language.equiscan.split_symmetry`).
    :param proxy: equizero's proxy (``nll``, ``entropy``, ``max_prob``).
    :param level: equizero: choose the element once per ``"sequence"`` or at every ``"step"``.
    :param finetune_epochs: first finetune all weights through each method's symmetrizer (base: plainly)
        on the split's train set, starting from the checkpoint each time.
    :param finetune_lr: the finetuning learning rate.
    :param limit: use only the first ``limit`` eval (and finetune) examples (0: all).
    :param progress: called as ``progress(done, total)`` in examples over all methods.
    :returns: one row per method: split, symmetry, method, finetuned, exact_match_%, n.
    """
    import functools

    from equirl.language.equiscan import split_symmetry

    methods = [canonical_method(m) for m in methods]
    if not methods:
        raise ConfigError(f"no method to evaluate: give one or more of {', '.join(EVAL_METHODS)}")
    bad = [m for m in methods if m not in EVAL_METHODS]
    if bad:
        raise ConfigError(f"unknown method {bad[0]!r}: use {', '.join(EVAL_METHODS)}")
    if finetune_epochs < 0 or limit < 0:
        raise ConfigError("finetune_epochs and limit must be >= 0")
    model, cfg = load_checkpoint(checkpoint)
    split = canonical_split(split or cfg.data.split)
    symmetry = symmetry or split_symmetry(split)
    examples = scan_examples(split, part, root)
    if limit:
        examples = examples[:limit]
    train: list[ScanExample] = []
    if finetune_epochs:
        train = scan_examples(split, "train", root)
        train = train[:limit] if limit else train
    per_method = finetune_epochs * len(train) + len(examples)
    total = len(methods) * per_method
    sv, tv = scan_vocabs()
    rows = []
    for k, method in enumerate(methods):
        kw: dict[str, Any] = {"proxy": proxy, "level": level} if method == EQUIZERO else {}
        start = k * per_method
        if finetune_epochs:
            m2, _ = load_checkpoint(checkpoint)
            ft = subtask(progress, start, total)
            done = subtask(progress, start + finetune_epochs * len(train), total)
            if method == BASE:
                train_model(m2, train, finetune_epochs, lr=finetune_lr, progress=ft)
                acc = exact_match(functools.partial(greedy_decode, m2), examples, sv, tv, progress=done)
            else:
                eq = finetune(m2, train, method, symmetry, finetune_epochs, finetune_lr, progress=ft, **kw)
                acc = exact_match(eq.greedy, examples, sv, tv, progress=done)
        else:
            acc = evaluate(model, examples, method, symmetry, progress=subtask(progress, start, total), **kw)
        rows.append(
            {
                "split": split,
                "symmetry": "-" if method == BASE else symmetry,
                "method": method,
                "finetuned": bool(finetune_epochs),
                "exact_match_%": round(100 * acc, 2),
                "n": len(examples),
            }
        )
    return rows
