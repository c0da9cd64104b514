"""The numbers of README.md and docs/ must equal the files they come from: every study table equals the committed
study it cites (docs/studies/<name>/summary.json), the README's results bullets its intervals, the cost summary the
benchmark lines in docs/bench, the demo's figures the study run they name."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from mtl3dcli.commands.study import _cell, paired_cell

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "docs" / "studies"
BENCH = ROOT / "docs" / "bench"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Column suffixes naming a study's eval_data set: the camera-shift table's fields of view, the eight-seed study's
# second scene set.
DATASETS = {"63°": "", "40-50°": "synthetic-fov40-50:", "val2": "synthetic-val2:"}
CITATION = re.compile(r"docs/studies/([\w-]+)/")


def _sections(text: str) -> list[str]:
    return re.split(r"^#{1,4} ", text, flags=re.M)


def _section(path: Path, title: str) -> str:
    return next(s for s in _sections(path.read_text(encoding="utf-8")) if s.startswith(title))


def _tables(section: str) -> list[list[list[str]]]:
    tables, rows = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            tables.append([rows[0], *rows[2:]])
            rows = []
    return tables


def _study(section: str) -> str | None:
    """The first committed study a section cites by its folder (docs/studies/<name>/), if any."""
    names = [name for name in CITATION.findall(section) if (STUDIES / name / "summary.json").is_file()]
    return names[0] if names else None


def _summary(study: str) -> dict:
    return json.loads((STUDIES / study / "summary.json").read_text())


def _key(header: str) -> str:
    header = header.rstrip(" ↑↓")
    name, _, where = header.partition(", ")
    prefix = DATASETS[where.removesuffix(" (%)")] if where else ""
    return prefix + ("delta_m" if name.startswith("Delta_m") else name)


def _expected(interval: dict, key: str, paired: bool) -> str:
    if paired:
        return paired_cell(interval)
    return _cell(interval) if key.endswith("delta_m") else _cell(interval, 4)


def _cited_tables() -> list[tuple[str, str, list[list[list[str]]]]]:
    cited = []
    for page in PAGES:
        for section in _sections(page.read_text(encoding="utf-8")):
            study = _study(section)
            if study and _tables(section):
                cited.append((page.relative_to(ROOT).as_posix(), study, _tables(section)))
    return cited


def test_every_committed_study_has_a_page_with_its_tables():
    assert sorted({study for _, study, _ in _cited_tables()}) == sorted(
        p.parent.name for p in STUDIES.glob("*/summary.json"))


def test_readme_shows_a_study_table():
    assert any(page == "README.md" for page, _, _ in _cited_tables())


def _check_row(entry: dict, header: list[str], row: list[str], paired: bool, where: tuple) -> int:
    checked = 0
    for title, shown in list(zip(header, row))[2 if paired else 1:]:
        key = _key(title)
        if "pooled" in title:  # a variant alone with its control has no pooled interval
            assert shown == (paired_cell(entry["pooled"][key]) if key in entry.get("pooled", {}) else "-"), where
        else:
            interval = entry["paired" if paired else "metrics"][key]
            if not paired and row[0].startswith(entry["control"]) and key.endswith("delta_m"):
                assert shown in ("0", _cell(interval)), (*where, title)
            else:
                assert shown == _expected(interval, key, paired), (*where, title)
        checked += 1
    return checked


@pytest.mark.parametrize("page,study,tables", _cited_tables(), ids=lambda v: v if isinstance(v, str) else "")
def test_tables_equal_summary_json(page, study, tables):
    summary, checked = _summary(study), 0
    for header, *rows in tables:
        paired = len(header) > 1 and header[1] == "control"
        for row in rows:
            variant = re.sub(r" \(.*\)$", "", row[0])
            checked += _check_row(summary["variants"][variant], header, row, paired, (page, study, variant))
    assert checked >= 10


def _intervals(summary: dict) -> list[dict]:
    found = []
    for entry in summary["variants"].values():
        for kind in ("metrics", "paired", "pooled"):
            found += [i for i in entry.get(kind, {}).values() if isinstance(i, dict) and i.get("low") is not None]
    return found


def _shows(interval: dict, text: tuple[str, str, str]) -> bool:
    def same(value: float, shown: str) -> bool:
        digits = len(shown.partition(".")[2])
        return f"{value:.{digits}f}" == f"{float(shown):.{digits}f}"
    return all(same(interval[k], t) for k, t in zip(("mean", "low", "high"), text))


def test_readme_results_bullets_quote_the_cited_study():
    """Every `mean [low, high]` in the README's results bullets is an interval of the study its table cites."""
    section = _section(ROOT / "README.md", "Results")
    intervals = _intervals(_summary(_study(section)))
    quoted = re.findall(r"^- .*(?:\n  .*)*", section, flags=re.M)
    found = re.findall(r"([+-]?\d+\.\d+)%? \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]", "\n".join(quoted))
    assert len(found) >= 3
    for text in found:
        assert any(_shows(i, text) for i in intervals), f"README results quote {text}, not in the cited study"


