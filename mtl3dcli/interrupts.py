"""Ctrl-C (SIGINT) and SIGTERM in long commands: stop within seconds, keep what is consistent, say how to go on.

- Training (`StopRequest`): a signal asks the loop to stop at the next step boundary, where the state is saved;
  inside `immediate()` (validation: nothing there is worth finishing) it stops at once. A second Ctrl-C gives up.
- DataLoader workers ignore Ctrl-C (`ignore_in_worker`): a terminal sends it to the whole process group, and the
  main process, which decides what to save, shuts its workers down itself (in a second or two).
- `default_interrupt()`: Python's own Ctrl-C (KeyboardInterrupt) for a block, also in processes that otherwise
  ignore it, such as an idle `study --jobs` worker that is now evaluating a run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(BaseException):
    """Raised by `StopRequest` inside `immediate()`; a BaseException, so no `except Exception` swallows it."""


class StopRequest:
    """SIGINT/SIGTERM set `requested`; the training loop stops at the next step boundary and saves a consistent
    checkpoint. Outside the main thread (a test runner) signals keep their handlers."""

    def __init__(self):
        self.requested = False
        self._immediate = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: keep default behaviour
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.requested = True
        if self._immediate:
            raise StopNow

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """Within the block a stop request raises `StopNow` at once (also one that came just before it)."""
        if self.requested:
            raise StopNow
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the worker ignores Ctrl-C; the main process stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def default_interrupt() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt inside the block (in the main thread), whatever the process did before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
