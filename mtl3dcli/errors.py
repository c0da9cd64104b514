"""The one exception type for problems a user can cause and fix (bad input, missing files, bad config)."""


class Mtl3dError(Exception):
    """A user-facing error: the CLI prints its message as one red line on stderr and exits with code 2."""
