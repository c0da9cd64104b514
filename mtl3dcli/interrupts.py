"""Ctrl-C (SIGINT) and SIGTERM in long commands: stop within seconds, keep what is consistent, say how to go on.

A `StopRequest` turns the first signal into a flag. The training loop checks it at a step boundary, where it saves
its state. Inside `immediate()` (a validation or an evaluation: nothing there is worth finishing) the request
raises at once, unless the main thread is inside the standard library's process and queue machinery or a
DataLoader's: then it raises at the first moment it is not (checked every 20 ms), so no worker pool or pipe is left
half set up, which would print a worker's traceback after our one line. A second Ctrl-C gives up at once.
DataLoader workers ignore Ctrl-C (`ignore_in_worker`): a terminal sends it to the whole process group, and the main
process, which decides what to save, shuts its workers down itself. A process that runs one job after another
(a `study --jobs` worker) calls `remember_interrupts()`: a Ctrl-C that came while it was idle or in an earlier
job then stops the jobs that start after it too (`interrupted()`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_S = 0.02
_MEMORY = {"on": False, "interrupted": False}  # see remember_interrupts
_UNSAFE = (f"{os.sep}multiprocessing{os.sep}", f"{os.sep}concurrent{os.sep}futures{os.sep}process.py",
           f"{os.sep}torch{os.sep}utils{os.sep}data{os.sep}")


def in_process_machinery(frame: FrameType | None) -> bool:
    """Whether `frame` or a caller runs code of multiprocessing, a process pool or a DataLoader."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _UNSAFE):
            return True
        frame = frame.f_back
    return False


class StopRequest:
    """While entered, SIGINT/SIGTERM set `requested` (in the main thread; elsewhere signals keep their handlers),
    also in a process that otherwise ignores them, such as an idle `study --jobs` worker."""

    def __init__(self):
        self.requested = interrupted()
        self._previous: dict[int, Any] = {}
        self._stop: Callable[[], BaseException] | None = None

    def __enter__(self) -> StopRequest:
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: keep default behaviour
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame: FrameType | None) -> None:
        if self.requested:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.requested = _MEMORY["interrupted"] = True
        self._raise_when_safe(signal.SIGALRM, frame)

    def _raise_when_safe(self, signum, frame: FrameType | None) -> None:
        if self._stop is None:
            return
        if in_process_machinery(frame):
            signal.setitimer(signal.ITIMER_REAL, RETRY_S)  # look again shortly
            return
        stop, self._stop = self._stop, None
        raise stop()

    @contextlib.contextmanager
    def immediate(self, stop: Callable[[], BaseException] = KeyboardInterrupt) -> Iterator[None]:
        """Within the block a stop request (also one that came before it) raises `stop()` at once."""
        if self.requested:
            raise stop()
        try:
            previous = signal.signal(signal.SIGALRM, self._raise_when_safe)
        except ValueError:  # not the main thread: no signal reaches this block
            yield
            return
        self._stop = stop
        try:
            yield
        finally:
            self._stop = None
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _remember(signum, frame) -> None:
    _MEMORY["interrupted"] = True


def remember_interrupts() -> None:
    """From now on this process remembers a Ctrl-C: idle, it records it instead of dying; every later
    `StopRequest` starts as requested and `interrupted()` is true, so no further job starts."""
    _MEMORY["on"] = True
    signal.signal(signal.SIGINT, _remember)


def interrupted() -> bool:
    """Whether a process that remembers interrupts (`remember_interrupts`) has been interrupted."""
    return _MEMORY["on"] and _MEMORY["interrupted"]


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the worker ignores Ctrl-C; the main process stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
