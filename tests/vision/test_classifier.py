"""Invariance of symmetrized image classifiers for every method, group and element; the real mirror."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equirl.errors import EquirlError, GroupError
from equirl.symmetrizers import LambdaEquiTune, check_equivariance, equivariance_errors
from equirl.vision import SmallCNN, evaluate_transforms, fit_lambda, symmetrize_classifier, vision_action
from tests.vision.helpers import pretrain_small_digits

ATOL = 1e-5
GROUPS = {"rot90": 4, "mirror": 2, "rot90+mirror": 8, "rot180": 2}
METHODS = [
    ("equitune", {}),
    ("equizero", {"proxy": "entropy"}),
    ("equizero", {"proxy": "max_prob"}),
    ("lambda", {}),
    ("lambda", {"lambda_features": None}),
]


def _net(c: int = 3, size: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(in_channels=c, num_classes=5, image_size=size, width=4, hidden=16).eval()


def _randomize_lambda(model: nn.Module) -> None:
    """Give λ non-trivial weights (its last layer starts at zero, i.e. as equitune)."""
    if isinstance(model, LambdaEquiTune):
        with torch.no_grad():
            for p in model.lambda_net.parameters():
                p.normal_(0, 0.5)


def test_mirror_is_a_real_left_right_mirror() -> None:
    act = vision_action("mirror")
    x = torch.randn(2, 3, 5, 5)
    m = act.group.elements[1]
    assert torch.equal(act.apply(x, m), x.flip(-1))
    assert not torch.equal(act.apply(x, m), torch.rot90(x, 2, dims=(-2, -1)))
    # the D4 action contains both the mirror and the quarter turn, with the same conventions
    d4 = vision_action("rot90+mirror")
    assert d4.group.order == 8
    outs = [d4.apply(x, g) for g in d4.group.elements]
    assert any(torch.equal(o, x.flip(-1)) for o in outs)
    assert any(torch.equal(o, torch.rot90(x, 1, dims=(-2, -1))) for o in outs)
    assert any(torch.equal(o, x.flip(-2)) for o in outs)  # top-bottom mirror = r^2 m


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("method,kw", METHODS, ids=lambda v: str(v))
def test_invariance_every_element(group: str, method: str, kw: dict) -> None:
    model = symmetrize_classifier(_net(), group=group, method=method, **kw).eval()
    x = torch.randn(4, 3, 8, 8)
    _ = model(x)  # materialise lazy λ layers
    _randomize_lambda(model)
    act = vision_action(group)
    errs = equivariance_errors(model, act, None, x)
    assert len(errs) == GROUPS[group]
    assert max(errs.values()) < ATOL, errs
    y = model(x)
    assert y.shape == (4, 5)
    # the batched forward equals the per-element reference loop
    assert torch.allclose(model.forward_loop(x), y, atol=ATOL)


def test_plain_net_is_not_invariant() -> None:
    net = _net()
    assert check_equivariance(net, vision_action("rot90"), None, torch.randn(4, 3, 8, 8)) > 1e-3


def test_equitune_matches_explicit_reference() -> None:
    net = _net()
    x = torch.randn(3, 3, 8, 8)
    model = symmetrize_classifier(net, "mirror", "equitune")
    ref = (net(x) + net(x.flip(-1))) / 2
    assert torch.allclose(model(x), ref, atol=ATOL)
    rot = symmetrize_classifier(net, "rot90", "equitune")
    ref4 = sum(net(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)) / 4
    assert torch.allclose(rot(x), ref4, atol=ATOL)


def test_equizero_picks_lowest_entropy_pose() -> None:
    net = _net()
    x = torch.randn(6, 3, 8, 8)
    model = symmetrize_classifier(net, "rot90", "equizero", proxy="entropy").eval()
    outs = torch.stack([net(torch.rot90(x, k, dims=(-2, -1))) for k in range(4)])
    p = outs.softmax(-1)
    ent = -(p * p.log()).sum(-1)
    best = ent.argmin(0)
    assert torch.allclose(model(x), outs[best, torch.arange(6)], atol=ATOL)
    mp = symmetrize_classifier(net, "rot90", "equizero", proxy="max_prob").eval()
    best_p = p.amax(-1).argmax(0)  # *maximum* probability
    assert torch.allclose(mp(x), outs[best_p, torch.arange(6)], atol=ATOL)


def test_lambda_on_features_by_default() -> None:
    net = _net()
    model = symmetrize_classifier(net, "rot90", "lambda")
    assert isinstance(model, LambdaEquiTune)
    assert model.lambda_features == net.features
    # zero-initialised last layer: starts exactly as equitune
    eq = symmetrize_classifier(net, "rot90", "equitune")
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(model(x), eq(x), atol=ATOL)
    # the backbone is registered (its parameters are the module's)
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("model.") for n in names)


def test_unknown_group_and_method() -> None:
    with pytest.raises(GroupError, match="unknown image group"):
        symmetrize_classifier(_net(), group="rot45")
    with pytest.raises(EquirlError, match="unknown method"):
        symmetrize_classifier(_net(), method="bogus")


def test_fit_lambda_learns_upright_pose_and_keeps_backbone_frozen() -> None:
    """A CNN trained on upright digits only: λ learns to weight the upright pose from a few images."""
    from equirl.vision.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig
    from equirl.vision.train import load_data, pretrain

    cfg = PretrainConfig(
        data=DataConfig(size=8, n_test=300),
        model=ModelConfig(width=8, hidden=32),
        train=TrainConfig(steps=150, lr=1e-2),
    )
    net, metrics = pretrain(cfg, save=False)
    assert metrics["test_e"] > 0.85  # upright accuracy
    train, test = load_data(cfg.data)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = symmetrize_classifier(net, "rot90", "lambda")
    act = vision_action("rot90")
    acc0 = evaluate_transforms(model, test.images, test.labels, "rot90")["random"]
    losses = fit_lambda(model, train.images[:300], train.labels[:300], steps=60, lr=1e-2)
    assert sum(losses[-10:]) < sum(losses[:10])
    acc1 = evaluate_transforms(model, test.images, test.labels, "rot90")["random"]
    assert acc1 > acc0 + 0.2, (acc0, acc1)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in net.parameters())
    assert check_equivariance(model.eval(), act, None, test.images[:8]) < ATOL


def test_fit_lambda_rejects_other_methods() -> None:
    with pytest.raises(EquirlError, match="λ-equitune"):
        fit_lambda(
            symmetrize_classifier(_net(), method="equitune"),  # type: ignore[arg-type]
            torch.zeros(2, 3, 8, 8),
            torch.zeros(2, dtype=torch.long),
        )


@pytest.mark.parametrize("group", ["rot90", "rot90+mirror"])
def test_canonicalize_classifier_is_invariant_every_element(group: str) -> None:
    act = vision_action(group)
    model = symmetrize_classifier(_net(), group, "canonicalize").eval()
    x = torch.randn(4, 3, 8, 8)
    assert check_equivariance(model, act, None, x) < ATOL


def test_fit_canonicalizer_learns_the_upright_pose_with_the_prior() -> None:
    """Prior-only training on upright digits: the frozen CNN then reads every rotated pose as upright."""
    from equirl.vision import fit_canonicalizer

    net, metrics, train, test = pretrain_small_digits()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = symmetrize_classifier(net, "rot90", "canonicalize")
    losses = fit_canonicalizer(model, train.images[:300], steps=80, lr=1e-2)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    acc = evaluate_transforms(model.eval(), test.images, test.labels, "rot90")
    assert acc["random"] > metrics["test_random"] + 0.2, (acc, metrics)
    assert min(acc[k] for k in ("e", "r1", "r2", "r3")) == max(acc[k] for k in ("e", "r1", "r2", "r3"))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(EquirlError, match="canonicalize"):
        fit_canonicalizer(symmetrize_classifier(net, "rot90", "equitune"), train.images[:4])


@pytest.mark.parametrize("method", ["multigroup", "equitune", "canonicalize"])
def test_direct_product_group_for_multigroup(method: str) -> None:
    act = vision_action("rot180xmirror")
    assert act.group.order == 4 and len(act.group.factors) == 2
    model = symmetrize_classifier(_net(), "rot180xmirror", method).eval()
    x = torch.randn(3, 3, 8, 8)
    assert check_equivariance(model, act, None, x) < ATOL
    mirror = act.group.generators[1]
    assert torch.equal(act.apply(x, mirror), x.flip(-1))


def _channel_net() -> nn.Module:
    """An RGB classifier that takes any image size (no fixed flatten): only the channels are checked."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)
    ).eval()


