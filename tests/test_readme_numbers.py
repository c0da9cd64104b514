"""The README's study tables must equal the committed studies they cite (docs/study*/summary.json)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mtl3dcli.commands.study import _cell, paired_cell

ROOT = Path(__file__).resolve().parents[1]
# README column suffixes naming a study's eval_data set: the camera-shift table's fields of view, the eight-seed
# study's second scene set.
DATASETS = {"63°": "", "40-50°": "synthetic-fov40-50:", "val2": "synthetic-val2:"}


def _sections(text: str) -> list[str]:
    return re.split(r"^#{1,4} ", text, flags=re.M)


def _tables(section: str) -> list[list[list[str]]]:
    tables, rows = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            tables.append([rows[0], *rows[2:]])
            rows = []
    return tables


def _key(header: str) -> str:
    header = header.rstrip(" ↑↓")
    name, _, where = header.partition(", ")
    prefix = DATASETS[where.removesuffix(" (%)")] if where else ""
    return prefix + ("delta_m" if name.startswith("Delta_m") else name)


def _expected(interval: dict, key: str, paired: bool) -> str:
    if paired:
        return paired_cell(interval)
    return _cell(interval) if key.endswith("delta_m") else _cell(interval, 4)


def _cited_tables() -> list[tuple[str, list[list[list[str]]]]]:
    cited = []
    for section in _sections((ROOT / "README.md").read_text()):
        folder = re.search(r"docs/(study[\w-]*)/", section)
        if folder and _tables(section):
            cited.append((folder.group(1), _tables(section)))
    return cited


def test_readme_cites_every_committed_study():
    assert sorted({name for name, _ in _cited_tables()}) == sorted(
        p.parent.name for p in (ROOT / "docs").glob("study*/summary.json"))


@pytest.mark.parametrize("study,tables", _cited_tables(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_tables_equal_summary_json(study, tables):
    summary = json.loads((ROOT / "docs" / study / "summary.json").read_text())
    checked = 0
    for header, *rows in tables:
        paired = len(header) > 1 and header[1] == "control"
        for row in rows:
            variant = re.sub(r" \(.*\)$", "", row[0])
            entry = summary["variants"][variant]
            for title, shown in list(zip(header, row))[2 if paired else 1:]:
                key = _key(title)
                if "pooled" in title:  # a variant alone with its control has no pooled interval
                    assert shown == (paired_cell(entry["pooled"][key]) if key in entry.get("pooled", {}) else "-")
                    checked += 1
                    continue
                interval = entry["paired" if paired else "metrics"][key]
                if not paired and variant == entry["control"] and key.endswith("delta_m"):
                    assert shown in ("0", _cell(interval)), (study, variant, title)
                else:
                    assert shown == _expected(interval, key, paired), (study, variant, title)
                checked += 1
    assert checked >= 10
