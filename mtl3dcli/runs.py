"""Run folders: `runs/<name>`, then `runs/<name>2`, `runs/<name>3`, ... (never overwrite an earlier run)."""

from __future__ import annotations

from pathlib import Path


def next_run_dir(base: Path) -> Path:
    """`base` if it does not exist yet, else the first free `base<N>` with N >= 2."""
    if not base.exists():
        return base
    n = 2
    while (candidate := base.with_name(f"{base.name}{n}")).exists():
        n += 1
    return candidate
