"""Shared test setup: offline hubs, one torch thread, deterministic seeds, the shared-data fixture."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from equirl.utils.shared import shared_data_dir

torch.set_num_threads(1)

# SB3's ``learn`` without a logger of its own makes an empty ``SB3-{time}`` folder in the temp dir per call
# (thousands per run of the suite): one folder per test process instead, removed at exit
_SB3_LOGS = tempfile.mkdtemp(prefix="equirl-tests-sb3-")
os.environ["SB3_LOGDIR"] = _SB3_LOGS
atexit.register(shutil.rmtree, _SB3_LOGS, True)

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


# --- hypothesis profiles of the CLI fuzzer (tests/test_fuzz.py picks one per test; none is loaded globally)
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

#: no shrinking: one example takes ~1 s, shrinking a failure minutes; the failure message shows the input
_FUZZ_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)

#: CI: few examples, reproducible (derandomized); the SIGALRM deadline of tests/fuzz_support.py, not
#: hypothesis' own (flaky with imports and env construction)
settings.register_profile(
    "equirl-fuzz-ci",
    max_examples=25,
    derandomize=True,
    phases=_FUZZ_PHASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
#: `make fuzz` (HYPOTHESIS_PROFILE=fuzz): many random examples ($FUZZ_EXAMPLES, default 300 per test)
settings.register_profile(
    "equirl-fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    derandomize=False,
    phases=_FUZZ_PHASES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)
