"""The penultimate features of a torch classifier, found automatically (λ's and the scorer's input).

:func:`penultimate_features` returns a callable ``images -> (B, D)`` that runs the classifier up to the
input of its last linear layer and stops there (a forward pre-hook raises after capturing it, so the
head itself is not computed). Where that layer is found, in order:

* a ``features_extractor`` sub-module (Stable-Baselines3 policies): its output;
* a module named ``fc`` / ``classifier`` / ``head`` (ResNet, AlexNet/VGG/DenseNet, ViT-style heads):
  the input of its last ``nn.Linear`` (or of the module itself when it is one);
* an ``nn.Sequential`` ending in an ``nn.Linear``: the input of that layer;
* otherwise the last ``nn.Linear`` registered in the model.

Example::

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> feats = penultimate_features(net)
    >>> feats(torch.randn(2, 1, 4, 4)).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from equirl.errors import EquirlError

__all__ = ["find_feature_layer", "penultimate_features"]

_HEAD_NAMES = ("fc", "classifier", "head")


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once the features are captured."""

    def __init__(self, value: Tensor) -> None:
        super().__init__("features captured")
        self.value = value


def _last_linear(module: nn.Module) -> nn.Linear | None:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def find_feature_layer(net: nn.Module) -> tuple[nn.Module, str]:
    """The layer whose input (``"input"``) or output (``"output"``) are ``net``'s penultimate features.

    :param net: a classifier (or an SB3 policy / Q-network with a ``features_extractor``).
    :returns: ``(layer, "input" | "output")``.
    :raises EquirlError: when ``net`` has no linear layer to hook.
    """
    fe = getattr(net, "features_extractor", None)
    if isinstance(fe, nn.Module):
        return fe, "output"
    for name in _HEAD_NAMES:
        head = getattr(net, name, None)
        if isinstance(head, nn.Module):
            lin = head if isinstance(head, nn.Linear) else _last_linear(head)
            if lin is not None:
                return lin, "input"
    if isinstance(net, nn.Sequential) and len(net) and isinstance(net[-1], nn.Linear):
        return net[-1], "input"
    lin = _last_linear(net)
    if lin is None:
        raise EquirlError(
            f"cannot find the penultimate layer of {type(net).__name__} (no nn.Linear); "
            "pass features=callable"
        )
    return lin, "input"


def penultimate_features(net: nn.Module) -> Callable[[Tensor], Tensor]:
    """A callable ``x -> (B, D)`` features of ``net`` at its penultimate layer (see the module doc).

    The hook is registered for one call and removed afterwards; features are flattened to ``(B, D)``.

    :param net: the classifier.
    :raises EquirlError: when no layer to hook is found.
    """
    layer, where = find_feature_layer(net)

    def features(x: Tensor) -> Tensor:
        def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
            raise _Captured(args[0])

        def post(_m: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
            raise _Captured(out)

        handle = (
            layer.register_forward_pre_hook(pre) if where == "input" else layer.register_forward_hook(post)
        )
        try:
            net(x)
        except _Captured as c:
            z = c.value
        else:  # pragma: no cover - the hooked layer is always reached by a forward pass
            raise EquirlError(f"{type(net).__name__}'s forward pass never reached its {type(layer).__name__}")
        finally:
            handle.remove()
        if not isinstance(z, Tensor):
            raise EquirlError(f"the features of {type(net).__name__} are not a tensor")
        return z.reshape(z.shape[0], -1) if z.dim() != 2 else z

    features.__qualname__ = f"penultimate_features({type(net).__name__})"
    return features
