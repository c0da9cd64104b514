"""Markdown table of the primary metrics in `mtl3d evaluate` JSON files, with Delta_m against the first file.

    python benchmarks/compare_runs.py runs/demo-noreg/weights/best.val.json runs/demo/weights/best.val.json

Delta_m here is relative to the first file (the baseline), not to single-task references.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtl3dcli.metrics import delta_m
from mtl3dcli.tasks import get_task, parse_tasks, primary_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args()
    reports = [json.loads(path.read_text()) for path in args.reports]
    base = reports[0]["results"]
    tasks = [name for name in base if "/" not in name]
    header = [f"{name} {get_task(name).primary_metric} {'↑' if get_task(name).higher_is_better else '↓'}"
              for name in tasks]
    print("| run | " + " | ".join(header) + " | Delta_m vs first |")
    print("|---" * (len(header) + 2) + "|")
    for path, report in zip(args.reports, reports):
        results = report["results"]
        cells = [f"{results[name][get_task(name).primary_metric]:.4g}" for name in tasks]
        delta = delta_m(results, base, primary_metrics(parse_tasks(tasks)))
        print(f"| {path.parent.parent.name} | " + " | ".join(cells) + f" | {delta:+.2f}% |")


if __name__ == "__main__":
    main()
