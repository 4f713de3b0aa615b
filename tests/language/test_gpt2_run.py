"""The GPT-2 pipelines: the fairness report measures the configured method, checks come up front."""

from __future__ import annotations

import pytest

from equirl.language.config import Gpt2RunConfig
from equirl.language.fairness import swap_consistency
from equirl.language.gpt2_run import fairness_report, setup_gpt2, symmetrized_lm


def _cfg(**kw: object) -> Gpt2RunConfig:
    base: dict[str, object] = {
        "model": "tiny",
        "prompts": ["The man worked as", "The woman was known for"],
        "max_new_tokens": 2,
        "do_sample": False,
        "scorer": "none",
    }
    return Gpt2RunConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["equizero", "lambda", "equitune"])
def test_fairness_report_measures_the_configured_method(method: str) -> None:
    import torch

    run = setup_gpt2(_cfg(method=method))
    rep = fairness_report(run)
    assert [r["model"] for r in rep.swap_rows] == ["base", method] * 2
    eq = symmetrized_lm(run)
    kinds = {"equizero": "EquiZero", "lambda": "LambdaEquiTune", "equitune": "EquiTune"}
    assert eq is not None and type(eq.sym).__name__ == kinds[method]
    ids = torch.tensor([run.tokenizer.encode("The man worked as")])
    cont = torch.randint(0, len(run.tokenizer), (1, 8), generator=torch.Generator().manual_seed(run.cfg.seed))
    want = swap_consistency(eq, run.symmetry, ids, cont)["max_abs_logprob_gap"]
    assert rep.swap_rows[1]["max_abs_logprob_gap"] == f"{want:.2e}"


def test_fairness_report_of_base_has_only_base_rows() -> None:
    rep = fairness_report(setup_gpt2(_cfg(method="base")))
    assert {r["model"] for r in rep.swap_rows} == {"base"} and len(rep.swap_rows) == 2
