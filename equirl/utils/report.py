"""The one output layer of every benchmark: rich tables, CSV, JSON rows, PNG plots and progress bars.

* :class:`BenchTable` -- a ``rich`` renderable of result rows. Cells are never cut: a table wider than the
  console first wraps its headers, then splits into column groups that each repeat the leading key
  columns (the method / env names), so every name appears whole even on an 80-column terminal.
  Cells are plain text (a label such as ``"[verbs]"`` is not read as markup) unless a
  :class:`Column` asks for markup.
* :func:`write_csv` -- an atomic CSV writer (:func:`equirl.utils.io.atomic_write`).
* :func:`json_rows` -- rows as a JSON string (for ``--json``).
* :func:`save_plot` -- a PNG drawn on a bare matplotlib ``Figure`` (Agg canvas, no pyplot state).
* :func:`progress` -- a transient progress bar on the console the CLI passes; silent without one.

The benchmarks return rows or :class:`BenchTable` objects; only the CLI prints them.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from equirl.utils.io import atomic_write, atomic_write_text, json_dumps

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console, ConsoleOptions, RenderResult

__all__ = ["BenchTable", "Column", "Step", "json_rows", "progress", "save_plot", "write_csv"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """How one column of a :class:`BenchTable` is shown.

    :param key: the row key.
    :param header: the header (default: ``key`` with ``_`` read as a space, so that it can wrap).
    :param fmt: a format spec applied to the value (``".2f"``) or a function of the whole row
        (``lambda r: f"{r['mean']:.1f} ± {r['std']:.1f}"``); default ``str(value)``.
    :param justify: ``"left"`` or ``"right"``; default: right when every value is a number.
    :param markup: read the cells as rich markup (``"[green]ok[/]"``).
    """

    key: str
    header: str | None = None
    fmt: str | Callable[[Row], str] | None = None
    justify: str | None = None
    markup: bool = False

    @property
    def title(self) -> str:
        """The header text."""
        return self.header if self.header is not None else self.key.replace("_", " ")

    def cell(self, row: Row) -> str:
        """The text of this column in ``row`` (empty when the row lacks the key)."""
        if callable(self.fmt):
            return self.fmt(row)
        if self.key not in row:
            return ""
        value = row[self.key]
        return format(value, self.fmt) if self.fmt else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BenchTable:
    """Result rows as a ``rich`` renderable that never truncates a cell.

    :param rows: the result rows (dicts).
    :param title: the table title.
    :param columns: keys or :class:`Column` specs to show, in order (default: every key of the rows).
    :param keys: how many leading columns identify a row (repeated in every column group when the
        table is split to fit the console); default 1.
    :param note: a line printed under the table.
    """

    #: table border + padding per column (rich's default box: one rule and two spaces per column)
    _PER_COLUMN = 3

    def __init__(
        self,
        rows: Sequence[Row],
        title: str,
        columns: Sequence[str | Column] | None = None,
        keys: int = 1,
        note: str | None = None,
    ) -> None:
        self.rows = list(rows)
        self.title = title
        names = columns if columns is not None else list(dict.fromkeys(k for r in self.rows for k in r))
        self.columns = [c if isinstance(c, Column) else Column(c) for c in names]
        self.keys = max(0, min(keys, len(self.columns)))
        self.note = note

    @property
    def row_count(self) -> int:
        """The number of data rows."""
        return len(self.rows)

    def cells(self) -> list[list[str]]:
        """The cell texts, one list per row (markup not yet parsed)."""
        return [[c.cell(r) for c in self.columns] for r in self.rows]

    def markdown(self) -> str:
        """The table as GitHub Markdown (title as a bold line; the cells as printed, markup removed)."""
        from rich.text import Text

        def esc(t: str) -> str:
            return Text.from_markup(t).plain.replace("|", "\\|") if t else ""

        lines = [f"**{self.title}**", "", "| " + " | ".join(esc(c.title) for c in self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(esc(t) for t in row) + " |" for row in self.cells()]
        return "\n".join(lines) + "\n"

    def _justify(self, i: int) -> str:
        col = self.columns[i]
        if col.justify is not None:
            return col.justify
        values = [r[col.key] for r in self.rows if col.key in r]
        return "right" if values and not callable(col.fmt) and all(map(_is_number, values)) else "left"

    def _widths(self, texts: list[list[Any]]) -> list[tuple[int, int, int]]:
        """Per column: (widest cell, longest header word, whole header)."""
        out = []
        for i, col in enumerate(self.columns):
            header = col.title
            cell = max((t[i].cell_len for t in texts), default=0)
            word = max((len(w) for w in header.split()), default=0)
            out.append((cell, word, len(header)))
        return out

    def _groups(self, widths: list[tuple[int, int, int]], max_width: int) -> list[list[int]]:
        """Split the non-key columns into groups that fit ``max_width`` next to the key columns."""
        need = [max(c, w) + self._PER_COLUMN for c, w, _ in widths]
        base = 1 + sum(need[: self.keys])
        groups: list[list[int]] = []
        current: list[int] = []
        used = base
        for i in range(self.keys, len(self.columns)):
            if current and used + need[i] > max_width:
                groups.append(current)
                current, used = [], base
            current.append(i)
            used += need[i]
        if current or not groups:
            groups.append(current)
        return [list(range(self.keys)) + g for g in groups]

    def _table(self, idx: list[int], texts: list[list[Any]], title: str, max_width: int) -> Any:
        from rich.table import Table

        widths = self._widths(texts)
        natural = [max(widths[i][0], widths[i][2]) for i in idx]
        minimal = [max(widths[i][0], widths[i][1]) for i in idx]
        room = max_width - 1 - self._PER_COLUMN * len(idx)
        fixed: list[int | None] = [None] * len(idx)
        if sum(natural) > room:
            # headers wrap: start from the narrowest widths that keep every cell whole and hand the
            # room left to the columns whose headers are wrapped
            fixed = list(minimal)
            spare = room - sum(minimal)
            for j in sorted(range(len(idx)), key=lambda j: natural[j] - minimal[j]):
                if spare <= 0:
                    break
                add = min(spare, natural[j] - minimal[j])
                fixed[j] = minimal[j] + add
                spare -= add
        table = Table(title=title)
        for j, i in enumerate(idx):
            col = self.columns[i]
            table.add_column(
                col.title,
                justify=self._justify(i),  # type: ignore[arg-type]
                overflow="fold",
                width=fixed[j],
                min_width=minimal[j],
            )
        for t in texts:
            table.add_row(*(t[i] for i in idx))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        if not self.rows:
            yield Text(f"{self.title}: nothing to run")
            return
        texts = [
            [Text.from_markup(s) if c.markup else Text(s) for c, s in zip(self.columns, row)]
            for row in self.cells()
        ]
        groups = self._groups(self._widths(texts), options.max_width)
        for n, idx in enumerate(groups):
            title = self.title if n == 0 else f"{self.title} (continued)"
            yield self._table(idx, texts, title, options.max_width)
        if self.note:
            yield Text(self.note)


def write_csv(
    path: str | Path,
    rows: Sequence[Row],
    columns: Sequence[str] | None = None,
    float_format: str | None = None,
) -> Path | None:
    """Write ``rows`` as CSV atomically (nothing is written for no rows).

    :param columns: the fields, in order (default: every key of the rows, in first-seen order); other
        keys are left out and missing ones left empty.
    :param float_format: a format spec for float values (``".4f"``); default ``str``.
    :returns: the path written, or ``None`` when ``rows`` is empty.
    """
    if not rows:
        return None
    fields = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> Any:
        return format(v, float_format) if float_format and isinstance(v, float) else v

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: cell(v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def json_rows(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """``rows`` (restricted to ``columns`` when given) as a JSON array."""
    return json_dumps([dict(r) if columns is None else {k: r[k] for k in columns} for r in rows])


def save_plot(path: str | Path, draw: Callable[[Figure], None], figsize: tuple[float, float]) -> Path:
    """Draw a PNG atomically: ``draw(fig)`` fills a bare ``matplotlib.figure.Figure`` (rendered by the
    Agg canvas; pyplot and the global backend are left alone).

    :param figsize: inches ``(width, height)``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    draw(fig)
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


class Step(Protocol):
    """Advances a progress bar: ``step()`` one unit, ``step(0, "label")`` relabels it."""

    def __call__(self, advance: float = 1, description: str | None = None) -> None: ...


def _silent(advance: float = 1, description: str | None = None) -> None:
    return None


@contextlib.contextmanager
def progress(console: Console | None, description: str, total: float | None) -> Iterator[Step]:
    """A transient rich progress bar on ``console`` (the CLI's); with ``None``, or a console that is not a
    terminal (output piped to a file), nothing is shown.

    :param description: the bar's label (``step(0, "...")`` changes it).
    :param total: units of work (``None``: an indeterminate bar).
    :yields: a :class:`Step`.
    """
    from equirl.utils.progress import rich_bar

    with rich_bar(console, description, total) as update:
        if update is None:
            yield _silent
            return
        bar_update = update

        def step(advance: float = 1, description: str | None = None) -> None:
            if description is None:
                bar_update(advance=advance)
            else:
                bar_update(advance=advance, description=description)

        yield step
