"""Run the `mtl3d` entry point in this process, as a user would call it: (exit code, stdout, stderr)."""

from __future__ import annotations

import sys

from mtl3dcli import cli


def invoke(args: list, capsys) -> tuple[int, str, str]:
    argv, sys.argv = sys.argv, ["mtl3d", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
