"""Vision: invariant image classifiers under quarter turns and real mirrors.

* :func:`symmetrize_classifier` wraps any NCHW classifier (equitune, equizero, λ-equitune);
* :func:`fit_lambda` learns λ from a few labelled images with the backbone frozen;
* :func:`fit_canonicalizer` trains a learned canonicalizer (``method="canonicalize"``) with its prior;
* :mod:`equirl.vision.data` loads image folders (PIL) and scikit-learn's digits (no torchvision);
* :mod:`equirl.vision.clip` does CLIP zero-shot classification (``transformers``);
* :mod:`equirl.vision.multi_image` classifies K independently rotated images per example.

CLIP and the multi-image models are imported lazily from their modules.
"""

from __future__ import annotations

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
