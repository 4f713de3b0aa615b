"""Language benchmarks: SCAN exact match by method, and EquiGPT2 generation throughput."""

from __future__ import annotations

import copy
import csv
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from equirl.language.scan import canonical_split, scan_examples
from equirl.utils.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["SCAN_METHODS", "bench_gpt2", "bench_scan", "write_csv"]

#: (label, method, symmetry (None: the split's default), symmetrizer kwargs)
SCAN_METHODS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    ("plain", "plain", None, {}),
    ("equitune", "equitune", None, {}),
    ("equizero-nll (sequence)", "equizero", None, {"proxy": "nll"}),
]

#: more rows, selected with ``full=True``: per-step equizero, the entropy proxy
FULL_METHODS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    ("equizero-nll (per step)", "equizero", None, {"proxy": "nll", "level": "step"}),
    ("equizero-entropy (sequence)", "equizero", None, {"proxy": "entropy"}),
]

#: the group λ-equitune uses per split
LAMBDA_SYMMETRY = {"addprim_jump": "verbs"}

#: extra rows per split: a larger group
EXTRA_METHODS: dict[str, list[tuple[str, str, str | None, dict[str, Any]]]] = {
    "addprim_jump": [("equizero-nll (sequence) [C4 verbs]", "equizero", "verbs", {"proxy": "nll"})],
}

#: the symmetry used for each split
SPLIT_SYMMETRY = {
    "addprim_jump": "jump_run",
    "template_around_right": "left_right",
    "addprim_turn_left": "left_right",
}


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Atomically write ``rows`` as CSV."""
    import io

    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


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
) -> list[dict[str, Any]]:
    """Pretrain one model per (cell, split, seed) on the split's own train set, then evaluate each
    method zero-shot (and, with ``finetune_epochs``, after finetuning the symmetrized model -- λ-equitune
    needs it to learn λ). Returns one row per (cell, split, method) with mean ± std over seeds."""
    from equirl.language.equiscan import exact_match
    from equirl.language.seq2seq import scan_vocabs
    from equirl.language.train import (
        DataConfig,
        ModelConfig,
        PretrainConfig,
        TrainConfig,
        evaluate,
        finetune,
        load_checkpoint,
        pretrain,
    )

    sv, tv = scan_vocabs()
    rows: list[dict[str, Any]] = []
    for split in splits:
        split = canonical_split(split)
        sym = SPLIT_SYMMETRY.get(split, "jump_run")
        train, test = scan_examples(split, "train"), scan_examples(split, "test")
        for cell in cells:
            acc: dict[str, list[float]] = {}
            for seed in seeds:
                cfg = PretrainConfig(
                    name="bench",
                    data=DataConfig(split=split),
                    model=ModelConfig(cell=cell, hidden=hidden, embedding=embedding, dropout=dropout),
                    train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
                )
                ckpt = (
                    Path(run_root) / f"{cell}_{split}_h{hidden}_e{epochs}_b{batch_size}_s{seed}"
                    if run_root
                    else None
                )
                if ckpt is not None and (ckpt / "model.pt").is_file():
                    model, _ = load_checkpoint(ckpt)
                else:
                    d, _ = pretrain(cfg, ckpt, tensorboard=ckpt is not None)
                    model, _ = load_checkpoint(d)
                methods = SCAN_METHODS + (FULL_METHODS if full else []) + EXTRA_METHODS.get(split, [])
                methods = methods if zero_shot else []
                if lambda_examples:
                    # λ-equitune, λ-net only (backbone frozen), on a random subset of the train set
                    lsym = LAMBDA_SYMMETRY.get(split, sym)
                    g = torch.Generator().manual_seed(seed)
                    sub = [
                        train[i] for i in torch.randperm(len(train), generator=g)[:lambda_examples].tolist()
                    ]
                    eq = finetune(
                        copy.deepcopy(model), sub, "lambda", lsym, 1, lr=3e-3, seed=seed, train_backbone=False
                    )
                    label = f"lambda-equitune (λ finetuned on {lambda_examples} ex.) [{lsym}]"
                    acc.setdefault(label, []).append(exact_match(eq.greedy, test, sv, tv))
                    log.info("%s %s seed %d %s: %.4f", cell, split, seed, label, acc[label][-1])
                for label, method, sym_override, kw in methods:
                    # zero-shot; λ-equitune starts as equitune and needs finetune_epochs to differ
                    score = evaluate(model, test, method, sym_override or sym, **kw)
                    acc.setdefault(label, []).append(score)
                    log.info("%s %s seed %d %s: %.4f", cell, split, seed, label, score)
                    if finetune_epochs and method != "plain":
                        eq = finetune(
                            copy.deepcopy(model),
                            train,
                            method,
                            sym_override or sym,
                            finetune_epochs,
                            seed=seed,
                            **kw,
                        )
                        acc.setdefault(f"{label}+ft", []).append(exact_match(eq.greedy, test, sv, tv))
                if finetune_epochs:
                    eq = finetune(copy.deepcopy(model), train, "lambda", sym, finetune_epochs, seed=seed)
                    acc.setdefault("lambda-equitune+ft", []).append(exact_match(eq.greedy, test, sv, tv))
            for label, vals in acc.items():
                rows.append(
                    {
                        "split": split,
                        "cell": cell,
                        "method": label,
                        "mean": round(100 * statistics.fmean(vals), 2),
                        "std": round(100 * (statistics.pstdev(vals) if len(vals) > 1 else 0.0), 2),
                        "seeds": len(vals),
                    }
                )
    return rows


def bench_gpt2(
    n_layer: int = 6,
    n_embd: int = 256,
    n_head: int = 4,
    batch: int = 1,
    prompt_len: int = 8,
    new_tokens: int = 32,
    repeats: int = 3,
    variant: str = "R-EquiGPT2",
) -> list[dict[str, Any]]:
    """Greedy generation tokens/s on one random GPT-2 (``n_layer`` x ``n_embd``): plain with KV cache,
    EquiGPT2 (ours: orbit batched, KV cache) and the re-encode-every-token loop of the released code."""
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
        "plain GPT-2 (KV cache)": lambda: generate_plain(model, ids, new_tokens),
        f"{variant} equitune (ours, KV cache, |G|={sym.group.order})": lambda: eq.generate(ids, new_tokens),
        f"{variant} equitune, full head per copy": lambda: eq_full.generate(ids, new_tokens),
        f"{variant} re-encode loop (released code)": lambda: generate_reencode(model, sym, ids, new_tokens),
    }
    ref = generate_reencode(model, sym, ids, new_tokens)
    same = bool((eq.generate(ids, new_tokens) == ref).all())
    same_full = bool((eq_full.generate(ids, new_tokens) == ref).all())
    rows: list[dict[str, Any]] = []
    for name, fn in runs.items():
        tps = tokens_per_second(fn, n, repeats if "loop" not in name else 1)
        rows.append({"generator": name, "tokens_per_s": round(tps, 1)})
    plain, loop = rows[0]["tokens_per_s"], rows[-1]["tokens_per_s"]
    for r in rows:
        r["vs_plain"] = round(r["tokens_per_s"] / plain, 3)
        r["vs_loop"] = round(r["tokens_per_s"] / loop, 2)
    rows[1]["same_tokens_as_loop"] = same
    rows[2]["same_tokens_as_loop"] = same_full
    return rows
