"""Progress reporting for long library calls: an optional ``progress(done, total)`` callback.

Library functions take ``progress: ProgressFn | None = None`` and call it as work completes; they never
print or touch a console (the CLI turns the callback into a progress bar). A phase that takes a while
without a bar (a final evaluation, a download) is announced on the :data:`STATUS` logger, which the CLI
shows as a plain line on a terminal, as it shows progress bars (other ``INFO`` records only with ``-v``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["STATUS", "ProgressFn", "rich_bar", "status", "subtask"]

#: the logger of "what is happening now" lines (INFO), shown by the CLI without ``-v``
STATUS = "equirl.status"

#: ``progress(done, total)``: units of work done so far out of ``total``
ProgressFn = Callable[[int, int], None]


def status(message: str, *args: Any) -> None:
    """Announce a phase of a long call (``status("final evaluation: %d episodes", 10)``): an INFO record of
    the :data:`STATUS` logger (library code never prints)."""
    logging.getLogger(STATUS).info(message, *args)


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


@contextlib.contextmanager
def rich_bar(console: Any, description: str, total: float | None) -> Iterator[Callable[..., None] | None]:
    """The one transient rich progress bar of equirl, on ``console`` while the block runs.

    Yields ``update(**fields)`` (``rich.progress.Progress.update`` of the bar's task: ``advance=``,
    ``completed=``, ``total=``, ``description=``), or ``None`` when ``console`` is ``None`` or not a
    terminal (output piped to a file), where nothing is shown. Only the CLI and display code pass a console.

    :param description: the bar's label.
    :param total: units of work (``None``: indeterminate until ``update(total=...)``).
    """
    if console is None or not (console.is_terminal or getattr(console, "is_jupyter", False)):
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def update(**fields: Any) -> None:
            bar.update(task, **fields)

        yield update
