"""The one exception type for problems a user can cause and fix (bad input, missing files, bad config)."""

_WORKER_PREFIX = "Caught Mtl3dError in DataLoader worker"


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
