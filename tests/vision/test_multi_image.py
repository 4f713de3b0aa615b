"""Multi-image classifiers: invariance to independent per-image transformations (every tuple)."""

from __future__ import annotations

import itertools

import pytest
import torch

from equirl.errors import EquirlError
from equirl.vision import SmallCNN, vision_action
from equirl.vision.multi_image import JointClassifier, MultiImageIS, ProductEquiTune, apply_per_image

ATOL = 1e-5


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(1, 10, 8, 4, 16).eval()


def test_apply_per_image_is_independent() -> None:
    act = vision_action("rot90")
    x = torch.randn(2, 3, 1, 8, 8)
    y = apply_per_image(act, x, [0, 1, 3])
    assert torch.equal(y[:, 0], x[:, 0])
    assert torch.equal(y[:, 1], torch.rot90(x[:, 1], 1, dims=(-2, -1)))
    assert torch.equal(y[:, 2], torch.rot90(x[:, 2], 3, dims=(-2, -1)))
    with pytest.raises(EquirlError, match="one element per image"):
        apply_per_image(act, x, [0, 1])


@pytest.mark.parametrize("group", ["rot90", "mirror", "rot90+mirror"])
@pytest.mark.parametrize("branch", ["equitune", "lambda"])
def test_is_design_invariant_to_independent_transforms_and_order(group: str, branch: str) -> None:
    cnn = _cnn()
    trunk = cnn.feature_maps if branch == "equitune" else cnn.features
    model = MultiImageIS(trunk, num_images=2, num_classes=5, group=group, hidden=16, branch=branch).eval()
    x = torch.randn(3, 2, 1, 8, 8)
    y = model(x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    y = model(x)
    act = vision_action(group)
    G = act.group.order
    for tup in itertools.product(range(G), repeat=2):
        assert torch.allclose(model(apply_per_image(act, x, list(tup))), y, atol=ATOL), tup
    assert torch.allclose(model(x.flip(1)), y, atol=ATOL)  # symmetric in the images
    assert model.trunk_passes() == 2 * G * (2 if branch == "lambda" else 1)


def test_is_branch_is_equivariant() -> None:
    cnn = _cnn()
    model = MultiImageIS(cnn.feature_maps, num_images=1, num_classes=3, group="rot90")
    x = torch.randn(2, 1, 1, 8, 8)
    z = model.branch_features(x)
    act = vision_action("rot90")
    for g in act.group.elements:
        zg = model.branch_features(apply_per_image(act, x, [g.index]))
        assert torch.allclose(zg[:, 0], act.apply(z[:, 0], g), atol=ATOL)


def test_product_equitune_invariant_and_plain_is_not() -> None:
    cnn = _cnn()
    joint = JointClassifier(cnn.features, 16, num_images=2, num_classes=4, hidden=8)
    x = torch.randn(2, 2, 1, 8, 8)
    act = vision_action("rot90")
    prod = ProductEquiTune(joint, 2, "rot90")
    y = prod(x)
    errs_plain = []
    for tup in itertools.product(range(4), repeat=2):
        xt = apply_per_image(act, x, list(tup))
        assert torch.allclose(prod(xt), y, atol=ATOL), tup
        with torch.no_grad():
            errs_plain.append(float((joint(xt) - joint(x)).abs().max()))
    assert max(errs_plain) > 1e-4
    assert prod.trunk_passes() == 2 * 16
    # explicit reference for one example
    ref = sum(joint(apply_per_image(act, x, list(t))) for t in itertools.product(range(4), repeat=2)) / 16
    assert torch.allclose(y, ref, atol=ATOL)


def test_lambda_branch_trains_only_fusion_and_lambda() -> None:
    cnn = _cnn()
    model = MultiImageIS(cnn.features, num_images=2, num_classes=3, hidden=8, branch="lambda")
    x = torch.randn(4, 2, 1, 8, 8)
    model(x).sum().backward()
    assert all(p.grad is None for p in cnn.parameters())
    lam = model.branch.lambda_net  # type: ignore[union-attr]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lam.parameters())


def test_bad_shapes() -> None:
    model = MultiImageIS(_cnn().feature_maps, num_images=2, num_classes=3)
    with pytest.raises(EquirlError, match="expected"):
        model(torch.randn(2, 3, 1, 8, 8))
