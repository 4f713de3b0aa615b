"""Equi-tuning on SCAN (Basu et al., AAAI 2023): finetuning all weights *through* each symmetrizer keeps
the decoded sequences exactly equivariant, lowers the loss, and transfers a verb to its partner's
contexts; the finetuned benchmark rows aggregate per seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from equirl.language.equiscan import SymmetrizedSeq2Seq, exact_match, scan_symmetry
from equirl.language.scan import ScanExample
from equirl.language.seq2seq import Seq2Seq, encode_batch, greedy_decode, scan_vocabs
from equirl.language.train import _loss, finetune, train_model

ATOL = 1e-5
SV, TV = scan_vocabs()


def _ex(command: str, actions: str) -> ScanExample:
    return ScanExample(tuple(command.split()), tuple(actions.split()))


#: "jump" appears only alone; "run" in contexts -- Add Jump in miniature
TRAIN = [
    _ex("jump", "I_JUMP"),
    _ex("run", "I_RUN"),
    _ex("walk", "I_WALK"),
    _ex("run twice", "I_RUN I_RUN"),
    _ex("walk twice", "I_WALK I_WALK"),
    _ex("run left", "I_TURN_LEFT I_RUN"),
    _ex("walk left", "I_TURN_LEFT I_WALK"),
]
HELD_OUT = [_ex("jump twice", "I_JUMP I_JUMP"), _ex("jump left", "I_TURN_LEFT I_JUMP")]

METHODS = [("equitune", {}), ("equizero", {"proxy": "nll"}), ("lambda", {})]


def _mean_loss(model: torch.nn.Module, data: list[ScanExample]) -> float:
    src, lens, tgt = encode_batch(data, SV, TV)
    model.eval()
    with torch.no_grad():
        return float(_loss(model(src, lens, tgt), tgt))


@pytest.mark.parametrize(
    ("method", "kw", "spec"), [(m, kw, "jump_run") for m, kw in METHODS] + [("equitune", {}, "verbs")]
)
def test_whole_model_finetuning_lowers_loss_and_stays_equivariant(method: str, kw: dict, spec: str) -> None:
    torch.manual_seed(0)
    m = Seq2Seq("lstm", len(SV), len(TV), 16, 32, dropout=0.0)
    before = [p.detach().clone() for p in m.parameters()]
    probe = SymmetrizedSeq2Seq(m, scan_symmetry(spec), method, **kw)
    loss0 = _mean_loss(probe, TRAIN)
    eq = finetune(m, TRAIN * 4, method, spec, epochs=6, lr=1e-2, batch_size=7, **kw)
    assert all(p.requires_grad for p in m.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters()))  # backbone trained
    assert _mean_loss(eq, TRAIN) < 0.3 * loss0
    sym = eq.symmetry
    src, lens, _ = encode_batch(TRAIN + HELD_OUT, SV, TV)
    ids = eq.greedy(src, lens, 12)
    for g in sym.group.elements:  # the whole decoded sequence, every element
        assert torch.equal(sym.tgt.apply(ids, g), eq.greedy(sym.src.apply(src, g), lens, 12))
    tgt = torch.randint(3, len(TV), (src.shape[0], 5))
    for g in sym.group.elements:  # teacher-forced step distributions
        assert torch.allclose(
            sym.logits.apply(eq(src, lens, tgt), g),
            eq(sym.src.apply(src, g), lens, sym.tgt.apply(tgt, g)),
            atol=ATOL,
        )


def test_equituning_transfers_run_contexts_to_jump() -> None:
    """Through ``jump ↔ run`` the backbone itself learns ``jump twice`` / ``jump left``, never seen;
    the plain model trained the same way does not."""
    torch.manual_seed(0)
    init = Seq2Seq("lstm", len(SV), len(TV), 16, 32, dropout=0.0)
    plain = Seq2Seq("lstm", len(SV), len(TV), 16, 32, dropout=0.0)
    plain.load_state_dict(init.state_dict())
    eq = finetune(init, TRAIN * 4, "equitune", "jump_run", epochs=8, lr=1e-2, batch_size=7)
    assert exact_match(lambda s, n: eq.greedy(s, n, 12), TRAIN + HELD_OUT, SV, TV) == 1.0
    # the bare backbone (no symmetrizer at test time) also answers the held-out commands
    assert exact_match(lambda s, n: greedy_decode(eq.model, s, n, 12), HELD_OUT, SV, TV) == 1.0
    train_model(plain, TRAIN * 4, epochs=8, batch_size=7, lr=1e-2)
    assert exact_match(lambda s, n: greedy_decode(plain, s, n, 12), TRAIN, SV, TV) == 1.0
    assert exact_match(lambda s, n: greedy_decode(plain, s, n, 12), HELD_OUT, SV, TV) < 1.0


def test_frozen_backbone_with_equitune_is_an_error() -> None:
    from equirl.errors import ConfigError

    m = Seq2Seq("gru", len(SV), len(TV), 8, 8)
    with pytest.raises(ConfigError, match="nothing to finetune"):
        finetune(m, TRAIN, "equitune", "jump_run", train_backbone=False)


def test_bench_rows_aggregate_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    from equirl.bench import language as bench

    def fake(cell: str, split: str, seed: int, st: bench.ScanBenchSettings) -> dict[str, tuple[float, float]]:
        assert st.finetune_epochs == 2 and st.finetune_lr == 5e-4
        return {"equitune+ft": (0.9 + 0.05 * seed, 10.0 * seed), "plain": (0.0, 0.0)}

    monkeypatch.setattr(bench, "scan_unit", fake)
    raw: list[dict] = []
    rows = bench.bench_scan(
        ["lstm"], ["add_jump"], [0, 2], 1, finetune_epochs=2, finetune_lr=5e-4, zero_shot=False, per_seed=raw
    )
    assert len(raw) == 4 and {r["seed"] for r in raw} == {0, 2}
    assert [r["exact_match"] for r in raw if r["method"] == "equitune+ft"] == [90.0, 100.0]
    by = {r["method"]: r for r in rows}
    assert by["equitune+ft"]["mean"] == 95.0 and by["equitune+ft"]["std"] == 5.0
    assert by["equitune+ft"]["seeds"] == 2 and by["equitune+ft"]["finetune_s"] == 10
    assert by["plain"]["split"] == "addprim_jump" and by["plain"]["mean"] == 0.0


def test_bench_cli_writes_finetuned_csvs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from equirl.bench import language as bench
    from equirl.cli import main

    def fake(cell: str, split: str, seed: int, st: bench.ScanBenchSettings) -> dict[str, tuple[float, float]]:
        assert st.finetune_epochs == 3 and st.run_root == str(tmp_path / "runs") and not st.zero_shot
        return {"equitune+ft": (0.99, 60.0)}

    monkeypatch.setattr(bench, "scan_unit", fake)
    args = ["bench", "language-scan", "--seeds", "0,1", "--finetune-epochs", "3", "--no-zero-shot"]
    assert main([*args, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "scan_exact_match_finetuned.csv").read_text().splitlines()
    assert table[0] == "split,cell,method,mean,std,seeds,finetune_s" and len(table) == 3  # 2 splits
    assert (
        len((tmp_path / "scan_exact_match_finetuned_per_seed.csv").read_text().splitlines()) == 5
    )  # x 2 seeds
    assert main(["bench", "language-scan", "--no-zero-shot"]) == 2  # nothing to measure
