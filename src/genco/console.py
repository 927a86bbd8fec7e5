"""Terminal output: progress bars only on a terminal, and silence when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Tables and summaries go to stdout; progress, notes and errors to stderr so that piped output stays clean.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def note(message: str) -> None:
    """A line for the person at the terminal (stderr); silenced by --quiet."""
    if not _quiet:
        err.print(message)


def warn(message: str) -> None:
    """Something the user should know about their data or options; shown even with --quiet."""
    err.print(f"[bold yellow]warning:[/bold yellow] {escape(message)}")


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def update(self, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)


@contextmanager
def progress(description: str, total: float | None) -> Iterator[_Bar]:
    """A progress bar on stderr when it is a terminal and not --quiet; a silent stand-in otherwise."""
    if _quiet or not sys.stderr.isatty():
        yield _Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total, status="")
        yield _Bar(bar, task)
