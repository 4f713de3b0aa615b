"""``equirl vision pretrain|finetune|eval|clip`` and ``equirl bench vision``."""

from __future__ import annotations

import argparse
from typing import Any

from equirl.cli.args import (
    add_config_args,
    bounded_int,
    existing_dir,
    method_arg,
    nonneg_int,
    out_dir,
    positive_int,
    subcommand_required,
)
from equirl.cli.core import set_torch_threads
from equirl.cli.output import make_table, progress_bar
from equirl.registry import AUTO, canonical_method, get_method
from equirl.vision.config import CLIP_METHODS, EVAL_METHODS


def register(commands: Any, bench: Any) -> None:
    p = commands.add_parser(
        "vision", help="invariant image classifiers: pretrain, finetune, evaluate (CNN, CLIP)"
    )
    sub = p.add_subparsers(dest="vision_command", metavar="SUBCOMMAND")
    p.set_defaults(func=subcommand_required(p))

    pre = sub.add_parser("pretrain", help="train the small upright-only CNN (the offline 'pretrained CNN')")
    add_config_args(pre, "YAML config (see configs/vision/pretrain_digits.yaml)")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing `out` checkpoint")
    pre.set_defaults(func=_pretrain)

    ft = sub.add_parser("finetune", help="symmetrize a pretrained CNN and finetune its backbone and/or λ")
    add_config_args(ft, "YAML config (see configs/vision/finetune_lambda.yaml)")
    ft.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing `out` checkpoint (even the input `checkpoint`)",
    )
    ft.set_defaults(func=_finetune)

    ev = sub.add_parser("eval", help="accuracy per transformation and on a randomly transformed test set")
    ev.add_argument("checkpoint", help="a checkpoint from `vision pretrain` or `vision finetune`")
    ev.add_argument(
        "--method",
        default=None,
        type=method_arg,
        choices=EVAL_METHODS,
        help=f"{', '.join(EVAL_METHODS)} (default: as saved); auto fits and scores the candidates on "
        "--n-train training images (randomly transformed held-out part) and evaluates the pick",
    )
    ev.add_argument("--group", default=None, help="rot90, rot180, mirror or rot90+mirror (default: as saved)")
    ev.add_argument("--proxy", default="entropy", help="equizero proxy: entropy or max_prob")
    ev.add_argument("--config", default=None, help="YAML with a `data:` section (default: the digits split)")
    ev.add_argument("--seed", type=nonneg_int, default=0, help="seed of the randomly transformed test set")
    ev.add_argument(
        "--n-train",
        type=bounded_int(5, 10_000_000),
        default=1000,
        help="--method auto: labelled training-split images to fit and validate the candidates on",
    )
    ev.add_argument(
        "--out",
        default=None,
        type=out_dir,
        help="--method auto: folder for the choice (auto_choice.json / auto_choice.md)",
    )
    ev.add_argument(
        "--overwrite", action="store_true", help="replace an earlier choice in --out (auto_choice.json / .md)"
    )
    ev.set_defaults(func=_eval)

    cl = sub.add_parser(
        "clip", help="CLIP zero-shot on an image folder under rotations/mirrors (needs the model)"
    )
    cl.add_argument(
        "folder", type=existing_dir, help="root/<class>/<image>; the class names are the sub-folder names"
    )
    cl.add_argument("--model", default="openai/clip-vit-base-patch32", help="hub id or local folder")
    cl.add_argument("--group", default="rot90", help="rot90, mirror or rot90+mirror")
    cl.add_argument("--methods", default=",".join(CLIP_METHODS), help="comma-separated methods")
    cl.add_argument("--proxy", default="max_prob", help="equizero proxy: max_prob or entropy")
    cl.add_argument("--batch-size", type=bounded_int(1, 100_000), default=32)
    cl.set_defaults(func=_clip)

    b = bench.add_parser(
        "vision", help="plain vs equitune vs equizero vs λ-equitune vs finetuned (digits CNN)"
    )
    b.add_argument(
        "--seeds", type=bounded_int(1, 1000), default=3, help="number of seeds (pretraining + λ fitting)"
    )
    b.add_argument(
        "--n-lambda",
        type=bounded_int(1, 1297),
        default=1000,
        help="labelled images for λ / finetuning (<= 1297)",
    )
    b.add_argument("--lambda-steps", type=nonneg_int, default=300, help="λ training steps")
    b.add_argument(
        "--multi-k", type=positive_int, default=2, help="images per example in the multi-image comparison"
    )
    b.add_argument("--skip-multi", action="store_true", help="skip the multi-image comparison")
    b.add_argument(
        "--never-hurt",
        action="store_true",
        help="instead: methods that never hurt (λ / canonicalization with validation keeping, features vs "
        "image, method auto)",
    )
    b.add_argument("--out", default=None, type=out_dir, help="save the tables as CSV in this folder")
    b.set_defaults(func=_bench)


def _pretrain(args: argparse.Namespace, console: Any) -> int:
    from equirl.config import load_config
    from equirl.vision.config import PretrainConfig
    from equirl.vision.train import pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    set_torch_threads(cfg.threads)
    with progress_bar(console, "pretraining the CNN") as progress:
        _, m = pretrain(cfg, progress=progress, overwrite=args.overwrite)
    console.print(
        f"pretrained in {m['seconds']:.1f}s ({m['steps']} steps on {m['n_train']} images) -> {m['path']}"
    )
    console.print(_acc_line("test accuracy", m, "test_"))
    return 0