def _ratio(run: dict) -> str:
    return f"x{run['with_regularizer']['ms_per_step'] / run['without_regularizer']['ms_per_step']:.2f}"


def _step_cell(stem: str) -> str:
    passes = [json.loads(p.read_text()) for p in sorted(BENCH.glob(f"{stem}*.json"))]
    without, with_ = (passes[0][k]["ms_per_step"] for k in ("without_regularizer", "with_regularizer"))
    scale, unit, digits = (1000, "s", 2) if without >= 1000 else (1, "ms", 1)
    cell = f"{without / scale:.{digits}f} → {with_ / scale:.{digits}f} {unit}: {_ratio(passes[0])}"
    cell += f" (other passes: {', '.join(_ratio(p) for p in passes[1:])})" if passes[1:] else ""
    growth = passes[0].get("peak_tensor_growth")  # the same in every pass: a count of bytes, not a timing
    return cell + (f"; peak tensor memory {growth:+.1%}" if growth is not None else "")


def _parity_cell(stem: str) -> str:
    run = json.loads((BENCH / f"{stem}.json").read_text())
    return (f"{run['regularized']['params']:,} parameters either way, {run['regularized']['median_latency_ms']:.1f} vs "
            f"{run['baseline']['median_latency_ms']:.1f} ms")


def _backends_cell(stem: str, model: str) -> str:
    run = json.loads((BENCH / f"{stem}.json").read_text())["models"][model]
    torch_, ort = run["pytorch"], run["onnxruntime"]
    return (f"PyTorch {torch_['median_ms']:.0f} ms, ONNX Runtime {ort['median_ms']:.0f} ms (x{run['speedup']:.2f}); "
            f"{torch_['loaded_rss_mb']:.0f} vs {ort['loaded_rss_mb']:.0f} MB resident")


def _loader_cell(stem: str) -> str:
    after = json.loads((BENCH / f"{stem}.json").read_text())["pipelines"]["nyuv2-hrnet18"]
    before = json.loads((BENCH / f"{stem}_before.json").read_text())["pipelines"]["nyuv2-hrnet18"]
    rate = lambda run: run["process"]["no_cache"]["samples_per_cpu_s"]  # noqa: E731
    return (f"{rate(after):.1f} samples per CPU second ({rate(before):.1f} before); one DataLoader worker "
            f"{after['loader']['no_cache']['1']:.1f} samples/s")


def test_readme_cost_rows_equal_the_benchmark_lines():
    rows = _tables(_section(ROOT / "README.md", "Cost"))[0][1:]
    assert len(rows) >= 3
    for row in rows:
        stem = re.search(r"docs/bench/(\w+)\.json", row[1]).group(1)
        if stem.startswith("loader_throughput"):
            expected = _loader_cell(stem)
        elif stem.startswith("inference_backends"):
            expected = _backends_cell(stem, re.search(r"`([\w-]+)`", row[0]).group(1))
        else:
            expected = _parity_cell(stem) if stem.startswith("inference_parity") else _step_cell(stem)
        assert row[-1] == expected, row[0]


def test_readme_demo_figures_are_the_study_run_they_name():
    """The demo pictures' validation figures are those of `reg` seed 0 of the 3-seed grid."""
    text = _section(ROOT / "README.md", "Quick start")
    with open(STUDIES / "grid" / "results.csv", newline="") as f:
        run = next(r for r in csv.DictReader(f) if r["variant"] == "reg" and r["seed"] == "0")
    shown = (f"mIoU {float(run['semseg/mIoU']):.2f}, depth RMSE\n{float(run['depth/rmse']):.4f} m, normals "
             f"{float(run['normals/mean']):.2f} degrees, odsF {float(run['edge/odsF']):.2f}")
    assert shown in text
    assert "[3-seed grid](docs/studies/grid.md)" in text
