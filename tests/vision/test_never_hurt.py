"""Methods that never hurt (vision): validation keeping of λ and of the canonicalizer, the penultimate-feature hook,
the feature scorer and ``method auto`` for classifiers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from equirl.errors import EquirlError
from equirl.symmetrizers import Canonicalize, LambdaEquiTune, check_equivariance
from equirl.train_loop import fit
from equirl.vision import (
    SmallCNN,
    accuracy,
    fit_canonicalizer,
    fit_lambda,
    init_lambda,
    symmetrize_classifier,
    vision_action,
)
from equirl.vision.classifier import FeatureScorer, resolve_features
from equirl.vision.features import find_feature_layer, penultimate_features
from equirl.vision.select import select_classifier_method
from tests.vision.helpers import pretrain_small_digits

ATOL = 1e-5


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    """A small CNN trained on upright 8×8 digits, and the data."""
    net, metrics, train, test = pretrain_small_digits()
    return {"net": net, "train": train, "test": test, "metrics": metrics}


# -- the feature hook ------------------------------------------------------------------------------


class _WithFc(nn.Module):
    def __init__(self, attr: str, head: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU())
        setattr(self, attr, head)
        self.attr = attr

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, self.attr)(self.body(x))  # type: ignore[no-any-return]


class _SB3Like(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features_extractor = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Tanh())
        self.q_net = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.q_net(self.features_extractor(x))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "dim", "head_of"),
    [
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 7), nn.ReLU(), nn.Linear(7, 3)),
            7,
            lambda n: n[-1],
        ),
        (lambda: _WithFc("fc", nn.Linear(6, 3)), 6, lambda n: n.fc),
        (
            lambda: _WithFc("classifier", nn.Sequential(nn.Dropout(0.0), nn.Linear(6, 3))),
            6,
            lambda n: n.classifier,
        ),
        (lambda: _WithFc("head", nn.Linear(6, 3)), 6, lambda n: n.head),
        (_SB3Like, 5, lambda n: n.q_net),
        (lambda: SmallCNN(1, 3, 4, width=2, hidden=9), 9, lambda n: n.head),
    ],
)
def test_penultimate_features_match_the_layer_input(make: Any, dim: int, head_of: Any) -> None:
    net = make().eval()
    layer, _ = find_feature_layer(net)
    seen: list[Tensor] = []
    layer.register_forward_hook(lambda m, a, out: seen.append(out))
    x = torch.randn(3, 1, 4, 4)
    z = penultimate_features(net)(x)
    assert z.shape == (3, dim)
    assert not seen or isinstance(net, _SB3Like)  # stopped before the head ran (SB3: the extractor's output)
    # the features are what the head receives: the head applied to them gives the logits
    assert torch.allclose(head_of(net)(z), net(x), atol=ATOL)
    assert not layer._forward_pre_hooks  # the hook is removed after the call


def test_resolve_features_defaults() -> None:
    cnn = SmallCNN(1, 3, 4, width=2, hidden=9)
    assert resolve_features(cnn, "auto") == cnn.features  # its own features method
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 7), nn.ReLU(), nn.Linear(7, 3))
    assert resolve_features(seq, "auto") is not None
    conv_only = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert resolve_features(conv_only, "auto") is None  # nothing to hook: the raw image
    with pytest.raises(EquirlError, match="penultimate"):
        resolve_features(conv_only, "penultimate")
    with pytest.raises(EquirlError, match="features must be"):
        resolve_features(seq, "bogus")
    lam = symmetrize_classifier(seq, "rot90", "lambda")
    assert isinstance(lam, LambdaEquiTune) and lam.lambda_features is not None
    x = torch.randn(2, 1, 4, 4)
    assert lam.lambda_features(x).shape == (2, 7)


# -- λ: validation keeping ----------------------------------------------------------------------------


def _val_acc(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    return accuracy(model, x, y)


def test_fit_lambda_with_a_bad_lr_never_ends_worse_than_its_start(digits: dict[str, Any]) -> None:
    net, train = digits["net"], digits["train"]
    x, y = train.images[:200], train.labels[:200]
    vx, vy = train.images[200:400], train.labels[200:400]
    for lr in (30.0, 3.0):
        torch.manual_seed(1)
        lam = symmetrize_classifier(net, "rot90", "lambda")
        assert isinstance(lam, LambdaEquiTune)
        init_lambda(lam, x)
        with torch.no_grad():  # a non-trivial start, so that "never worse" is not just "equitune"
            for p in lam.lambda_net.parameters():
                p.normal_(0, 0.3)
        start = _val_acc(lam, vx, vy)
        history: list[tuple[int, float]] = []
        fit_lambda(
            lam, x, y, steps=40, lr=lr, val_images=vx, val_labels=vy, eval_every=5, val_history=history
        )
        end = _val_acc(lam, vx, vy)
        assert history[0] == (0, pytest.approx(start))
        assert end >= start, (lr, start, end)
        assert end == pytest.approx(max(s for _, s in history))  # the best score seen is restored


def test_fit_lambda_val_fraction_patience_and_reg(digits: dict[str, Any]) -> None:
    net, train = digits["net"], digits["train"]
    x, y = train.images[:300], train.labels[:300]
    lam = symmetrize_classifier(net, "rot90", "lambda")
    assert isinstance(lam, LambdaEquiTune)
    history: list[tuple[int, float]] = []
    losses = fit_lambda(
        lam, x, y, steps=400, lr=50.0, val_fraction=0.25, eval_every=5, patience=2, val_history=history
    )
    assert len(losses) < 400  # stopped early
    assert len(history) >= 2
    # λ_reg: a strong pull toward uniform keeps λ close to equitune's weights
    reg = symmetrize_classifier(net, "rot90", "lambda")
    free = symmetrize_classifier(net, "rot90", "lambda")
    assert isinstance(reg, LambdaEquiTune) and isinstance(free, LambdaEquiTune)
    fit_lambda(reg, x, y, steps=60, lr=1e-2, lambda_reg=50.0)
    fit_lambda(free, x, y, steps=60, lr=1e-2)
    with torch.no_grad():
        w_reg = reg.eval().forward_with_weights(x[:64]).weights
        w_free = free.eval().forward_with_weights(x[:64]).weights
    assert float(w_reg.amax(0).mean()) < float(w_free.amax(0).mean())
    assert float(w_reg.amax(0).mean()) < 0.5
    with pytest.raises(EquirlError, match="val_fraction"):
        fit_lambda(reg, x, y, steps=1, val_fraction=1.5)
    with pytest.raises(EquirlError, match="lambda_reg"):
        fit_lambda(reg, x, y, steps=1, lambda_reg=-1.0)
    with pytest.raises(EquirlError, match="val_labels"):
        fit_lambda(reg, x, y, steps=1, val_images=x[:4])


# -- canonicalization ---------------------------------------------------------------------------------


def test_fit_canonicalizer_keeps_the_best_scorer(digits: dict[str, Any]) -> None:
    net, train, test = digits["net"], digits["train"], digits["test"]
    x, vx, vy = train.images[:300], train.images[300:500], train.labels[300:500]
    for labelled in (False, True):
        torch.manual_seed(2)
        can = symmetrize_classifier(net, "rot90", "canonicalize")
        assert isinstance(can, Canonicalize)
        with torch.no_grad():
            can.scores(x[:1])

        def identity_rate(can: Canonicalize = can) -> float:
            with torch.no_grad():
                return float((can.canonical_elements(vx) == 0).float().mean())

        start = _val_acc(can, vx, vy) if labelled else identity_rate()
        fit_canonicalizer(
            can, x, steps=30, lr=20.0, val_images=vx, val_labels=vy if labelled else None, eval_every=5
        )
        end = _val_acc(can, vx, vy) if labelled else identity_rate()
        assert end >= start
    # a sane fit: the prior brings rotated test digits back upright
    can = symmetrize_classifier(net, "rot90", "canonicalize")
    assert isinstance(can, Canonicalize)
    fit_canonicalizer(can, x, steps=80, lr=1e-2, val_fraction=0.2, patience=3)
    act = vision_action("rot90")
    xr = act.apply_each(test.images, torch.randint(0, 4, (test.images.shape[0],)))
    assert _val_acc(can, xr, test.labels) > digits["metrics"]["test_random"] + 0.2


def test_feature_scorer_canonicalizer_is_invariant_and_trains_only_the_scorer(digits: dict[str, Any]) -> None:
    net, train = digits["net"], digits["train"]
    can = symmetrize_classifier(net, "rot90+mirror", "canonicalize", scorer_features="auto")
    assert isinstance(can, Canonicalize) and isinstance(can.scorer, FeatureScorer)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit_canonicalizer(can, train.images[:200], steps=20, lr=1e-2)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert check_equivariance(can.eval(), vision_action("rot90+mirror"), None, train.images[:6]) < ATOL


# -- the training loop and method auto ------------------------------------------------------------------


def test_fit_stops_when_on_step_says_so() -> None:
    w = nn.Parameter(torch.tensor([3.0]))
    losses = fit([w], lambda step: (w - 1).square().sum(), steps=50, lr=0.1, on_step=lambda s, loss: s == 9)
    assert len(losses) == 10


def test_select_classifier_method_picks_by_validation(digits: dict[str, Any]) -> None:
    net, train, test = digits["net"], digits["train"], digits["test"]
    choice = select_classifier_method(net, "rot90", train.images[:400], train.labels[:400], steps=60, lr=1e-2)
    assert set(choice.val_accuracy) == {"base", "canonicalize", "equizero", "equitune", "lambda"}
    best = max(choice.val_accuracy.values())
    assert choice.val_accuracy[choice.method] >= best - 0.05
    assert choice.method != "equitune"  # equitune is below the plain CNN here
    act = vision_action("rot90")
    xr = act.apply_each(test.images, torch.randint(0, 4, (test.images.shape[0],)))
    assert accuracy(choice.model, xr, test.labels) > digits["metrics"]["test_random"]
    with pytest.raises(EquirlError, match="val_fraction"):
        select_classifier_method(net, "rot90", train.images[:40], train.labels[:40], val_fraction=0.0)
