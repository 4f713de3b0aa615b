"""Language benchmarks: SCAN exact match by method, and EquiGPT2 generation throughput.

:func:`bench_scan` and :func:`bench_gpt2` return rows; :func:`scan_table` / :func:`gpt2_table` show them
(``equirl bench language-scan`` / ``language-gpt2`` print them); :func:`save_scan_csvs` and
``bench_gpt2(out=...)`` save them as CSV. Timed work runs on one torch thread, restored afterwards.
"""

from __future__ import annotations

import copy
import functools
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from equirl.bench.threads import torch_threads
from equirl.errors import ConfigError
from equirl.language.scan import canonical_split, scan_examples
from equirl.registry import BASE, EQUITUNE, EQUIZERO, LAMBDA, canonical_method
from equirl.utils.report import BenchTable, Step, progress, write_csv

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)

__all__ = [
    "FINETUNE_METHODS",
    "SCAN_METHODS",
    "ScanBenchSettings",
    "bench_gpt2",
    "bench_scan",
    "gpt2_table",
    "save_scan_csvs",
    "scan_table",
    "scan_unit",
]

#: (label, method, symmetry (None: the split's default), symmetrizer kwargs)
SCAN_METHODS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    (BASE, BASE, None, {}),
    (EQUITUNE, EQUITUNE, None, {}),
    ("equizero-nll (sequence)", EQUIZERO, None, {"proxy": "nll"}),
]

#: more rows, selected with ``full=True``: per-step equizero, the entropy proxy
FULL_METHODS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    ("equizero-nll (per step)", EQUIZERO, None, {"proxy": "nll", "level": "step"}),
    ("equizero-entropy (sequence)", EQUIZERO, None, {"proxy": "entropy"}),
]

#: the group λ-equitune uses per split
LAMBDA_SYMMETRY = {"addprim_jump": "verbs"}

#: extra rows per split: a larger group
EXTRA_METHODS: dict[str, list[tuple[str, str, str | None, dict[str, Any]]]] = {
    "addprim_jump": [("equizero-nll (sequence) [C4 verbs]", EQUIZERO, "verbs", {"proxy": "nll"})],
}

#: the symmetry used for each split
SPLIT_SYMMETRY = {
    "addprim_jump": "jump_run",
    "template_around_right": "left_right",
    "addprim_turn_left": "left_right",
}


#: finetuned rows (``finetune_epochs > 0``): (label, method, symmetry (None: the split's default), kwargs).
#: Every one finetunes *all* weights of the pretrained model on the split's own train set, through the
#: symmetrizer (equi-tuning, Basu et al., AAAI 2023); "base" finetunes the bare model as a control.
FINETUNE_METHODS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    (f"{BASE}+ft", BASE, None, {}),
    ("equitune+ft", EQUITUNE, None, {}),
    ("equizero-nll (sequence)+ft", EQUIZERO, None, {"proxy": "nll"}),
    ("lambda-equitune+ft", LAMBDA, None, {}),
]


@dataclass(frozen=True)
class ScanBenchSettings:
    """Everything one (cell, split, seed) unit of :func:`bench_scan` needs (picklable for ``jobs > 1``).

    :param epochs: pretraining epochs (batch ``batch_size``, Adam ``lr`` with cosine decay).
    :param finetune_epochs: epochs of whole-model finetuning through each symmetrizer (0: none).
    :param finetune_lr: finetuning learning rate.
    :param finetune_examples: finetune on a random subset of this many train examples (0: all).
    :param finetune_symmetry: group for the finetuned rows (None: the split's default).
    :param lambda_examples: also finetune only λ (backbone frozen) on this many train examples.
    :param finetune_methods: restrict the finetuned rows to these methods (``base``, ``equitune``,
        ``equizero``, ``lambda``); empty: all of :data:`FINETUNE_METHODS`.
    """

    epochs: int
    hidden: int = 64
    embedding: int = 32
    batch_size: int = 64
    lr: float = 2e-3
    dropout: float = 0.0
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    finetune_examples: int = 0
    finetune_symmetry: str | None = None
    run_root: str | None = None
    full: bool = False
    lambda_examples: int = 0
    zero_shot: bool = True
    finetune_methods: tuple[str, ...] = ()


def _subset(examples: Sequence[Any], n: int, seed: int) -> list[Any]:
    if not n or n >= len(examples):
        return list(examples)
    g = torch.Generator().manual_seed(seed)
    return [examples[i] for i in torch.randperm(len(examples), generator=g)[:n].tolist()]


