"""Rich progress bars shared by the data commands: a context manager that yields a `(done, total)` callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)


@contextmanager
def progress_bar(label: str, console: Console, bytes_mode: bool = False) -> Iterator[Callable[[int, int], None]]:
    """Yields `advance(done, total)`; shows counts (or bytes and speed with `bytes_mode`) and an ETA."""
    columns = [TextColumn(f"[bold]{label}"), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if bytes_mode else [MofNCompleteColumn()]
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield advance
