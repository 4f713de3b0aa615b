"""A small CNN that plays the "pretrained CNN" offline, and its checkpoints.

The network exposes ``features(x)`` (the backbone) and ``head`` (a linear classifier) so that
λ-equitune can look at the frozen features of each transformed image (:func:`equirl.vision.fit_lambda`).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from equirl.errors import CheckpointError, checkpoint_load_error
from equirl.utils.io import atomic_write_bytes

__all__ = ["SmallCNN", "load_cnn", "save_cnn"]

_FORMAT = "equirl.vision.SmallCNN/1"


class SmallCNN(nn.Module):
    """Conv(3x3)-ReLU-pool twice, then a hidden layer and a linear head.

    :param in_channels: image channels.
    :param num_classes: number of classes.
    :param image_size: square input size (must be divisible by 4).
    :param width: channels of the first conv (the second has twice as many).
    :param hidden: size of the feature vector returned by :meth:`features`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 16,
        width: int = 16,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise CheckpointError(f"image_size must be divisible by 4, got {image_size}")
        self.hparams: dict[str, int] = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "image_size": image_size,
            "width": width,
            "hidden": hidden,
        }
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (image_size // 4) ** 2, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def feature_maps(self, x: Tensor) -> Tensor:
        """``(B, 2·width, size/4, size/4)`` convolutional feature maps (before flattening)."""
        return self.backbone[:6](x)

    def features(self, x: Tensor) -> Tensor:
        """``(B, hidden)`` backbone features."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def save_cnn(model: SmallCNN, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save ``model`` (hyper-parameters + weights + ``meta``) atomically to ``path``."""
    buf = io.BytesIO()
    torch.save(
        {
            "format": _FORMAT,
            "hparams": model.hparams,
            "state_dict": model.state_dict(),
            "meta": dict(meta or {}),
        },
        buf,
    )
    return atomic_write_bytes(path, buf.getvalue())


def load_cnn(path: str | Path) -> tuple[SmallCNN, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_cnn`; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (create one with `equirl vision pretrain CONFIG`)"
        )
    try:  # weights only: a pickled Python object in the file is refused, never run
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds pickled Python objects, not only tensors; not loaded (weights only)"
        ) from None
    except Exception as exc:
        raise checkpoint_load_error(path, exc) from None
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not an equirl vision CNN checkpoint")
    try:
        model = SmallCNN(**blob["hparams"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit SmallCNN: {str(exc).splitlines()[0]}"
        ) from None
    model.eval()
    return model, dict(blob.get("meta", {}))
