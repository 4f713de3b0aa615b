"""EquiGPT2: word-swap groups, exact equivariance with the KV cache, swap-consistency, offline errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from equirl.errors import OfflineError, SymmetryError
from equirl.language import gpt2 as G
from equirl.language.fairness import LexiconScorer, continuation_logprob, score_by_group, swap_consistency
from equirl.language.tokenizer import default_tokenizer

ATOL = 1e-5


@pytest.fixture(scope="module")
def tok() -> Any:
    return default_tokenizer()


@pytest.fixture(scope="module")
def model(tok: Any) -> Any:
    m = G.tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, seed=0)
    with torch.no_grad():  # larger logits, so greedy paths differ between prompts
        m.lm_head.weight.mul_(30.0)
    return m


def _prompt(tok: Any, sym: G.WordSwapSymmetry) -> torch.Tensor:
    text = ["The man and the Black gay person worked as", "The woman was known for being White and straight"]
    ids = [tok.encode(t) for t in text]
    n = min(map(len, ids))
    return torch.tensor([i[:n] for i in ids])


def test_requigpt2_group(tok: Any) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2")
    assert sym.group.order == 8
    assert {k: len(v) for k, v in sym.pairs.items()} == {"gender": 1, "color": 1, "sexuality": 1}
    he = tok.encode(" he")[0]
    assert all(sym.ids.apply(torch.tensor([he]), g).item() == he for g in range(8))  # general words fixed


def test_multi_token_word_rejected_or_skipped(tok: Any) -> None:
    pairs = {"gender": [(" man", " woman"), (" zyxwvqjk", " qjkzyxwv")]}  # multi-token in any BPE
    with pytest.raises(SymmetryError, match="not a single token"):
        G.word_swap_symmetry(tok, pairs)
    sym = G.word_swap_symmetry(tok, pairs, on_multi_token="skip")
    assert len(sym.pairs["gender"]) == 1
    with pytest.raises(SymmetryError, match="reuses"):
        G.word_swap_symmetry(tok, {"a": [(" man", " woman"), (" woman", " Black")]})


@pytest.mark.parametrize(
    ("method", "kw"), [("equitune", {}), ("equizero", {"proxy": "entropy"}), ("lambda", {})]
)
def test_equigpt2_exactly_equivariant_with_kv_cache(tok: Any, model: Any, method: str, kw: dict) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2", vocab_size=model.config.vocab_size)
    eq = G.EquiGPT2(model, sym, method, **kw).eval()
    if method == "lambda":
        torch.nn.init.normal_(eq.sym.lambda_net.layers()[-1][0])
    ids = _prompt(tok, sym)
    out = eq.generate(ids, 6)
    tf = eq(ids)
    for g in range(sym.group.order):
        gids = sym.ids.apply(ids, g)
        assert torch.equal(sym.ids.apply(out, g), eq.generate(gids, 6))
        assert torch.allclose(sym.logits.apply(tf, g), eq(gids), atol=ATOL)
    # cached generation == teacher-forced logits of the generated text (the cache is used correctly)
    full = torch.cat([ids, out], 1)
    assert torch.equal(eq(full)[:, ids.shape[1] - 1 : -1].argmax(-1), out)


def test_cached_equals_reencode_loop_and_plain(tok: Any, model: Any) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2", vocab_size=model.config.vocab_size)
    ids = _prompt(tok, sym)
    assert torch.equal(G.EquiGPT2(model, sym).generate(ids, 5), G.generate_reencode(model, sym, ids, 5))
    ref = ids
    for _ in range(5):
        ref = torch.cat([ref, model(input_ids=ref).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(G.generate_plain(model, ids, 5), ref[:, ids.shape[1] :])


def test_sampling_is_seeded(tok: Any, model: Any) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2", vocab_size=model.config.vocab_size)
    eq = G.EquiGPT2(model, sym)
    ids = _prompt(tok, sym)
    a = eq.generate(ids, 5, do_sample=True, generator=torch.Generator().manual_seed(1))
    b = eq.generate(ids, 5, do_sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_swap_consistency(tok: Any, model: Any) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2", vocab_size=model.config.vocab_size)
    ids = _prompt(tok, sym)
    cont = torch.tensor([tok.encode(" a woman who is gay")[:4]] * 2)
    eq = G.EquiGPT2(model, sym).eval()
    assert swap_consistency(eq, sym, ids, cont)["max_abs_logprob_gap"] < 1e-4
    plain = swap_consistency(lambda x: model(input_ids=x).logits, sym, ids, cont)
    assert plain["max_abs_logprob_gap"] > 1e-3
    lp = continuation_logprob(lambda x: model(input_ids=x).logits, ids, cont)
    assert lp.shape == (2,) and bool((lp < 0).all())


def test_equizero_sequence_scorer(tok: Any, model: Any) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2", ["gender"], vocab_size=model.config.vocab_size)
    eq = G.EquiGPT2(model, sym)
    ids = _prompt(tok, sym)
    woman = tok.encode(" woman")[0]
    scorer = lambda c: -(c == woman).sum(-1).float()
    cont, pick = eq.generate_equizero(ids, scorer, 5)
    assert cont.shape == (2, 5) and pick.shape == (2,)
    cands = sym.ids.inverse_stacked(
        G.generate_plain(model, sym.ids.orbit(ids).reshape(-1, ids.shape[1]), 5).view(2, 2, -1)
    )
    best = torch.stack([scorer(cands[:, b]) for b in range(2)], 1).min(0).values
    assert torch.equal(scorer(cont), best)


def test_classifier_hook() -> None:
    res = score_by_group(
        {"The man": ["a good kind person"], "The woman": ["a violent criminal"]}, LexiconScorer()
    )
    assert res["mean_score"]["The man"] > 0 > res["mean_score"]["The woman"] and res["max_gap"] > 0


def test_hub_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(OfflineError, match="cannot load GPT-2"):
        G.load_gpt2("gpt2")


def test_equigpt2_variant_keeps_only_valid_pairs(tok: Any) -> None:
    sym = G.variant_symmetry(tok, "EquiGPT2")
    ids = [i for pairs in sym.pairs.values() for p in pairs for i in p]
    assert len(ids) == len(set(ids)) and len(sym.pairs["gender"]) > 1  # disjoint single tokens
    assert all(len(tok.encode(tok.decode([i]))) == 1 for i in ids)
    x = torch.tensor([ids])
    for g in range(sym.group.order):  # every element is an involution on ids here (a product of swaps)
        assert torch.equal(sym.ids.apply(sym.ids.apply(x, g), g), x)


def test_packaged_word_lists_and_prompts() -> None:
    pairs = G.equality_pairs("R-EquiGPT2")
    assert pairs["gender"] == [(" man", " woman")] and pairs["color"] == [(" Black", " White")]
    assert set(G.general_words()) == {" he", " she", " his", " her", " him"}
    assert len(G.gender_word_pairs()) >= 60
    with pytest.raises(SymmetryError, match="unknown variant"):
        G.equality_pairs("GPT5")


@pytest.mark.parametrize("method", ["equitune", "lambda"])
def test_fast_head_matches_full_logits(tok: Any, model: Any, method: str) -> None:
    sym = G.variant_symmetry(tok, "R-EquiGPT2", vocab_size=model.config.vocab_size)
    fast, slow = G.EquiGPT2(model, sym, method), G.EquiGPT2(model, sym, method, fast_head=False)
    assert fast._fast and not slow._fast
    if method == "lambda":
        torch.nn.init.normal_(fast.sym.lambda_net.layers()[-1][0])
        slow.sym.lambda_net.load_state_dict(fast.sym.lambda_net.state_dict())
    ids = _prompt(tok, sym)
    rows = sym.ids.orbit(ids).reshape(-1, ids.shape[1])
    hidden, _ = fast._run_fast(rows, torch.ones_like(rows))
    logits, feats, _ = slow._run(rows, torch.ones_like(rows))
    ref, _ = slow._combine(logits[:, -1], feats, ids.shape[0])
    assert torch.allclose(fast._combine_fast(hidden, ids.shape[0]), ref, atol=ATOL, rtol=1e-5)
    assert torch.equal(fast.generate(ids, 6), slow.generate(ids, 6))
