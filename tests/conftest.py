"""Shared test setup: offline hubs, one torch thread, deterministic seeds, the shared-data fixture."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from equirl.utils.shared import shared_data_dir

torch.set_num_threads(1)

#: float32 tolerance of every equivariance test
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (:func:`~equirl.utils.shared.shared_data_dir`); skips the test when absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared data folder not available ($EQUIRL_SHARED_DATA): real-world fixture")
    return d