def scan_unit(cell: str, split: str, seed: int, st: ScanBenchSettings) -> dict[str, tuple[float, float]]:
    """Pretrain (or reload from ``st.run_root``) one model and score every requested method.

    Runs on one torch thread (restored afterwards; in a worker process of ``jobs > 1`` too).

    :returns: ``{row label: (exact match on the test set, seconds spent finetuning)}``.
    """
    with torch_threads(1):
        return _scan_unit(cell, split, seed, st)


def _scan_unit(cell: str, split: str, seed: int, st: ScanBenchSettings) -> dict[str, tuple[float, float]]:
    from equirl.language.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig
    from equirl.language.equiscan import exact_match
    from equirl.language.seq2seq import greedy_decode, scan_vocabs
    from equirl.language.train import (
        evaluate,
        finetune,
        load_checkpoint,
        pretrain,
        train_model,
    )

    sv, tv = scan_vocabs()
    split = canonical_split(split)
    sym = SPLIT_SYMMETRY.get(split, "jump_run")
    train, test = scan_examples(split, "train"), scan_examples(split, "test")
    cfg = PretrainConfig(
        name="bench",
        data=DataConfig(split=split),
        model=ModelConfig(cell=cell, hidden=st.hidden, embedding=st.embedding, dropout=st.dropout),
        train=TrainConfig(epochs=st.epochs, batch_size=st.batch_size, lr=st.lr, seed=seed),
    )
    ckpt = (
        Path(st.run_root) / f"{cell}_{split}_h{st.hidden}_e{st.epochs}_b{st.batch_size}_s{seed}"
        if st.run_root
        else None
    )
    if ckpt is not None and (ckpt / "model.pt").is_file():
        model, _ = load_checkpoint(ckpt)
    else:
        d, _ = pretrain(cfg, ckpt, tensorboard=ckpt is not None)
        model, _ = load_checkpoint(d)
    out: dict[str, tuple[float, float]] = {}

    def record(label: str, score: float, seconds: float = 0.0) -> None:
        out[label] = (score, seconds)
        log.info("%s %s seed %d %s: %.4f (%.0f s)", cell, split, seed, label, score, seconds)

    if st.zero_shot:
        for label, method, sym_override, kw in (
            SCAN_METHODS + (FULL_METHODS if st.full else []) + EXTRA_METHODS.get(split, [])
        ):
            record(label, evaluate(model, test, method, sym_override or sym, **kw))
    if st.lambda_examples:
        # λ-equitune, λ-net only (backbone frozen), on a random subset of the train set
        lsym = LAMBDA_SYMMETRY.get(split, sym)
        t0 = time.time()
        eq = finetune(
            copy.deepcopy(model),
            _subset(train, st.lambda_examples, seed),
            LAMBDA,
            lsym,
            1,
            lr=3e-3,
            seed=seed,
            train_backbone=False,
        )
        label = f"lambda-equitune (λ finetuned on {st.lambda_examples} ex.) [{lsym}]"
        record(label, exact_match(eq.greedy, test, sv, tv), time.time() - t0)
    if st.finetune_epochs:
        ft_train = _subset(train, st.finetune_examples, seed)
        fsym = st.finetune_symmetry or sym
        for label, method, sym_override, kw in FINETUNE_METHODS:
            if st.finetune_methods and method not in st.finetune_methods:
                continue
            m = copy.deepcopy(model)
            t0 = time.time()
            if method == BASE:
                train_model(m, ft_train, st.finetune_epochs, st.batch_size, st.finetune_lr, seed=seed)
                secs = time.time() - t0
                score = exact_match(functools.partial(greedy_decode, m), test, sv, tv)
            else:
                s_ = sym_override or fsym
                eq = finetune(
                    m,
                    ft_train,
                    method,
                    s_,
                    st.finetune_epochs,
                    st.finetune_lr,
                    seed,
                    True,
                    st.batch_size,
                    **kw,
                )
                secs = time.time() - t0
                score = exact_match(eq.greedy, test, sv, tv)
                if s_ != sym:
                    label = f"{label} [{s_}]"
            record(label, score, secs)
    return out


def _unit_star(args: tuple[str, str, int, ScanBenchSettings]) -> dict[str, tuple[float, float]]:
    return scan_unit(*args)


