"""Strict YAML schemas of the vision commands (``equirl vision pretrain / finetune / eval``) and the
method names they take.

Configs are read by :func:`equirl.config.load_config`: unknown keys and wrong types are one-line errors.
This module imports neither torch nor the vision models, so the command line can build its parsers
from it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from equirl.config import FieldError, Range
from equirl.registry import (
    AUTO,
    BASE,
    CANONICALIZE,
    EQUITUNE,
    EQUIZERO,
    LAMBDA,
    canonical_method,
    get_method,
    method_names,
)

__all__ = [
    "CLIP_METHODS",
    "DEFAULT_CLASSIFIER_CANDIDATES",
    "EVAL_METHODS",
    "VISION_METHODS",
    "DataConfig",
    "FinetuneConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
    "load_data_config",
]

#: the methods of the vision commands (a single group: no multigroup)
VISION_METHODS = method_names(product_group=False)
#: what ``vision eval`` takes: :data:`VISION_METHODS` and ``auto`` (pick by accuracy on randomly
#: transformed held-out images)
EVAL_METHODS = (*VISION_METHODS, AUTO)
#: the training-free methods of CLIP zero-shot (λ and the canonicalizers need labelled images)
CLIP_METHODS = tuple(m for m in method_names(learned_scorer=False) if not get_method(m).learned_weights)
#: the candidates ``auto`` tries by default, cheapest first (the order breaks ties)
DEFAULT_CLASSIFIER_CANDIDATES: tuple[str, ...] = (BASE, CANONICALIZE, EQUIZERO, EQUITUNE, LAMBDA)


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from.

    :param source: ``"digits"`` (scikit-learn's bundled digits) or ``"folder"`` (``root/<class>/<image>``).
    :param root: the image folder (``source: folder``).
    :param size: square image side after resizing.
    :param mode: ``"L"`` (grey) or ``"RGB"`` for image folders.
    :param n_test: held-out test images (seeded split).
    :param split_seed: seed of the train/test split.
    """

    source: Literal["digits", "folder"] = "digits"
    root: str | None = None
    size: int = 16
    mode: Literal["L", "RGB"] = "L"
    n_test: Annotated[int, Range(ge=1)] = 500
    split_seed: Annotated[int, Range(ge=0)] = 0

    def __post_init__(self) -> None:
        if self.source == "folder" and not self.root:
            raise ValueError("data.root is required when data.source is 'folder'")
        if self.size < 8 or self.size % 4 or self.size > 4096:
            raise FieldError("size", self.size, "must be a multiple of 4 in [8, 4096]")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings."""

    epochs: Annotated[int, Range(ge=0, le=1_000_000)] = 12
    steps: Annotated[int, Range(ge=0, le=1_000_000_000)] = 0
    batch_size: Annotated[int, Range(ge=1, le=1_000_000)] = 64
    lr: Annotated[float, Range(gt=0)] = 3e-3
    weight_decay: Annotated[float, Range(ge=0)] = 0.0
    seed: Annotated[int, Range(ge=0)] = 0


@dataclass(frozen=True)
class ModelConfig:
    """The small CNN's size."""

    width: Annotated[int, Range(ge=1, le=100_000)] = 16
    hidden: Annotated[int, Range(ge=1, le=1_000_000)] = 64


