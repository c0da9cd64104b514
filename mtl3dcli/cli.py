"""The `mtl3d` command line: one thin function per subcommand that parses options and calls the core."""

from __future__ import annotations

import typer

app = typer.Typer(help="Multi-task dense prediction with a 3D-aware regularizer.", no_args_is_help=True)
