"""What the CLI prints: consoles, one-line errors, tables that keep names whole, progress bars.

The library never prints; it reports progress through an optional ``progress(done, total)`` callback,
which :func:`progress_bar` turns into a transient rich bar when the console is a terminal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["PIPE_WIDTH", "make_console", "make_table", "print_error", "progress_bar"]

#: the console width when the output is not a terminal (and ``$COLUMNS`` is unset): wide enough that
#: tables and lines written to a file or a pipe are never cut or wrapped at rich's default 80 columns
PIPE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that never hard-wraps printed text (``soft_wrap``); when it is
    not a terminal it has no colours (rich's own rule) and is :data:`PIPE_WIDTH` columns wide."""
    console = Console(stderr=stderr, soft_wrap=True)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH, no_color=True, highlight=False)


#: ANSI escape sequences some libraries put in their messages (torch's weights-only error)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def print_error(err: Console, message: str, prefix: str = "error: ") -> None:
    """Print ``message`` as exactly one line: red prefix on a terminal, plain text (no ANSI codes)
    otherwise; escape codes inside ``message`` are always dropped."""
    line = " ".join(_ANSI.sub("", message).split())
    if err.is_terminal:
        head = f"[bold red]{escape(prefix)}[/]" if prefix else ""
        err.print(head + escape(line), highlight=False, soft_wrap=True)
    else:
        stream = err.file
        stream.write(f"{prefix}{line}\n")
        stream.flush()


def make_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]] = (),
    names: int = 1,
    justify_values: str = "left",
) -> Table:
    """A table whose first ``names`` columns (env ids, methods, prompts...) are never wrapped, cut or
    ellipsised: they keep their full width and the other columns give way.

    :param title: the table title.
    :param columns: the column headers.
    :param rows: rows of cells (converted with ``str``).
    :param names: how many leading columns hold names.
    :param justify_values: ``"left"`` or ``"right"`` for the other columns.
    """
    rows = [[str(c) for c in r] for r in rows]
    t = Table(title=title)
    for i, col in enumerate(columns):
        if i < names:
            widest = max([len(col)] + [len(r[i]) for r in rows if i < len(r)])
            t.add_column(col, no_wrap=True, min_width=widest)
        else:
            t.add_column(col, justify=justify_values, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        t.add_row(*r)
    return t


@contextmanager
def progress_bar(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback for library functions, shown as a transient rich bar on
    ``console`` while the block runs (a no-op callback when ``console`` is not a terminal)."""
    from equirl.utils.progress import rich_bar

    with rich_bar(console, escape(description), None) as bar_update:
        if bar_update is None:
            yield _no_progress
            return
        show = bar_update

        def update(done: int, total: int) -> None:
            show(completed=done, total=total)

        yield update


def _no_progress(done: int, total: int) -> None:
    pass