@dataclass(frozen=True)
class PretrainConfig:
    """``equirl vision pretrain``: an upright-only CNN (the "pretrained model").

    :param threads: torch threads for the command (the CLI sets them; the library leaves torch's global
        state alone).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/vision/cnn_digits.pt"
    threads: Annotated[int, Range(ge=1, le=4096)] = 1


@dataclass(frozen=True)
class FinetuneConfig:
    """``equirl vision finetune``: symmetrize a pretrained CNN and finetune backbone and/or λ.

    :param checkpoint: the pretrained CNN (from ``equirl vision pretrain``).
    :param group: ``rot90``, ``rot180``, ``mirror`` or ``rot90+mirror``.
    :param method: ``plain`` (no symmetrization), ``equitune``, ``equizero``, ``lambda``, ``canonicalize``
        or ``auto`` (fit and score ``candidates`` on randomly transformed held-out images of the
        ``n_train`` ones, keep the best; ties go to the cheapest; backbone frozen).
    :param candidates: the methods ``auto`` tries, cheapest first (default: base, canonicalize,
        equizero, equitune, lambda).
    :param proxy: equizero's proxy (``entropy`` or ``max_prob``).
    :param train_backbone: finetune the CNN's weights.
    :param train_lambda: train λ (method ``lambda``) or the canonicalizer's scorer (method ``canonicalize``).
    :param prior_weight: weight of the canonicalizer's prior towards the identity (method ``canonicalize``).
    :param task_weight: weight of the task loss when training the canonicalizer (0: prior only).
    :param n_train: labelled training images used (taken from the train split).
    :param augment: transform each training image by a random group element (matters only for ``plain``).
    :param val_fraction: when fitting λ or the scorer alone, hold out this fraction of the ``n_train``
        images, keep the best λ / scorer on it and restore it (0: keep the last one).
    :param patience: stop the λ / scorer fit after this many validation scores without improvement.
    :param lambda_reg: weight of λ's pull toward uniform weights (``KL(uniform || λ)``).
    :param out: where to save the finetuned model (atomically); ``null`` to skip.
    :param threads: torch threads for the command (the CLI sets them).
    """

    checkpoint: str = "runs/vision/cnn_digits.pt"
    data: DataConfig = field(default_factory=DataConfig)
    group: str = "rot90"
    method: str = LAMBDA
    candidates: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSIFIER_CANDIDATES))
    proxy: Literal["entropy", "max_prob"] = "entropy"
    train_backbone: bool = False
    train_lambda: bool = True
    prior_weight: Annotated[float, Range(ge=0)] = 1.0
    task_weight: Annotated[float, Range(ge=0)] = 0.0
    n_train: Annotated[int, Range(ge=1)] = 1000
    augment: bool = True
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.0
    patience: Annotated[int, Range(ge=1)] | None = None
    lambda_reg: Annotated[float, Range(ge=0)] = 0.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0, steps=300, lr=3e-3))
    out: str | None = "runs/vision/finetuned.pt"
    threads: Annotated[int, Range(ge=1, le=4096)] = 1

    def __post_init__(self) -> None:
        from equirl.vision.groups import vision_action  # torch: only when a config is built

        vision_action(self.group)  # validates the name (GroupError is a ConfigError-like one-liner)
        object.__setattr__(self, "method", canonical_method(self.method))  # "plain" -> "base"
        if self.method not in EVAL_METHODS:
            raise ValueError(f"method must be one of {', '.join(EVAL_METHODS)}, got {self.method!r}")
        object.__setattr__(self, "candidates", [canonical_method(str(c)) for c in self.candidates])
        bad = [c for c in self.candidates if c not in VISION_METHODS]
        if bad or not self.candidates:
            raise FieldError(
                "candidates",
                bad or self.candidates,
                f"must be a non-empty list of {', '.join(VISION_METHODS)}",
            )
        if self.method == AUTO:
            if self.train_backbone:
                raise ValueError(
                    "method auto fits λ / the scorer on the frozen CNN: set train_backbone: false"
                )
            return
        if not get_method(self.method).own_weights and self.train_lambda and not self.train_backbone:
            raise ValueError(
                f"method {self.method!r} has no λ to train: set train_backbone: true or method: lambda"
            )
        if not (self.train_backbone or self.train_lambda):
            raise ValueError("nothing to train: set train_backbone and/or train_lambda to true")


def load_data_config(path: str | Path | None) -> DataConfig:
    """The ``data:`` section of a YAML config (the whole file may hold others, e.g. a finetune config),
    validated as a :class:`DataConfig`; the defaults (the digits split) when ``path`` is ``None`` or the
    file has no ``data:`` section.

    :raises ConfigError: one line when ``data`` is not a section or one of its keys is wrong.
    """
    from equirl.config import from_dict, load_yaml
    from equirl.errors import ConfigError

    if not path:
        return DataConfig()
    raw = load_yaml(path).get("data", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: `data` must be a section")
    return from_dict(DataConfig, raw, "data")
