"""Library progress callbacks: ``progress(done, total)`` rises to ``(total, total)``, never printed."""

from __future__ import annotations

import pytest

from equirl.utils.progress import ProgressFn, subtask


def _recorder() -> tuple[list[tuple[int, int]], ProgressFn]:
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))

    return seen, progress


def _check(seen: list[tuple[int, int]]) -> None:
    assert seen, "no progress reported"
    dones = [d for d, _ in seen]
    totals = {t for _, t in seen}
    assert len(totals) == 1, totals  # one total for the whole job
    assert dones == sorted(dones) and dones[-1] == totals.pop()


def test_subtask_maps_a_part_onto_the_whole() -> None:
    seen, progress = _recorder()
    part = subtask(progress, 10, 30)
    assert part is not None
    part(4, 10)
    assert seen == [(14, 30)]
    assert subtask(None, 1, 2) is None


def test_scan_pretrain_and_checkpoint_eval_report_progress(tmp_path: object) -> None:
    from pathlib import Path

    from equirl.language.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig
    from equirl.language.train import evaluate_checkpoint, pretrain

    cfg = PretrainConfig(
        data=DataConfig(split="add_jump", limit=40),
        model=ModelConfig(cell="gru", embedding=8, hidden=8),
        train=TrainConfig(epochs=2, batch_size=16, eval_examples=8),
    )
    seen, progress = _recorder()
    run, _ = pretrain(cfg, Path(str(tmp_path)) / "run", tensorboard=False, progress=progress)
    _check(seen)
    assert seen[-1][1] == 2 * 40 + 8 + 40
    seen2, progress2 = _recorder()
    rows = evaluate_checkpoint(run, ["plain", "equitune"], limit=12, finetune_epochs=1, progress=progress2)
    _check(seen2)
    assert seen2[-1][1] == 2 * (12 + 12) and [r["method"] for r in rows] == ["base", "equitune"]


def test_vision_evaluation_and_check_symmetry_report_progress() -> None:
    import torch

    from equirl.vision.classifier import evaluate_transforms

    seen, progress = _recorder()
    images, labels = torch.rand(6, 1, 8, 8), torch.zeros(6, dtype=torch.long)
    evaluate_transforms(lambda x: x.flatten(1)[:, :3], images, labels, "rot90", progress=progress)
    _check(seen)
    assert seen[-1] == (5, 5)
    pytest.importorskip("gymnasium")
    from equirl.rl.check import check_symmetry

    seen, progress = _recorder()
    assert check_symmetry("CartPole-v1", steps=7, progress=progress).verified
    assert seen == [(i, 7) for i in range(1, 8)]
