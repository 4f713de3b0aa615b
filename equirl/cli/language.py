"""``equirl language ...`` (SCAN, seq2seq, EquiGPT2) and ``equirl bench language-scan / language-gpt2``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from rich.markup import escape

from equirl.cli.args import (
    add_config_args,
    bounded_float,
    bounded_int,
    int_list,
    nonneg_int,
    out_dir,
    positive_float,
    positive_int,
    subcommand_required,
)
from equirl.cli.core import set_torch_threads
from equirl.cli.output import make_table, progress_bar
from equirl.language.config import EVAL_METHODS


def register(commands: Any, bench: Any) -> None:
    lang = commands.add_parser("language", help="SCAN compositional generalization and GPT-2 fairness")
    sub = lang.add_subparsers(dest="language_command", metavar="SUBCOMMAND")
    lang.set_defaults(func=subcommand_required(lang))

    p = sub.add_parser("scan-generate", help="write SCAN (tasks.txt and all splits) from its grammar")
    p.add_argument("--out", required=True, type=out_dir, help="destination folder (official layout)")
    p.add_argument(
        "--order",
        default="official",
        choices=["official", "canonical", "shuffled"],
        help="line order: byte-identical to the release (default), grammar order, or shuffled",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=0,
        help="seed of the simple split (--order canonical/shuffled) and of the shuffle",
    )
    p.add_argument("--overwrite", action="store_true", help="replace files in --out that differ")
    p.set_defaults(func=_scan_generate)

    p = sub.add_parser("pretrain", help="train an RNN/GRU/LSTM seq2seq on a SCAN split from a YAML config")
    add_config_args(p, "YAML config (see configs/language/)")
    p.add_argument(
        "--out", default=None, type=out_dir, help="run folder (default: a fresh one under the config's out)"
    )
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out run folder (once the new run is complete)",
    )
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("eval", help="exact-match accuracy of a checkpoint, base or symmetrized")
    p.add_argument("checkpoint", help="run folder or model.pt")
    p.add_argument("--split", default=None, help="SCAN split (default: the checkpoint's)")
    p.add_argument("--part", default="test", choices=["train", "test"])
    p.add_argument("--root", default=None, help="folder of official SCAN files (default: generated)")
    p.add_argument(
        "--methods",
        default=",".join(EVAL_METHODS),
        help=f"comma list of {', '.join(EVAL_METHODS)} (aliases such as λ accepted)",
    )
    p.add_argument(
        "--symmetry",
        default=None,
        help="jump_run, left_right, walk_look, verbs, products a+b, or clause by clause: left_right@clauses",
    )
    p.add_argument("--proxy", default="nll", help="equizero proxy: nll, entropy, max_prob")
    p.add_argument(
        "--level",
        default="sequence",
        choices=["sequence", "step"],
        help="equizero: choose the element once per sequence (default) or at every step",
    )
    p.add_argument(
        "--finetune-epochs",
        type=nonneg_int,
        default=0,
        help="first finetune all weights through each method's symmetrizer on the split's train set",
    )
    p.add_argument("--finetune-lr", type=positive_float, default=1e-3, help="finetuning learning rate")
    p.add_argument(
        "--limit",
        type=nonneg_int,
        default=0,
        help="use only the first N eval (and finetune) examples (0: all)",
    )
    p.set_defaults(func=_eval)

    for name, helptext in (
        ("gpt2-generate", "generate continuations of fairness prompts (EquiGPT2...)"),
        ("gpt2-fairness", "swap-consistency and classifier scores, base vs symmetrized"),
    ):
        p = sub.add_parser(name, help=helptext)
        add_config_args(p, "YAML config (see configs/language/gpt2_*.yaml)")
        if name == "gpt2-generate":
            p.add_argument(
                "--overwrite", action="store_true", help="replace an existing generations.jsonl under `out`"
            )
        p.set_defaults(func=_gpt2_generate if name == "gpt2-generate" else _gpt2_fairness)

    p = bench.add_parser("language-scan", help="SCAN exact match: base vs equitune vs equizero vs λ-equitune")
    p.add_argument("--cells", default="lstm")
    p.add_argument("--splits", default="add_jump,around_right")
    p.add_argument("--seeds", default="0,1,2", type=int_list(0))
    p.add_argument("--epochs", type=nonneg_int, default=4)
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--embedding", type=positive_int, default=64)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=3e-3)
    p.add_argument("--dropout", type=bounded_float(0.0, 1.0, hi_open=True), default=0.0)
    p.add_argument(
        "--finetune-epochs",
        type=nonneg_int,
        default=0,
        help="also finetune ALL weights through each symmetrizer (base, equitune, equizero, λ) for N epochs",
    )
    p.add_argument("--finetune-lr", type=positive_float, default=1e-3, help="finetuning learning rate")
    p.add_argument(
        "--finetune-examples", type=nonneg_int, default=0, help="finetune on N random train examples (0: all)"
    )
    p.add_argument(
        "--finetune-symmetry", default=None, help="group for the finetuned rows (default: the split's)"
    )
    p.add_argument(
        "--finetune-methods",
        default="",
        help=f"comma list of finetuned methods to run ({','.join(EVAL_METHODS)}; default: all)",
    )
    p.add_argument(
        "--jobs", type=bounded_int(1, 256), default=1, help="parallel processes over (cell, split, seed)"
    )
    p.add_argument("--full", action="store_true", help="also per-step equizero and the entropy proxy")
    p.add_argument(
        "--lambda-examples",
        type=nonneg_int,
        default=0,
        help="also finetune λ-equitune's λ-net (backbone frozen) on N train examples",
    )
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot rows")
    p.add_argument(
        "--runs", default=None, type=out_dir, help="keep/reuse pretrained checkpoints in this folder"
    )
    p.add_argument("--out", default=None, type=out_dir, help="save the table as CSV into this folder")
    p.set_defaults(func=_bench_scan)

    p = bench.add_parser(
        "language-gpt2", help="EquiGPT2 generation tokens/s vs base GPT-2 and a re-encode loop"
    )
    p.add_argument("--layers", type=bounded_int(1, 1000), default=6)
    p.add_argument("--width", type=bounded_int(1, 100_000), default=256)
    p.add_argument("--heads", type=bounded_int(1, 1000), default=4)
    p.add_argument("--batch", type=bounded_int(1, 100_000), default=1)
    p.add_argument("--tokens", type=bounded_int(1, 100_000), default=32)
    p.add_argument("--variant", default="R-EquiGPT2", choices=("EquiGPT2", "R-EquiGPT2"))
    p.add_argument("--out", default=None, type=out_dir, help="save the table as CSV into this folder")
    p.set_defaults(func=_bench_gpt2)


def _table(console: Any, title: str, rows: list[dict[str, Any]], names: int = 1) -> None:
    cols = list(rows[0])
    console.print(make_table(title, cols, [[r[c] for c in cols] for r in rows], names=names))


def _scan_generate(args: argparse.Namespace, console: Any) -> int:
    from equirl.language.scan import generate_scan

    counts = generate_scan(args.out, args.order, args.seed, overwrite=args.overwrite)
    console.print(
        f"wrote {len(counts)} SCAN files ({sum(counts.values())} lines, order={args.order}) to {args.out}"
    )
    return 0


def _pretrain(args: argparse.Namespace, console: Any) -> int:
    from equirl.config import load_config
    from equirl.language.config import PretrainConfig
    from equirl.language.train import pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    set_torch_threads(1)
    with progress_bar(console, f"pretraining {cfg.model.cell} on {cfg.data.split}") as progress:
        run_dir, metrics = pretrain(
            cfg, args.out, tensorboard=not args.no_tensorboard, progress=progress, overwrite=args.overwrite
        )
    console.print(
        f"{cfg.model.cell} on {metrics['split']}: test exact match {100 * metrics['test_exact_match']:.2f}% "
        f"(train subset {100 * metrics['train_exact_match_subset']:.2f}%) in {metrics['seconds']} s -> {run_dir}"
    )
    return 0


def _eval(args: argparse.Namespace, console: Any) -> int:
    from equirl.errors import ConfigError
    from equirl.language.train import evaluate_checkpoint

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError(
            f"--methods {args.methods!r} names no method: give a comma list of {', '.join(EVAL_METHODS)}"
        )
    what = "finetuning and evaluating" if args.finetune_epochs else "evaluating"
    with progress_bar(console, f"{what} {args.checkpoint}") as progress:
        rows = evaluate_checkpoint(
            args.checkpoint,
            methods,
            split=args.split,
            part=args.part,
            root=args.root,
            symmetry=args.symmetry,
            proxy=args.proxy,
            level=args.level,
            finetune_epochs=args.finetune_epochs,
            finetune_lr=args.finetune_lr,
            limit=args.limit,
            progress=progress,
        )
    _table(console, f"SCAN {rows[0]['split']} ({args.part})", rows, names=3)
    return 0


def _gpt2_config(args: argparse.Namespace) -> Any:
    from equirl.config import load_config
    from equirl.language.config import Gpt2RunConfig

    return load_config(Gpt2RunConfig, args.config, args.overrides)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """``transformers``' own log lines (``[transformers] ...``, load reports) and progress bars
    (``Loading weights``) off while a command works: the command prints its own progress and one-line
    errors. Enter it after the up-front checks (it imports transformers); the settings are restored
    after. The CLI's choice only: the library leaves transformers' logging alone."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _gpt2_generate(args: argparse.Namespace, console: Any) -> int:
    from equirl.language.gpt2_run import (
        check_hub,
        generate_continuations,
        generations_path,
        save_generations,
        setup_gpt2,
    )

    cfg = _gpt2_config(args)
    target = generations_path(cfg, args.overwrite)  # before loading any model
    check_hub(cfg)  # fails in a second without network, before transformers is imported
    with quiet_transformers():
        run = setup_gpt2(cfg)
        with progress_bar(console, f"generating ({cfg.method})") as progress:
            rows = generate_continuations(run, progress)
    for r in rows[:10]:
        console.print(f"[bold]{escape(r['prompt'])}[/]{escape(r['continuation'])}", highlight=False)
    if target is not None:
        console.print(f"{len(rows)} generations -> {save_generations(rows, target)}")
    return 0


