"""Timing on a fixed number of torch threads without leaving global state behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from equirl.errors import ConfigError

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` intra-op torch threads and restore the previous count afterwards.

    The benchmarks time on one thread by default (comparable numbers, a shared machine stays
    responsive); this is the only place in ``equirl`` outside the CLI that changes the count.

    :param n: threads for the block; ``None`` leaves the count as it is.
    """
    if n is None:
        yield
        return
    import torch

    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
