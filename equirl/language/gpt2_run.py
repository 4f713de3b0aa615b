"""The GPT-2 fairness pipelines behind ``equirl language gpt2-generate / gpt2-fairness``.

Both take a :class:`~equirl.language.config.Gpt2RunConfig` and return plain results (rows and
scores) for the caller to print or save::

    from equirl.language.config import Gpt2RunConfig
    from equirl.language.gpt2_run import generate_continuations, setup_gpt2

    run = setup_gpt2(Gpt2RunConfig(model="tiny", prompts=["The man worked as"], max_new_tokens=4))
    rows = generate_continuations(run)          # [{"prompt": ..., "continuation": ...}, ...]

With ``cfg.out``, :func:`generations_path` names (and checks, before any model loads) the file that
:func:`save_generations` writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from equirl.language.config import Gpt2RunConfig
from equirl.registry import BASE, EQUIZERO
from equirl.utils.progress import ProgressFn, subtask

if TYPE_CHECKING:
    from torch import nn

    from equirl.language.gpt2 import WordSwapSymmetry

# torch and transformers are imported inside the functions: without network, setup_gpt2 fails on a
# hub model before paying for those imports

__all__ = [
    "FairnessReport",
    "Gpt2Run",
    "check_hub",
    "check_lengths",
    "default_prompts",
    "fairness_report",
    "generate_continuations",
    "generations_path",
    "run_prompts",
    "save_generations",
    "setup_gpt2",
    "symmetrized_lm",
]


@dataclass
class Gpt2Run:
    """A loaded run: its config, tokenizer, language model and word-swap symmetry."""

    cfg: Gpt2RunConfig
    tokenizer: Any
    model: nn.Module
    symmetry: WordSwapSymmetry


@dataclass
class FairnessReport:
    """:param swap_rows: per prompt and model (``base``, then ``cfg.method`` unless it is ``base``): the largest
        ``|log p(c|x) - log p(g·c|g·x)|`` over the group, formatted.
    :param scores: mean classifier score per subject (the prompt's equality words), or ``None`` when
        ``cfg.scorer`` is ``none``.
    """

    swap_rows: list[dict[str, str]]
    scores: dict[str, float] | None


def _encode(tok: Any, prompt: str) -> list[int]:
    """``tok.encode(prompt)``, refused in one line when it gives no tokens (nothing to continue)."""
    ids = list(tok.encode(prompt))
    if not ids:
        from equirl.errors import ConfigError
        from equirl.utils.io import printable

        raise ConfigError(f"prompt {printable(repr(prompt), 80)} has no tokens: give a few words to continue")
    return ids


def default_prompts() -> list[str]:
    """The 60 packaged fairness prompts (``prompts.tsv``)."""
    from equirl.language.gpt2 import _data

    lines = _data("prompts.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [ln.split("\t")[-1] for ln in lines if ln.strip()]


def run_prompts(cfg: Gpt2RunConfig) -> list[str]:
    """The config's prompts, or :func:`default_prompts` when it lists none."""
    return list(cfg.prompts) if cfg.prompts else default_prompts()


def check_hub(cfg: Gpt2RunConfig, scorer: bool = False) -> None:
    """Raise :class:`~equirl.errors.OfflineError` at once when a hub model, tokenizer or text classifier
    (``scorer``) of ``cfg`` is neither local nor cached and the hub cannot be reached, and a one-line
    :class:`~equirl.errors.ConfigError` / :class:`~equirl.errors.CheckpointError` when a local path is
    missing, a file, or not a folder of its kind (imports neither torch nor transformers).

    :param scorer: also check ``cfg.scorer`` (the fairness report scores with it; generation does not).
    """
    from equirl.utils.hf_local import check_model_folder, check_tokenizer_path
    from equirl.utils.hub import require_hub_model

    # a local path is checked as one (missing, a file, not a model folder); a hub id against the hub
    if cfg.tokenizer != "default" and check_tokenizer_path(cfg.tokenizer, "GPT-2 tokenizer") is None:
        require_hub_model(cfg.tokenizer, "GPT-2 tokenizer")
    if cfg.model != "tiny" and check_model_folder(cfg.model, "GPT-2 model", ("gpt2",)) is None:
        require_hub_model(cfg.model, "GPT-2 model")
    if (
        scorer
        and cfg.scorer not in ("lexicon", "none")
        and check_tokenizer_path(cfg.scorer, "text classifier") is None
    ):
        require_hub_model(cfg.scorer, "text classifier")  # before any model work, not after it


def setup_gpt2(cfg: Gpt2RunConfig, scorer: bool = False) -> Gpt2Run:
    """Load the tokenizer and model of ``cfg`` (hub models fail at once without network:
    :class:`~equirl.errors.OfflineError`, :func:`check_hub`; ``scorer``: also ``cfg.scorer``) and build
    its word-swap symmetry; prompts that leave no room for ``max_new_tokens`` within the model's
    positions are refused before any generation (:func:`check_lengths`)."""
    check_hub(cfg, scorer=scorer)
    if cfg.out:
        from equirl.utils.io import check_output_path

        check_output_path(cfg.out, "out")  # before the model loads and generates
    from equirl.language.gpt2 import load_gpt2, load_gpt2_tokenizer, tiny_gpt2, variant_symmetry
    from equirl.language.tokenizer import default_tokenizer

    tok = default_tokenizer() if cfg.tokenizer == "default" else load_gpt2_tokenizer(cfg.tokenizer)
    model = tiny_gpt2(len(tok), seed=cfg.seed) if cfg.model == "tiny" else load_gpt2(cfg.model)
    hf: Any = model
    vocab = int(hf.config.vocab_size)
    sym = variant_symmetry(tok, cfg.variant, cfg.attributes, vocab_size=vocab)
    run = Gpt2Run(cfg, tok, model, sym)
    check_lengths(run, cfg.max_new_tokens)
    return run


def check_lengths(run: Gpt2Run, new_tokens: int) -> None:
    """Refuse, in one :class:`~equirl.errors.ConfigError` line and before any work, a prompt whose tokens
    plus ``new_tokens`` exceed the model's positions (``config.n_positions``): GPT-2 has no position
    beyond them, and would fail with an ``IndexError`` half-way through."""
    from equirl.errors import ConfigError
    from equirl.utils.io import printable

    n_pos = getattr(getattr(run.model, "config", None), "n_positions", None)
    if not isinstance(n_pos, int):
        return
    for prompt in run_prompts(run.cfg):
        n = len(_encode(run.tokenizer, prompt))
        if n + new_tokens > n_pos:
            room = n_pos - n
            fix = f"set max_new_tokens to at most {room}" if room > 0 else "shorten the prompt"
            raise ConfigError(
                f"prompt {printable(repr(prompt), 80)} has {n} tokens: with {new_tokens} new tokens that makes "
                f"{n + new_tokens} positions, more than the model's {n_pos} (n_positions); {fix}"
            )


def generations_path(cfg: Gpt2RunConfig, overwrite: bool = False) -> Path | None:
    """Where :func:`save_generations` writes the continuations of ``cfg``: ``cfg.out/generations.jsonl``
    (``None`` without ``cfg.out``), checked before any model loads: it must be writable and, unless
    ``overwrite``, not exist yet.

    :raises ConfigError: one line naming the file.
    """
    if not cfg.out:
        return None
    from equirl.errors import ConfigError
    from equirl.utils.io import check_output_path, printable

    target = Path(cfg.out) / "generations.jsonl"
    check_output_path(target, "out", kind="file")
    if target.exists() and not overwrite:
        raise ConfigError(
            f"{printable(target)} already exists: set out to a new folder, or pass --overwrite to replace it"
        )
    return target


def save_generations(rows: Sequence[dict[str, str]], path: str | Path) -> Path:
    """Write the rows of :func:`generate_continuations` to ``path`` as JSON lines, atomically."""
    import json

    from equirl.utils.io import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def symmetrized_lm(run: Gpt2Run) -> Any:
    """The EquiGPT2 of ``run.cfg.method`` (with its proxy for equizero) in eval mode; ``None`` for
    ``base``: the one model that both generation and the fairness report measure."""
    if run.cfg.method == BASE:
        return None
    from equirl.language.gpt2 import EquiGPT2

    kw: dict[str, Any] = {"proxy": run.cfg.proxy} if run.cfg.method == EQUIZERO else {}
    return EquiGPT2(run.model, run.symmetry, run.cfg.method, **kw).eval()


def generate_continuations(run: Gpt2Run, progress: ProgressFn | None = None) -> list[dict[str, str]]:
    """``cfg.samples_per_prompt`` continuations of every prompt with ``cfg.method`` (plain GPT-2 or
    EquiGPT2), seeded by ``cfg.seed``.

    :param progress: called as ``progress(prompts done, prompts)``.
    :returns: ``[{"prompt": ..., "continuation": ...}, ...]``.
    """
    import torch

    from equirl.language.gpt2 import generate_plain

    cfg, tok, model = run.cfg, run.tokenizer, run.model
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    eq = symmetrized_lm(run)
    prompts = run_prompts(cfg)
    out: list[dict[str, str]] = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([_encode(tok, prompt)] * cfg.samples_per_prompt)
        kw2: dict[str, Any] = {
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
        if progress is not None:
            progress(i + 1, len(prompts))
    return out


#: tokens of the random continuation each swap-consistency check scores
_SWAP_TOKENS = 8


def fairness_report(
    run: Gpt2Run, max_prompts: int = 10, progress: ProgressFn | None = None
) -> FairnessReport:
    """Swap-consistency of plain GPT-2 and of EquiGPT2 with ``cfg.method`` (the model that generates) on
    the first ``max_prompts`` prompts (random continuations), and, unless ``cfg.scorer`` is ``none``, the
    mean classifier score of generated continuations per subject.

    :param progress: called as ``progress(done, total)`` over the swap checks and the generations.
    """
    import torch

    from equirl.language.fairness import LexiconScorer, hf_text_scorer, score_by_group, swap_consistency

    cfg, tok, model, sym = run.cfg, run.tokenizer, run.model, run.symmetry
    # the scorer first: a classifier that cannot load or lacks the label fails before any model work
    scorer = (
        None
        if cfg.scorer == "none"
        else LexiconScorer()
        if cfg.scorer == "lexicon"
        else hf_text_scorer(cfg.scorer, cfg.scorer_label)
    )
    check_lengths(run, _SWAP_TOKENS)  # the swap checks' random continuations, before any work
    prompts = run_prompts(cfg)[:max_prompts]
    n_gen = len(run_prompts(cfg)) if cfg.scorer != "none" else 0
    total = len(prompts) + n_gen
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, str]] = []

    def plain_lm(ids: Any) -> Any:
        return model(input_ids=ids).logits

    eq = symmetrized_lm(run)  # the configured method, as generation uses it
    lms: list[tuple[str, Any]] = [(BASE, plain_lm)] + ([(cfg.method, eq)] if eq is not None else [])
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([_encode(tok, prompt)])
        cont = torch.randint(0, len(tok), (1, _SWAP_TOKENS), generator=gen)
        for name, lm in lms:
            m = swap_consistency(lm, sym, ids, cont)
            rows.append(
                {"prompt": prompt, "model": name, "max_abs_logprob_gap": f"{m['max_abs_logprob_gap']:.2e}"}
            )
        if progress is not None:
            progress(i + 1, total)
    if scorer is None:
        return FairnessReport(rows, None)
    words = {tok.decode([i]).strip() for pairs in sym.pairs.values() for p in pairs for i in p}
    texts: dict[str, list[str]] = {}
    for r in generate_continuations(run, subtask(progress, len(prompts), total)):
        # the subject: the prompt's equality words (e.g. "Black", "gay"), else "other"
        subject = " ".join(w for w in r["prompt"].split() if w in words) or "other"
        texts.setdefault(subject, []).append(r["continuation"])
    res = score_by_group(texts, scorer)
    return FairnessReport(rows, {k: float(v) for k, v in res["mean_score"].items()})
