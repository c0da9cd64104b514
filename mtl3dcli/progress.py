"""Progress reporting: the callback types the data builders take, and the rich bars the CLI passes them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, Task,
                           TextColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.text import Text

Advance = Callable[[int, int], None]  # advance(done, total); total 0 when unknown
# progress(label) -> context manager yielding an Advance (the CLI passes `progress_bar`).
ProgressFactory = Callable[[str], AbstractContextManager[Advance]]


class RateColumn(ProgressColumn):
    """Items per second, e.g. "12.3 images/s"."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.2f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


@contextmanager
def progress_bar(label: str, console: Console, bytes_mode: bool = False,
                 unit: str | None = None) -> Iterator[Advance]:
    """Yields `advance(done, total)`; shows counts (or bytes and speed with `bytes_mode`; a rate in `unit`/s when
    given) and an ETA. Hidden when the console is not a terminal."""
    columns = [TextColumn(f"[bold]{label}"), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if bytes_mode else [MofNCompleteColumn()]
    if unit:
        columns.append(RateColumn(unit))
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield advance


@contextmanager
def stage(progress: ProgressFactory | None, label: str) -> Iterator[Advance]:
    """One progress bar for one stage (download, extract, convert); a no-op callback without a factory."""
    if progress is None:
        yield lambda done, total: None
    else:
        with progress(label) as advance:
            yield advance