@pytest.mark.parametrize(
    ("method", "kw"),
    [("canonicalize", {}), ("lambda", {"lambda_features": None}), ("lambda", {})],
)
def test_a_failed_first_call_does_not_size_the_lazy_part(method: str, kw: dict) -> None:
    import copy

    from equirl.errors import SymmetryError

    model = symmetrize_classifier(_channel_net(), "rot90", method, **kw).eval()
    fresh = copy.deepcopy(model)
    with pytest.raises(SymmetryError, match=r"does not take images of shape \(2, 1, 8, 8\).*3 channels"):
        model(torch.randn(2, 1, 8, 8))  # grey images to an RGB net
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(1)
    y = model(x)  # the correct call works, and the lazy part is as a fresh model's
    torch.manual_seed(1)
    assert torch.allclose(y, fresh(x))
    assert max(equivariance_errors(model, vision_action("rot90"), None, x).values()) < ATOL
    assert not model._forward_pre_hooks  # the check is gone once nothing is lazy


def test_fit_canonicalizer_on_wrong_images_leaves_the_scorer_lazy() -> None:
    from equirl.errors import SymmetryError
    from equirl.vision import fit_canonicalizer

    model = symmetrize_classifier(_channel_net(), "rot90", "canonicalize")
    with pytest.raises(SymmetryError, match="does not take images"):
        fit_canonicalizer(model, torch.randn(4, 1, 8, 8), steps=1)
    fit_canonicalizer(model, torch.randn(4, 3, 8, 8), steps=1)
    assert model.eval()(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_the_input_check_keeps_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5))
    net(torch.randn(2, 3, 8, 8))
    model = symmetrize_classifier(net, "rot90", "canonicalize").train()
    stats = net[1].running_mean.clone()
    from equirl.vision.classifier import check_input

    check_input(model, torch.randn(2, 3, 8, 8) * 10)
    assert torch.equal(net[1].running_mean, stats) and net.training
