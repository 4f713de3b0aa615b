"""λ fitting that cannot end worse than it started: with a deliberately bad learning rate the kept λ is
never worse than the start λ on the validation episodes; ``lambda_reg`` pulls λ back to its start."""

from __future__ import annotations

import torch
from stable_baselines3.common.callbacks import CallbackList

from equirl.rl.build import load_pretrained
from equirl.rl.callbacks import EquiEvalCallback
from equirl.rl.lambda_fit import BestLambdaCallback, lambda_parameters

AGENT = "agents/dqn/CartPole-v1/CartPole-v1_partial.zip"


def _model(lr: float) -> object:
    return load_pretrained(
        AGENT,
        "CartPole-v1",
        method="lambda",
        seed=0,
        learning_rate=lr,
        learning_starts=50,
        train_freq=4,
        gradient_steps=4,
        exploration_initial_eps=0.0,
        exploration_final_eps=0.0,
        target_update_interval=50,
    )


class _NoRestore(BestLambdaCallback):
    """Decays, but does not put the best λ back (to see the decay alone)."""

    def restore(self) -> None:
        pass


def _fit(
    lr: float, reg: float = 0.0, steps: int = 900, restore: bool = True
) -> tuple[object, BestLambdaCallback]:
    torch.manual_seed(0)
    model = _model(lr)
    eval_cb = EquiEvalCallback("CartPole-v1", eval_freq=300, n_eval_episodes=2, seed=10_000)
    keep = (BestLambdaCallback if restore else _NoRestore)(eval_cb, lambda_reg=reg)
    model.learn(steps, callback=CallbackList([eval_cb, keep]))  # type: ignore[attr-defined]
    return model, keep


def test_bad_learning_rate_never_ends_worse_than_the_start() -> None:
    model, keep = _fit(lr=5.0)
    assert keep.start_score is not None and len(keep.history) == 4  # the start + 3 periodic evaluations
    assert keep.best_score >= keep.start_score
    # the kept λ is in both networks and scores what was recorded, on the same (re-seeded) episodes
    assert keep.evaluate_now() == keep.best_score
    pol = model.policy  # type: ignore[attr-defined]
    for n, p in lambda_parameters(pol.q_net_target).items():
        assert torch.equal(p, lambda_parameters(pol.q_net)[n])


def test_lambda_reg_pulls_lambda_back_to_its_start() -> None:
    start = {n: p.detach().clone() for n, p in lambda_parameters(_model(5.0).policy.q_net).items()}  # type: ignore[attr-defined]
    free, _ = _fit(lr=5.0, steps=300, restore=False)
    held, _ = _fit(lr=5.0, reg=50.0, steps=300, restore=False)

    def dist(m: object) -> float:
        ps = lambda_parameters(m.policy.q_net)  # type: ignore[attr-defined]
        return max(float((ps[n].detach() - start[n]).abs().max()) for n in start)

    assert dist(free) > 1e-2  # the bad learning rate moves λ...
    assert dist(held) < 1e-6  # ...and a strong lambda_reg keeps it at its start (uniform: equitune)


def test_actor_critic_lambda_keeps_the_best_lambda_of_the_policy() -> None:
    """PPO with a frozen backbone and a deliberately bad learning rate: the keep-best callback finds the
    policy's own λ-net and never ends below its start on the validation episodes."""
    torch.manual_seed(0)
    model = load_pretrained(
        "agents/ppo/CartPole-v1/CartPole-v1_partial.zip",
        "CartPole-v1",
        algo="ppo",
        method="lambda",
        freeze_backbone=True,
        seed=0,
        learning_rate=5.0,
        n_steps=64,
        batch_size=64,
    )
    from equirl.rl.lambda_fit import _nets

    assert _nets(model) == [model.policy] and lambda_parameters(model.policy)  # type: ignore[attr-defined]
    eval_cb = EquiEvalCallback("CartPole-v1", eval_freq=128, n_eval_episodes=2, seed=10_000)
    keep = BestLambdaCallback(eval_cb)
    model.learn(512, callback=CallbackList([eval_cb, keep]))  # type: ignore[attr-defined]
    assert keep.start_score is not None and len(keep.history) >= 3
    assert keep.best_score >= keep.start_score
    assert keep.evaluate_now() == keep.best_score