def _finetune(args: argparse.Namespace, console: Any) -> int:
    from equirl.config import load_config
    from equirl.vision.config import FinetuneConfig
    from equirl.vision.train import finetune

    cfg = load_config(FinetuneConfig, args.config, args.overrides)
    set_torch_threads(cfg.threads)
    with progress_bar(console, f"finetuning {cfg.method}") as progress:
        _, m = finetune(cfg, progress=progress, overwrite=args.overwrite)
    if cfg.method == AUTO:
        console.print(m["auto_reason"], soft_wrap=True, highlight=False)
        saved = (
            f" -> {m['path']} (choice: {m['auto_choice_json']}, {m['auto_choice_md']})" if "path" in m else ""
        )
        console.print(
            f"{m['method']} on {cfg.group}: selected on {m['n_train']} images in {m['seconds']:.1f}s{saved}"
        )
        console.print(_acc_line("before (base)", m, "before_"))
        console.print(_acc_line(f"after ({m['method']})", m, "after_"))
        return 0
    light = "canonicalizer" if get_method(cfg.method).learned_scorer else "λ-net"
    what = "+".join(k for k, on in (("backbone", cfg.train_backbone), (light, cfg.train_lambda)) if on)
    console.print(
        f"{cfg.method} on {cfg.group}: finetuned {what} on {m['n_train']} images in {m['seconds']:.1f}s"
        + (f" -> {m['path']}" if "path" in m else "")
    )
    console.print(_acc_line("before", m, "before_"))
    console.print(_acc_line("after ", m, "after_"))
    return 0


def _eval(args: argparse.Namespace, console: Any) -> int:
    from equirl.errors import ConfigError
    from equirl.vision.config import load_data_config
    from equirl.vision.select import ClassifierChoice
    from equirl.vision.train import eval_choice_path, evaluate_checkpoint

    if args.out and args.method != AUTO:
        raise ConfigError("--out saves the choice of --method auto; add --method auto or drop --out")
    if args.overwrite and not args.out:
        raise ConfigError("--overwrite replaces the choice saved in --out; add --out DIR or drop --overwrite")
    data_cfg = load_data_config(args.config)
    choices: list[ClassifierChoice] = []
    with progress_bar(console, f"evaluating {args.checkpoint}") as progress:
        group, n, res = evaluate_checkpoint(
            args.checkpoint,
            args.method,
            args.group,
            args.proxy,
            data_cfg,
            args.seed,
            progress,
            n_train=args.n_train,
            on_choice=choices.append,
            choice_out=args.out,
            overwrite=args.overwrite,
        )
    title = f"{args.checkpoint} ({n} test images, group {group})"
    if choices:
        choice = choices[0]
        console.print(choice.reason, soft_wrap=True, highlight=False)
        title = f"{args.checkpoint}, auto → {choice.method} ({n} test images, group {group})"
        if args.out:
            json_path = eval_choice_path(args.out)
            console.print(
                f"choice saved to {json_path} and {json_path.with_suffix('.md')}",
                soft_wrap=True,
                highlight=False,
            )
    console.print(
        make_table(
            title, list(res), [[f"{100 * v:.1f}" for v in res.values()]], names=0, justify_values="right"
        )
    )
    return 0


def _clip(args: argparse.Namespace, console: Any) -> int:
    from equirl.utils.hf_local import check_model_folder
    from equirl.utils.hub import require_hub_model

    # without network, fail in a second: before importing torch and transformers; a local path is
    # checked as a CLIP folder (missing, a file, no config.json, another model type, no weights)
    if check_model_folder(args.model, "CLIP", ("clip",)) is None:
        require_hub_model(args.model, "CLIP")
    from equirl.cli.language import quiet_transformers
    from equirl.vision.clip import clip_zero_shot

    methods = [canonical_method(m.strip()) for m in args.methods.split(",") if m.strip()]
    with quiet_transformers(), progress_bar(console, f"CLIP zero-shot {args.model}") as progress:
        n, res = clip_zero_shot(
            args.folder, args.model, args.group, methods, args.proxy, args.batch_size, progress
        )
    cols = ["method", *next(iter(res.values()))]
    rows = [[m, *(f"{100 * v:.1f}" for v in r.values())] for m, r in res.items()]
    title = f"CLIP zero-shot {args.model} on {args.folder} ({n} images, group {args.group})"
    console.print(make_table(title, cols, rows, justify_values="right"))
    return 0


def _bench(args: argparse.Namespace, console: Any) -> int:
    import time

    from equirl.bench.vision import run_never_hurt_bench, run_vision_bench

    t0 = time.perf_counter()
    if args.never_hurt:
        console.print(
            run_never_hurt_bench(args.seeds, args.n_lambda, args.lambda_steps, out=args.out, console=console)
        )
        console.print(f"total {time.perf_counter() - t0:.0f}s (1 CPU thread)")
        return 0
    for table in run_vision_bench(
        args.seeds,
        args.n_lambda,
        args.lambda_steps,
        multi_k=args.multi_k,
        skip_multi=args.skip_multi,
        out=args.out,
        console=console,
    ):
        console.print(table)
    console.print(f"total {time.perf_counter() - t0:.0f}s (1 CPU thread)")
    if args.out:
        console.print(f"saved CSVs under {args.out}")
    return 0


def _acc_line(title: str, m: dict[str, Any], prefix: str) -> str:
    keys = [k for k in m if k.startswith(prefix)]
    return f"{title}: " + "  ".join(f"{k[len(prefix) :]}={100 * float(m[k]):.1f}%" for k in keys)
