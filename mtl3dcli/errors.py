"""The one exception type for problems a user can cause and fix (bad input, missing files, bad config), and the two
ways a long command ends early on purpose: Ctrl-C (`Interrupted`) and a full disk (`DiskFull`)."""

from __future__ import annotations

import errno

_WORKER_PREFIX = "Caught Mtl3dError in DataLoader worker"
_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# How writers that hide the errno report it: Python's strerror texts, Rust's io::Error (safetensors)
_FULL_TEXTS = {"No space left on device": _FULL_ERRNOS[errno.ENOSPC], "os error 28": _FULL_ERRNOS[errno.ENOSPC],
               "Disk quota exceeded": _FULL_ERRNOS[errno.EDQUOT], "os error 122": _FULL_ERRNOS[errno.EDQUOT]}


class Mtl3dError(Exception):
    """A user-facing error: the CLI prints its message as one red line on stderr and exits with code 2.

    A DataLoader worker that raises one is re-raised in the main process by PyTorch as `Mtl3dError(text)` where
    text is "Caught Mtl3dError in DataLoader worker process N. Original Traceback ...": the original one-line
    message is recovered from its last line, so a bad file found by a worker reads exactly like one found in the
    main process."""

    def __init__(self, message: str = ""):
        if message.startswith(_WORKER_PREFIX) and "Mtl3dError: " in message:
            message = message.rstrip().rsplit("Mtl3dError: ", 1)[1]
        super().__init__(message)


class Interrupted(Mtl3dError):
    """A run stopped by Ctrl-C or SIGTERM after saving its checkpoint (callers that drive several runs, such as
    `mtl3d study`, say how to continue their own work)."""


class DiskFull(Mtl3dError):
    """A write that found the disk full (ENOSPC) or the user's quota spent (EDQUOT): `path` is the file that could
    not be written, `reason` which of the two. Nothing half-written is left under the file's name."""

    def __init__(self, message: str = "", path: str | None = None, reason: str = _FULL_ERRNOS[errno.ENOSPC]):
        super().__init__(message)
        self.path, self.reason = path, reason

    @classmethod
    def writing(cls, path: object, reason: str, hint: str = "free some space and run the command again") -> DiskFull:
        return cls(f"disk full: cannot write {path} ({reason}); {hint}", str(path), reason)

    def __reduce__(self):  # keep path and reason across processes (study workers, dataset builders)
        return type(self), (self.args[0] if self.args else "", self.path, self.reason)


def disk_full_reason(exc: BaseException | None) -> str | None:
    """"no space left on device" or "disk quota exceeded" when `exc`, or an exception it was raised from or while
    handling, is ENOSPC / EDQUOT, however the writer reports it (torch.save raises a RuntimeError while handling
    the OSError, safetensors names the OS error in its message); None otherwise."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return _FULL_ERRNOS[exc.errno]
        if not isinstance(exc, Mtl3dError):
            text = str(exc)
            for pattern, reason in _FULL_TEXTS.items():
                if pattern in text:
                    return reason
        exc = exc.__cause__ or exc.__context__
    return None
