"""A small CNN that plays the "pretrained CNN" offline, and its checkpoints.

The network exposes ``features(x)`` (the backbone) and ``head`` (a linear classifier) so that
λ-equitune can look at the frozen features of each transformed image (:func:`equirl.vision.fit_lambda`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from equirl.errors import CheckpointError, first_cause
from equirl.utils.io import atomic_write_bytes, torch_load_weights, torch_save_bytes
from equirl.utils.weights import load_state

__all__ = ["SmallCNN", "check_cnn_memory", "cnn_param_count", "load_cnn", "save_cnn"]

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
    blob = {
        "format": _FORMAT,
        "hparams": model.hparams,
        "state_dict": model.state_dict(),
        "meta": dict(meta or {}),
    }
    return atomic_write_bytes(path, torch_save_bytes(blob))


def cnn_param_count(
    in_channels: int = 1, num_classes: int = 10, image_size: int = 16, width: int = 16, hidden: int = 64
) -> int:
    """The number of parameters of ``SmallCNN(in_channels, num_classes, image_size, width, hidden)``,
    computed without building it (a checkpoint or config declaring a huge size is refused up front)."""
    conv = in_channels * width * 9 + width + width * 2 * width * 9 + 2 * width
    fc = 2 * width * (image_size // 4) ** 2 * hidden + hidden
    return conv + fc + hidden * num_classes + num_classes


def check_cnn_memory(hparams: dict[str, int], where: str, error: type[Exception] = CheckpointError) -> int:
    """Refuse (one line naming ``where``) a CNN whose float32 weights alone exceed this machine's RAM,
    before any memory is allocated; returns the bytes its weights take."""
    from equirl.utils.io import total_ram_bytes

    need = 4 * cnn_param_count(**hparams)
    ram = total_ram_bytes()
    if ram is not None and need > ram:
        sizes = ", ".join(f"{k}={v}" for k, v in hparams.items())
        raise error(
            f"{where}: a CNN with {sizes} would need {need / 1e9:.1f} GB for its weights but this machine "
            f"has {ram / 1e9:.1f} GB of RAM; refused"
        )
    return need


def _hparams(raw: Any, path: Path) -> dict[str, int]:
    """The checkpoint's hyper-parameters, checked to be positive integers of :class:`SmallCNN`."""
    names = ("in_channels", "num_classes", "image_size", "width", "hidden")
    if not isinstance(raw, dict) or set(raw) - set(names):
        extra = sorted(map(str, set(raw) - set(names))) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"checkpoint {path} does not fit SmallCNN: unexpected hparams {extra}")
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CheckpointError(f"checkpoint {path} declares hparams {k}={v!r}: not a positive integer")
    return dict(raw)


def load_cnn(path: str | Path) -> tuple[SmallCNN, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_cnn`; returns ``(model in eval mode, meta)``.

    :raises CheckpointError: one line: missing, not a torch checkpoint (a text file...), a pickled
        Python object (weights only), not a vision CNN checkpoint, weights too large for this machine's RAM,
        or weights that do not fit.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (create one with `equirl vision pretrain CONFIG`)"
        )
    blob = torch_load_weights(path)  # weights only: a pickled Python object is refused, never run
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not an equirl vision CNN checkpoint")
    hparams = _hparams(blob.get("hparams"), path)
    check_cnn_memory(hparams, f"checkpoint {path}")
    try:
        model = SmallCNN(**hparams)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit SmallCNN: {first_cause(exc)}") from None
    load_state(model, blob.get("state_dict"), f"checkpoint {path}")
    meta = blob.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its meta is a {type(meta).__name__}, not a mapping")
    model.eval()
    return model, dict(meta)