def _run_units(
    units: list[tuple[str, str, int, ScanBenchSettings]], jobs: int, step: Step
) -> list[dict[str, tuple[float, float]]]:
    """The results of :func:`scan_unit` per unit, in order (in ``jobs`` processes when > 1)."""
    if jobs > 1 and len(units) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        results = []
        with ProcessPoolExecutor(min(jobs, len(units)), mp_context=mp.get_context("spawn")) as pool:
            for res in pool.map(_unit_star, units):
                results.append(res)
                step()
        return results
    results = []
    for u in units:
        step(0, f"SCAN {u[0]} {u[1]} seed {u[2]}")
        results.append(_unit_star(u))
        step()
    return results


def bench_scan(
    cells: Sequence[str],
    splits: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    hidden: int = 64,
    embedding: int = 32,
    batch_size: int = 64,
    lr: float = 2e-3,
    dropout: float = 0.0,
    finetune_epochs: int = 0,
    run_root: str | Path | None = None,
    full: bool = False,
    lambda_examples: int = 0,
    zero_shot: bool = True,
    finetune_lr: float = 1e-3,
    finetune_examples: int = 0,
    finetune_symmetry: str | None = None,
    jobs: int = 1,
    per_seed: list[dict[str, Any]] | None = None,
    finetune_methods: Sequence[str] = (),
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Pretrain one model per (cell, split, seed) on the split's own train set, then evaluate each
    method zero-shot and, with ``finetune_epochs``, after finetuning *all* weights through each
    symmetrizer on the same train set (:data:`FINETUNE_METHODS`). Returns one row per (cell, split,
    method) with the exact match (%) mean ± std over seeds and the mean finetuning time.

    :param jobs: run this many (cell, split, seed) units in parallel processes (one torch thread each).
    :param per_seed: if given, one record per (cell, split, seed, method) is appended to it.
    :param finetune_methods: only these finetuned methods (names or aliases; empty: all).
    :param console: show a transient progress bar there, one step per unit (``None``: silent).
    """
    from equirl.language.seq2seq import CELLS

    bad = [c for c in cells if c not in CELLS]
    if bad:  # before any pretraining starts
        raise ConfigError(f"unknown cell {bad[0]!r}; choose among {', '.join(sorted(CELLS))}")
    for split in splits:
        canonical_split(split)
    st = ScanBenchSettings(
        epochs,
        hidden,
        embedding,
        batch_size,
        lr,
        dropout,
        finetune_epochs,
        finetune_lr,
        finetune_examples,
        finetune_symmetry,
        str(run_root) if run_root is not None else None,
        full,
        lambda_examples,
        zero_shot,
        tuple(canonical_method(m) for m in finetune_methods),
    )
    offered = list(dict.fromkeys(m for _, m, _, _ in FINETUNE_METHODS))
    unknown = set(st.finetune_methods) - set(offered)
    if unknown:
        raise ConfigError(f"unknown finetune methods {sorted(unknown)}; choose from {', '.join(offered)}")
    units = [(cell, canonical_split(split), seed, st) for split in splits for cell in cells for seed in seeds]
    with progress(console, "SCAN", len(units)) as step:
        results = _run_units(units, jobs, step)
    grouped: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for (cell, split, seed, _), res in zip(units, results):
        for label, val in res.items():
            grouped.setdefault((split, cell), {}).setdefault(label, []).append(val)
            if per_seed is not None:
                per_seed.append(
                    {
                        "split": split,
                        "cell": cell,
                        "method": label,
                        "seed": seed,
                        "exact_match": round(100 * val[0], 2),
                        "finetune_s": round(val[1]),
                    }
                )
    rows: list[dict[str, Any]] = []
    for (split, cell), by_label in grouped.items():
        for label, vals in by_label.items():
            accs = [v[0] for v in vals]
            rows.append(
                {
                    "split": split,
                    "cell": cell,
                    "method": label,
                    "mean": round(100 * statistics.fmean(accs), 2),
                    "std": round(100 * (statistics.pstdev(accs) if len(accs) > 1 else 0.0), 2),
                    "seeds": len(accs),
                    "finetune_s": round(statistics.fmean(v[1] for v in vals)),
                }
            )
    return rows


def save_scan_csvs(
    out: str | Path, rows: Sequence[dict[str, Any]], per_seed: Sequence[dict[str, Any]], finetuned: bool
) -> tuple[Path, Path]:
    """Save the rows of :func:`bench_scan` and its ``per_seed`` records as CSV in the folder ``out``:
    ``scan_exact_match.csv`` (``scan_exact_match_finetuned.csv`` for a run with ``finetune_epochs``)
    and the same name ending ``_per_seed.csv``; returns both paths."""
    name = "scan_exact_match_finetuned" if finetuned else "scan_exact_match"
    table, seeds = Path(out) / f"{name}.csv", Path(out) / f"{name}_per_seed.csv"
    write_csv(table, rows)
    write_csv(seeds, per_seed)
    return table, seeds


def bench_gpt2(
    n_layer: int = 6,
    n_embd: int = 256,
    n_head: int = 4,
    batch: int = 1,
    prompt_len: int = 8,
    new_tokens: int = 32,
    repeats: int = 3,
    variant: str = "R-EquiGPT2",
    threads: int | None = 1,
    console: Console | None = None,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Greedy generation tokens/s on one random GPT-2 (``n_layer`` x ``n_embd``): plain with KV cache,
    EquiGPT2 (ours: orbit batched, KV cache) and the re-encode-every-token loop of the released code.

    :param threads: torch threads while timing (restored afterwards; ``None``: as they are).
    :param console: show a transient progress bar there (``None``: silent).
    :param out: if given, save the rows as ``gpt2_tokens_per_s.csv`` in this folder.
    """
    if n_embd % n_head:
        raise ConfigError(f"the width ({n_embd}) must be divisible by the number of heads ({n_head})")
    with torch_threads(threads), progress(console, "GPT-2 generation", 6) as step:
        rows = _bench_gpt2(n_layer, n_embd, n_head, batch, prompt_len, new_tokens, repeats, variant, step)
    if out is not None:
        write_csv(Path(out) / "gpt2_tokens_per_s.csv", rows)
    return rows


def _bench_gpt2(
    n_layer: int,
    n_embd: int,
    n_head: int,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    repeats: int,
    variant: str,
    step: Step,
) -> list[dict[str, Any]]:
    from equirl.language.gpt2 import (
        EquiGPT2,
        generate_plain,
        generate_reencode,
        tiny_gpt2,
        tokens_per_second,
        variant_symmetry,
    )
    from equirl.language.tokenizer import default_tokenizer

    tok = default_tokenizer()
    model = tiny_gpt2(len(tok), n_layer, n_embd, n_head, n_positions=prompt_len + new_tokens + 8)
    sym = variant_symmetry(tok, variant, vocab_size=len(tok))
    eq = EquiGPT2(model, sym).eval()
    eq_full = EquiGPT2(model, sym, fast_head=False).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (batch, prompt_len), generator=g)
    ids[:, 1] = sym.pairs[next(iter(sym.pairs))][0][0]
    n = batch * new_tokens
    runs: dict[str, Callable[[], Tensor]] = {
        "base GPT-2 (KV cache)": lambda: generate_plain(model, ids, new_tokens),
        f"{variant} equitune (ours, KV cache, |G|={sym.group.order})": lambda: eq.generate(ids, new_tokens),
        f"{variant} equitune, full head per copy": lambda: eq_full.generate(ids, new_tokens),
        f"{variant} re-encode loop (released code)": lambda: generate_reencode(model, sym, ids, new_tokens),
    }
    step(0, "GPT-2 generation: checking the tokens against the re-encode loop")
    ref = generate_reencode(model, sym, ids, new_tokens)
    same = bool((eq.generate(ids, new_tokens) == ref).all())
    same_full = bool((eq_full.generate(ids, new_tokens) == ref).all())
    step(2)
    rows: list[dict[str, Any]] = []
    for name, fn in runs.items():
        step(0, f"GPT-2 generation: {name}")
        tps = tokens_per_second(fn, n, repeats if "loop" not in name else 1)
        rows.append({"generator": name, "tokens_per_s": round(tps, 1)})
        step()
    plain, loop = rows[0]["tokens_per_s"], rows[-1]["tokens_per_s"]
    for r in rows:
        r["vs_base"] = round(r["tokens_per_s"] / plain, 3)
        r["vs_loop"] = round(r["tokens_per_s"] / loop, 2)
    rows[1]["same_tokens_as_loop"] = same
    rows[2]["same_tokens_as_loop"] = same_full
    return rows


def scan_table(rows: Sequence[dict[str, Any]]) -> BenchTable:
    """The rows of :func:`bench_scan` as a table."""
    return BenchTable(rows, "SCAN exact match (%), mean ± std over seeds", keys=3)


def gpt2_table(rows: Sequence[dict[str, Any]], n_layer: int, n_embd: int) -> BenchTable:
    """The rows of :func:`bench_gpt2` as a table."""
    return BenchTable(rows, f"GPT-2 generation ({n_layer} layers, width {n_embd}, random weights, CPU)")
