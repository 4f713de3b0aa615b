"""``equirl language ...`` (SCAN, seq2seq, EquiGPT2) and ``equirl bench language-scan / language-gpt2``."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from equirl.cli.args import add_config_args
from equirl.registry import BASE, EQUITUNE, EQUIZERO, canonical_method, method_names

#: the methods ``language eval`` runs on SCAN (the scorer-driven ones have their own benchmark)
SCAN_EVAL_METHODS = method_names(learned_scorer=False)


def register(commands: Any, bench: Any) -> None:
    lang = commands.add_parser("language", help="SCAN compositional generalization and GPT-2 fairness")
    sub = lang.add_subparsers(dest="language_command", metavar="SUBCOMMAND")
    lang.set_defaults(func=lambda args, console: (lang.print_help(), 2)[1])

    p = sub.add_parser("scan-generate", help="write SCAN (tasks.txt and all splits) from its grammar")
    p.add_argument("--out", required=True, help="destination folder (official layout)")
    p.add_argument(
        "--order",
        default="official",
        choices=["official", "canonical", "shuffled"],
        help="line order: byte-identical to the release (default), grammar order, or shuffled",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --order shuffled")
    p.set_defaults(func=_scan_generate)

    p = sub.add_parser("pretrain", help="train an RNN/GRU/LSTM seq2seq on a SCAN split from a YAML config")
    add_config_args(p, "YAML config (see configs/language/)")
    p.add_argument("--out", default=None, help="run folder (default: a fresh one under the config's out)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("eval", help="exact-match accuracy of a checkpoint, plain or symmetrized")
    p.add_argument("checkpoint", help="run folder or model.pt")
    p.add_argument("--split", default=None, help="SCAN split (default: the checkpoint's)")
    p.add_argument("--part", default="test", choices=["train", "test"])
    p.add_argument("--root", default=None, help="folder of official SCAN files (default: generated)")
    p.add_argument(
        "--methods",
        default=",".join(SCAN_EVAL_METHODS),
        help=f"comma list of {', '.join(SCAN_EVAL_METHODS)} (aliases such as plain or λ accepted)",
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
        type=int,
        default=0,
        help="first finetune all weights through each method's symmetrizer on the split's train set",
    )
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="finetuning learning rate")
    p.add_argument("--limit", type=int, default=0, help="use only the first N eval (and finetune) examples")
    p.set_defaults(func=_eval)

    for name, helptext in (
        ("gpt2-generate", "generate continuations of fairness prompts (EquiGPT2...)"),
        ("gpt2-fairness", "swap-consistency and classifier scores, plain vs symmetrized"),
    ):
        p = sub.add_parser(name, help=helptext)
        add_config_args(p, "YAML config (see configs/language/gpt2_*.yaml)")
        p.set_defaults(func=_gpt2_generate if name == "gpt2-generate" else _gpt2_fairness)

    p = bench.add_parser(
        "language-scan", help="SCAN exact match: plain vs equitune vs equizero vs λ-equitune"
    )
    p.add_argument("--cells", default="lstm")
    p.add_argument("--splits", default="add_jump,around_right")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="also finetune ALL weights through each symmetrizer (plain, equitune, equizero, λ) for N epochs",
    )
    p.add_argument("--finetune-lr", type=float, default=1e-3, help="finetuning learning rate")
    p.add_argument(
        "--finetune-examples", type=int, default=0, help="finetune on N random train examples (0: all)"
    )
    p.add_argument(
        "--finetune-symmetry", default=None, help="group for the finetuned rows (default: the split's)"
    )
    p.add_argument(
        "--finetune-methods",
        default="",
        help=f"comma list of finetuned methods to run ({','.join(SCAN_EVAL_METHODS)}; default: all)",
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel processes over (cell, split, seed)")
    p.add_argument("--full", action="store_true", help="also per-step equizero and the entropy proxy")
    p.add_argument(
        "--lambda-examples",
        type=int,
        default=0,
        help="also finetune λ-equitune's λ-net (backbone frozen) on N train examples",
    )
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot rows")
    p.add_argument("--runs", default=None, help="keep/reuse pretrained checkpoints in this folder")
    p.add_argument("--out", default=None, help="save the table as CSV into this folder")
    p.set_defaults(func=_bench_scan)

    p = bench.add_parser(
        "language-gpt2", help="EquiGPT2 generation tokens/s vs plain GPT-2 and a re-encode loop"
    )
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--variant", default="R-EquiGPT2")
    p.add_argument("--out", default=None, help="save the table as CSV into this folder")
    p.set_defaults(func=_bench_gpt2)


def _table(console: Any, title: str, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title=title)
    for k in rows[0]:
        t.add_column(str(k))
    for r in rows:
        t.add_row(*(str(v) for v in r.values()))
    console.print(t)


def _scan_generate(args: argparse.Namespace, console: Any) -> int:
    from equirl.language.scan import generate_scan

    counts = generate_scan(args.out, args.order, args.seed)
    console.print(
        f"wrote {len(counts)} SCAN files ({sum(counts.values())} lines, order={args.order}) to {args.out}"
    )
    return 0


def _pretrain(args: argparse.Namespace, console: Any) -> int:
    import torch

    from equirl.config import load_config
    from equirl.language.train import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    torch.set_num_threads(1)
    run_dir, metrics = pretrain(cfg, args.out, tensorboard=not args.no_tensorboard)
    console.print(
        f"{cfg.model.cell} on {metrics['split']}: test exact match {100 * metrics['test_exact_match']:.2f}% "
        f"(train subset {100 * metrics['train_exact_match_subset']:.2f}%) in {metrics['seconds']} s -> {run_dir}"
    )
    return 0


def _eval(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench.language import SPLIT_SYMMETRY
    from equirl.errors import ConfigError
    from equirl.language.equiscan import exact_match
    from equirl.language.scan import canonical_split, scan_examples
    from equirl.language.seq2seq import greedy_decode, scan_vocabs
    from equirl.language.train import evaluate, finetune, load_checkpoint, train_model

    model, cfg = load_checkpoint(args.checkpoint)
    split = canonical_split(args.split or cfg.data.split)
    symmetry = args.symmetry or SPLIT_SYMMETRY.get(split, "jump_run")
    examples = scan_examples(split, args.part, args.root)
    if args.limit:
        examples = examples[: args.limit]
    rows = []
    for method in [canonical_method(m) for m in args.methods.split(",") if m.strip()]:
        if method not in SCAN_EVAL_METHODS:
            raise ConfigError(f"unknown method {method!r}: use {', '.join(SCAN_EVAL_METHODS)}")
        kw: dict[str, Any] = {"proxy": args.proxy, "level": args.level} if method == EQUIZERO else {}
        if args.finetune_epochs:
            m2, _ = load_checkpoint(args.checkpoint)
            train = scan_examples(split, "train", args.root)
            train = train[: args.limit] if args.limit else train
            sv, tv = scan_vocabs()
            if method == BASE:
                train_model(m2, train, args.finetune_epochs, lr=args.finetune_lr)
                acc = exact_match(functools.partial(greedy_decode, m2), examples, sv, tv)
            else:
                eq = finetune(m2, train, method, symmetry, args.finetune_epochs, args.finetune_lr, **kw)
                acc = exact_match(eq.greedy, examples, sv, tv)
        else:
            acc = evaluate(model, examples, method, symmetry, **kw)
        rows.append(
            {
                "split": split,
                "symmetry": "-" if method == BASE else symmetry,
                "method": method,
                "finetuned": bool(args.finetune_epochs),
                "exact_match_%": round(100 * acc, 2),
                "n": len(examples),
            }
        )
    _table(console, f"SCAN {split} ({args.part})", rows)
    return 0


def _gpt2_setup(args: argparse.Namespace) -> Any:
    from equirl.config import load_config
    from equirl.language.gpt2 import load_gpt2, load_gpt2_tokenizer, tiny_gpt2, variant_symmetry
    from equirl.language.gpt2_config import Gpt2RunConfig
    from equirl.language.tokenizer import default_tokenizer

    cfg = load_config(Gpt2RunConfig, args.config, args.overrides)
    tok = default_tokenizer() if cfg.tokenizer == "default" else load_gpt2_tokenizer(cfg.tokenizer)
    model = tiny_gpt2(len(tok), seed=cfg.seed) if cfg.model == "tiny" else load_gpt2(cfg.model)
    hf: Any = model
    vocab = int(hf.config.vocab_size)
    sym = variant_symmetry(tok, cfg.variant, cfg.attributes, vocab_size=vocab)
    return cfg, tok, model, sym


def _prompts(cfg: Any) -> list[str]:
    from equirl.language.gpt2 import _data

    if cfg.prompts:
        return list(cfg.prompts)
    lines = _data("prompts.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [ln.split("\t")[-1] for ln in lines if ln.strip()]


def _generate_all(cfg: Any, tok: Any, model: Any, sym: Any) -> list[dict[str, str]]:
    import torch

    from equirl.language.gpt2 import EquiGPT2, generate_plain

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    eq = None
    if cfg.method != BASE:
        kw = {"proxy": cfg.proxy} if cfg.method == EQUIZERO else {}
        eq = EquiGPT2(model, sym, cfg.method, **kw).eval()
    out: list[dict[str, str]] = []
    for prompt in _prompts(cfg):
        ids = torch.tensor([tok.encode(prompt)] * cfg.samples_per_prompt)
        kw2 = {
            "do_sample": cfg.do_sample,
            "top_k": cfg.top_k,
            "temperature": cfg.temperature,
            "generator": gen,
        }
        cont = (
            eq.generate(ids, cfg.max_new_tokens, **kw2)
            if eq is not None
            else generate_plain(model, ids, cfg.max_new_tokens, **kw2)
        )
        out.extend({"prompt": prompt, "continuation": tok.decode(c)} for c in cont.tolist())
    return out


def _gpt2_generate(args: argparse.Namespace, console: Any) -> int:
    import json

    from equirl.utils.io import atomic_write_text

    cfg, tok, model, sym = _gpt2_setup(args)
    rows = _generate_all(cfg, tok, model, sym)
    for r in rows[:10]:
        console.print(f"[bold]{r['prompt']}[/]{r['continuation']}", highlight=False)
    if cfg.out:
        atomic_write_text(f"{cfg.out}/generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        console.print(f"{len(rows)} generations -> {cfg.out}/generations.jsonl")
    return 0


def _gpt2_fairness(args: argparse.Namespace, console: Any) -> int:
    import torch

    from equirl.language.fairness import LexiconScorer, hf_text_scorer, score_by_group, swap_consistency
    from equirl.language.gpt2 import EquiGPT2

    cfg, tok, model, sym = _gpt2_setup(args)
    prompts = _prompts(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []

    def plain_lm(ids: Any) -> Any:
        return model(input_ids=ids).logits

    eq = EquiGPT2(model, sym, EQUITUNE).eval()
    for prompt in prompts[:10]:
        ids = torch.tensor([tok.encode(prompt)])
        cont = torch.randint(0, len(tok), (1, 8), generator=gen)
        for name, lm in ((BASE, plain_lm), (EQUITUNE, eq)):
            m = swap_consistency(lm, sym, ids, cont)
            rows.append(
                {"prompt": prompt, "model": name, "max_abs_logprob_gap": f"{m['max_abs_logprob_gap']:.2e}"}
            )
    _table(console, "swap-consistency |log p(c|x) - log p(g.c|g.x)|", rows)
    if cfg.scorer != "none":
        scorer = LexiconScorer() if cfg.scorer == "lexicon" else hf_text_scorer(cfg.scorer)
        words = {tok.decode([i]).strip() for pairs in sym.pairs.values() for p in pairs for i in p}
        texts: dict[str, list[str]] = {}
        for r in _generate_all(cfg, tok, model, sym):
            # the subject: the prompt's equality words (e.g. "Black", "gay"), else "other"
            subject = " ".join(w for w in r["prompt"].split() if w in words) or "other"
            texts.setdefault(subject, []).append(r["continuation"])
        res = score_by_group(texts, scorer)
        _table(
            console,
            f"mean {cfg.scorer} score by subject ({cfg.method})",
            [{"subject": k, "score": f"{v:.4f}"} for k, v in res["mean_score"].items()],
        )
    return 0


def _bench_scan(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench import language
    from equirl.bench.report import write_csv
    from equirl.errors import ConfigError

    if args.no_zero_shot and not args.finetune_epochs and not args.lambda_examples:
        raise ConfigError(
            "nothing to measure: drop --no-zero-shot or add --finetune-epochs/--lambda-examples"
        )
    if min(args.finetune_epochs, args.finetune_examples, args.lambda_examples) < 0 or args.jobs < 1:
        raise ConfigError("--finetune-epochs/--finetune-examples/--lambda-examples must be >= 0, --jobs >= 1")
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
        name = "scan_exact_match_finetuned.csv" if args.finetune_epochs else "scan_exact_match.csv"
        write_csv(f"{args.out}/{name}", rows)
        write_csv(f"{args.out}/{name[:-4]}_per_seed.csv", per_seed)
        console.print(f"-> {args.out}/{name} (and per seed: {name[:-4]}_per_seed.csv)")
    return 0


def _bench_gpt2(args: argparse.Namespace, console: Any) -> int:
    from equirl.bench.language import bench_gpt2, gpt2_table
    from equirl.bench.report import write_csv

    rows = bench_gpt2(
        args.layers,
        args.width,
        args.heads,
        args.batch,
        new_tokens=args.tokens,
        variant=args.variant,
        console=console,
    )
    console.print(gpt2_table(rows, args.layers, args.width))
    if args.out:
        write_csv(f"{args.out}/gpt2_tokens_per_s.csv", rows)
    return 0
