"""Multi-image classification with independent per-image transformations.

An example is ``K`` images ``(B, K, C, H, W)``; each image may be transformed by its own element of
``G`` (independent rotations), so the symmetry group is the product ``G^K``. Two invariant designs:

* :class:`MultiImageIS` -- the first design of Baltaji, Basu, Varshney (2024), *Efficient
  Model-Agnostic Multi-Group Equivariant Networks* (TMLR): an equivariant branch per image (here the
  equitune of a convolutional trunk, ``B(x) = 1/|G| Σ_g g⁻¹·F(g·x)``, whose feature maps rotate with the
  image) followed by an invariant-symmetric (IS) fusion layer ``ρ(Σ_k φ(P z_k))``
  (:class:`equirl.symmetrizers.multigroup.ISLayer`): invariant to ``G^K`` and to the order of the
  images, for ``K·|G|`` trunk passes per example;
* :class:`ProductEquiTune` -- equitune of a joint model over the full product group: ``|G|^K`` passes
  of a model that sees all ``K`` images (``K·|G|^K`` trunk passes).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from equirl.actions import GroupAction, ImageAction, trivial_action
from equirl.errors import EquirlError
from equirl.registry import EQUITUNE, LAMBDA, canonical_method, method_names
from equirl.symmetrizers import EquiTune, LambdaEquiTune
from equirl.symmetrizers.multigroup import ISLayer
from equirl.vision.groups import vision_action

__all__ = ["JointClassifier", "MultiImageIS", "ProductEquiTune", "apply_per_image"]


def apply_per_image(action: ImageAction, x: Tensor, elements: Tensor | list[int]) -> Tensor:
    """Transform image ``k`` of every example by element index ``elements[k]`` (same for the batch) or,
    for a ``(B, K)`` tensor, each image by its own element.

    :param x: ``(B, K, C, H, W)``.
    """
    if x.dim() != 5:
        raise EquirlError(f"multi-image input must be (B, K, C, H, W), got shape {tuple(x.shape)}")
    B, K = x.shape[:2]
    idx = torch.as_tensor(elements, dtype=torch.long)
    if idx.dim() == 1 and idx.shape[0] == K:
        idx = idx.unsqueeze(0).expand(B, K)
    if tuple(idx.shape) != (B, K):
        raise EquirlError(f"need one element per image: shape (K,) or (B, K), got {tuple(idx.shape)}")
    flat = action.apply_each(x.reshape(B * K, *x.shape[2:]), idx.reshape(-1))
    return flat.view(x.shape)


class _NoGrad(nn.Module):
    """Runs a (frozen) function without building a graph."""

    def __init__(self, fn: nn.Module | Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.fn(x)


class MultiImageIS(nn.Module):
    """Equivariant branch per image + invariant-symmetric fusion (Baltaji et al.'s first design).

    :param trunk: the per-image network. With ``branch="equitune"`` it maps ``(N, C, H, W)`` images to
        square feature maps ``(N, C', H', W')`` on which the group acts spatially (e.g.
        :meth:`SmallCNN.feature_maps`), symmetrized by equitune so that ``B(g·x) = g·B(x)`` exactly, and the
        IS layer projects each map on the rotation-invariant maps. With ``branch="lambda"`` it maps images
        to feature vectors (e.g. :meth:`SmallCNN.features`) and the branch is λ-equitune over the group
        with λ on those frozen features: an invariant (trivially equivariant) feature per image that
        weights the poses the trunk reads best.
    :param num_images: images per example ``K``.
    :param num_classes: classes.
    :param group: ``rot90``, ``mirror``, ``rot90+mirror`` ... (see :func:`~equirl.vision.vision_action`).
    :param hidden: width of the IS layer's shared ``φ`` and of the classifier head.
    :param branch: ``"equitune"`` (equivariant feature maps) or ``"lambda"`` (λ-weighted invariant features).
    :param freeze_trunk: no gradient flows into the trunk (only λ and the fusion layers train).
    """

    def __init__(
        self,
        trunk: nn.Module | Callable[[Tensor], Tensor],
        num_images: int,
        num_classes: int,
        group: str | ImageAction = "rot90",
        hidden: int = 128,
        branch: str = EQUITUNE,
        freeze_trunk: bool = True,
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise EquirlError(f"num_images must be >= 1, got {num_images}")
        self.action = vision_action(group)
        self.num_images = num_images
        net: nn.Module | Callable[[Tensor], Tensor] = _NoGrad(trunk) if freeze_trunk else trunk
        fuse_action: GroupAction[Any]
        branch = canonical_method(branch) if branch in method_names(aliases=True) else branch
        if branch == EQUITUNE:
            self.branch: nn.Module = EquiTune(net, self.action, self.action)
            fuse_action = self.action
        elif branch == LAMBDA:
            self.branch = LambdaEquiTune(net, self.action, None, lambda_features=net, lambda_hidden=(hidden,))
            fuse_action = trivial_action(self.action.group)
        else:
            raise EquirlError(f"branch must be {EQUITUNE!r} or {LAMBDA!r}, got {branch!r}")
        self.branch_kind = branch
        self.fusion = ISLayer(fuse_action, out_features=hidden, hidden=hidden, num_inputs=num_images)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, num_classes))

    def branch_features(self, x: Tensor) -> Tensor:
        """``(B, K, ...)`` per-image branch outputs (equivariant maps, or invariant vectors for λ)."""
        B, K = x.shape[:2]
        z = self.branch(x.reshape(B * K, *x.shape[2:]))
        return z.view(B, K, *z.shape[1:])

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.num_images:
            raise EquirlError(f"expected (B, {self.num_images}, C, H, W) images, got shape {tuple(x.shape)}")
        z = self.branch_features(x)
        return self.head(self.fusion(*z.unbind(1)))

    def trunk_passes(self) -> int:
        """Trunk evaluations per example: ``K·|G|`` (twice that for λ, which reads the trunk's features)."""
        return self.num_images * self.action.group.order * (2 if self.branch_kind == LAMBDA else 1)


class JointClassifier(nn.Module):
    """A plain (non-invariant) multi-image classifier: concatenated per-image features -> MLP.

    :param features: per-image feature extractor ``(N, C, H, W) -> (N, D)``.
    :param feature_dim: ``D``.
    :param freeze_features: keep the extractor fixed.
    """

    def __init__(
        self,
        features: nn.Module | Callable[[Tensor], Tensor],
        feature_dim: int,
        num_images: int,
        num_classes: int,
        hidden: int = 128,
        freeze_features: bool = True,
    ) -> None:
        super().__init__()
        self.features = features
        self.freeze_features = freeze_features
        self.num_images = num_images
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim * num_images, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        B, K = x.shape[:2]
        rows = x.reshape(B * K, *x.shape[2:])
        if self.freeze_features:
            with torch.no_grad():
                f = self.features(rows)
        else:
            f = self.features(rows)
        return self.mlp(f.reshape(B, -1))


class ProductEquiTune(nn.Module):
    """Equitune over the full product group ``G^K`` acting image-wise: ``1/|G|^K Σ_{(g_1..g_K)} M(g·x)``.

    :param model: a multi-image classifier ``(B, K, C, H, W) -> (B, num_classes)``.
    :param num_images: ``K``.
    :param group: the per-image group.
    """

    def __init__(self, model: nn.Module, num_images: int, group: str | ImageAction = "rot90") -> None:
        super().__init__()
        self.model = model
        self.action = vision_action(group)
        self.num_images = num_images
        G = self.action.group.order
        self.register_buffer(
            "tuples", torch.tensor(list(itertools.product(range(G), repeat=num_images))), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.num_images:
            raise EquirlError(f"expected (B, {self.num_images}, C, H, W) images, got shape {tuple(x.shape)}")
        B, K = x.shape[:2]
        tuples: Tensor = self.tuples  # type: ignore[assignment]
        T = tuples.shape[0]
        idx = tuples.unsqueeze(1).expand(T, B, K).reshape(T * B, K)
        xs = apply_per_image(
            self.action, x.unsqueeze(0).expand(T, *x.shape).reshape(T * B, *x.shape[1:]), idx
        )
        return self.model(xs).view(T, B, -1).mean(0)

    def trunk_passes(self) -> int:
        """Per-image trunk evaluations per example: ``K·|G|^K``."""
        return self.num_images * self.action.group.order**self.num_images
