"""Helpers shared by the vision test modules."""

from __future__ import annotations

from typing import Any

import torch

from equirl.vision import SmallCNN
from equirl.vision.data import ImageDataset


def pretrain_small_digits() -> tuple[SmallCNN, dict[str, Any], ImageDataset, ImageDataset]:
    """A small CNN trained (seeded) on upright 8×8 digits.

    :returns: the network, its metrics, and the train and test splits.
    """
    from equirl.vision.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig
    from equirl.vision.train import load_data, pretrain

    torch.manual_seed(0)
    cfg = PretrainConfig(
        data=DataConfig(size=8, n_test=300),
        model=ModelConfig(width=8, hidden=32),
        train=TrainConfig(steps=150, lr=1e-2),
    )
    net, metrics = pretrain(cfg, save=False)
    train, test = load_data(cfg.data)
    return net, metrics, train, test
