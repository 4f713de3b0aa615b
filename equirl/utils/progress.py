"""Progress reporting for long library calls: an optional ``progress(done, total)`` callback.

Library functions take ``progress: ProgressFn | None = None`` and call it as work completes; they never
print or touch a console (the CLI turns the callback into a progress bar).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressFn", "subtask"]

#: ``progress(done, total)``: units of work done so far out of ``total``
ProgressFn = Callable[[int, int], None]


def subtask(progress: ProgressFn | None, offset: int, total: int) -> ProgressFn | None:
    """The callback for one part of a larger job: a part's ``(done, n)`` is reported as
    ``(offset + done, total)``. ``None`` stays ``None``.

    >>> seen = []
    >>> subtask(lambda d, t: seen.append((d, t)), 10, 30)(4, 10)
    >>> seen
    [(14, 30)]
    """
    if progress is None:
        return None
    report = progress
    return lambda done, n: report(offset + done, total)
