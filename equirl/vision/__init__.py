"""Vision: invariant image classifiers under quarter turns and real mirrors.

* :func:`symmetrize_classifier` wraps any NCHW classifier (equitune, equizero, λ-equitune);
* :func:`fit_lambda` learns λ from a few labelled images with the backbone frozen;
* :func:`fit_canonicalizer` trains a learned canonicalizer (``method="canonicalize"``) with its prior;
* :mod:`equirl.vision.data` loads image folders (PIL) and scikit-learn's digits (no torchvision);
* :mod:`equirl.vision.clip` does CLIP zero-shot classification (``transformers``);
* :mod:`equirl.vision.multi_image` classifies K independently rotated images per example;
* :mod:`equirl.vision.config` holds the commands' config schemas (torch-free).

The names below load their modules (and torch) on first use, so ``equirl.vision.config`` can be
imported cheaply; CLIP and the multi-image models are imported from their modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "VISION_GROUPS",
    "ImageDataset",
    "SmallCNN",
    "accuracy",
    "evaluate_transforms",
    "fit_canonicalizer",
    "fit_lambda",
    "init_lambda",
    "load_cnn",
    "load_digits",
    "load_image_folder",
    "predict_logits",
    "save_cnn",
    "split_dataset",
    "symmetrize_classifier",
    "vision_action",
]

_WHERE = {
    "accuracy": "equirl.vision.classifier",
    "evaluate_transforms": "equirl.vision.classifier",
    "fit_canonicalizer": "equirl.vision.classifier",
    "fit_lambda": "equirl.vision.classifier",
    "init_lambda": "equirl.vision.classifier",
    "predict_logits": "equirl.vision.classifier",
    "symmetrize_classifier": "equirl.vision.classifier",
    "ImageDataset": "equirl.vision.data",
    "load_digits": "equirl.vision.data",
    "load_image_folder": "equirl.vision.data",
    "split_dataset": "equirl.vision.data",
    "VISION_GROUPS": "equirl.vision.groups",
    "vision_action": "equirl.vision.groups",
    "SmallCNN": "equirl.vision.models",
    "load_cnn": "equirl.vision.models",
    "save_cnn": "equirl.vision.models",
}

if TYPE_CHECKING:  # pragma: no cover
    from equirl.vision.classifier import (
        accuracy,
        evaluate_transforms,
        fit_canonicalizer,
        fit_lambda,
        init_lambda,
        predict_logits,
        symmetrize_classifier,
    )
    from equirl.vision.data import ImageDataset, load_digits, load_image_folder, split_dataset
    from equirl.vision.groups import VISION_GROUPS, vision_action
    from equirl.vision.models import SmallCNN, load_cnn, save_cnn


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'equirl.vision' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