def _gpt2_fairness(args: argparse.Namespace, console: Any) -> int:
    from equirl.language.gpt2_run import check_hub, fairness_report, setup_gpt2

    cfg = _gpt2_config(args)
    check_hub(cfg, scorer=True)  # the scorer too: before any model work, not after it
    with quiet_transformers():
        run = setup_gpt2(cfg, scorer=True)
        with progress_bar(console, "swap-consistency and scores") as progress:
            rep = fairness_report(run, progress=progress)
    _table(console, "swap-consistency |log p(c|x) - log p(g.c|g.x)|", rep.swap_rows, names=2)
    if rep.scores is not None:
        _table(
            console,
            f"mean {run.cfg.scorer} score by subject ({run.cfg.method})",
            [{"subject": k, "score": f"{v:.4f}"} for k, v in rep.scores.items()],
        )
    return 0


def _bench_scan(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench import language
    from equirl.errors import ConfigError

    if args.no_zero_shot and not args.finetune_epochs and not args.lambda_examples:
        raise ConfigError(
            "nothing to measure: drop --no-zero-shot or add --finetune-epochs/--lambda-examples"
        )
    per_seed: list[dict[str, Any]] = []
    rows = language.bench_scan(
        args.cells.split(","),
        args.splits.split(","),
        [int(s) for s in args.seeds.split(",")],
        args.epochs,
        args.hidden,
        args.embedding,
        args.batch_size,
        args.lr,
        args.dropout,
        finetune_epochs=args.finetune_epochs,
        run_root=args.runs,
        full=args.full,
        lambda_examples=args.lambda_examples,
        zero_shot=not args.no_zero_shot,
        finetune_lr=args.finetune_lr,
        finetune_examples=args.finetune_examples,
        finetune_symmetry=args.finetune_symmetry,
        jobs=args.jobs,
        per_seed=per_seed,
        finetune_methods=[m.strip() for m in args.finetune_methods.split(",") if m.strip()],
        console=console,
    )
    console.print(language.scan_table(rows))
    if args.out:
        table, seeds = language.save_scan_csvs(args.out, rows, per_seed, finetuned=bool(args.finetune_epochs))
        console.print(f"-> {table} (and per seed: {seeds.name})")
    return 0


def _bench_gpt2(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench.language import bench_gpt2, gpt2_table

    rows = bench_gpt2(
        args.layers,
        args.width,
        args.heads,
        args.batch,
        new_tokens=args.tokens,
        variant=args.variant,
        console=console,
        out=args.out,
    )
    console.print(gpt2_table(rows, args.layers, args.width))
    return 0
