"""One folder, one writer: an exclusive OS lock on a run or study folder for as long as a command writes into it.

    with folder_lock(run_dir, "run"):   # a second writer fails at once, naming the holder's pid
        ...

The lock is `flock` on `<folder>/.mtl3d.lock`, which holds the holder's pid and host. The kernel drops it when the
holder exits, however it exits (kill -9 included), so there is no stale marker to clean up; the file itself is
removed on release. Readers (evaluate, predict, render-views) never take it. Forked children (DataLoader workers)
close their copy of the descriptor, so a killed writer's lingering workers do not keep its folder locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mtl3dcli import fileio
from mtl3dcli.errors import Mtl3dError

LOCK_NAME = ".mtl3d.lock"
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_inherited() -> None:
    """In a forked child: close (never unlock: that would release the parent's lock) the inherited descriptors."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited)


def _holder(fd: int) -> str:
    """'pid N' (and the host, when it is another machine) of the process holding the lock behind `fd`."""
    text = ""
    for _ in range(20):  # the holder writes its pid right after taking the lock
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        if text:
            break
        time.sleep(0.05)
    pid, _, host = text.partition(" ")
    if not pid:
        return "pid unknown"
    return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _acquire(path: Path, what: str) -> int:
    """Lock `path` (created if missing) and write our pid into it; Mtl3dError if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise Mtl3dError(f"{path.parent} is in use by another mtl3d process ({holder}): one {what} folder takes "
                             f"one writer at a time; wait for it to finish (or stop it), or choose another "
                             f"folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous holder removed the file between our open and our lock
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except BaseException:  # a full disk: give the lock up again, leaving no file
        os.unlink(path)
        os.close(fd)
        raise
    _HELD.add(fd)
    return fd


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold the exclusive writer lock on `folder` (created if missing) for the block. A folder this call created
    and nothing but the lock went into is removed again (with the parents it created), so a command that fails
    early leaves no empty folder."""
    folder = Path(folder)
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # innermost first
    fd = None
    try:
        with fileio.writing(folder / LOCK_NAME):
            folder.mkdir(parents=True, exist_ok=True)
            fd = _acquire(folder / LOCK_NAME, what)
        yield folder
    finally:
        if fd is not None:
            _HELD.discard(fd)
            with contextlib.suppress(OSError):
                os.unlink(folder / LOCK_NAME)  # still locked: a process that opened it meanwhile sees it is stale
            os.close(fd)
        for path in created:
            try:
                path.rmdir()  # only if empty
            except OSError:
                break
