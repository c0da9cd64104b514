"""What a training run reports: a live rich progress bar (plain lines when not a terminal), `metrics.jsonl`,
`results.csv` (one row per evaluation) and TensorBoard scalars when TensorBoard is installed. Rank 0 only."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtl3dcli import fileio
from mtl3dcli.tasks import get_task


def flatten_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{task: {metric: v}} -> {"task/metric": v}, skipping per-class entries."""
    return {f"{task}/{name}": value for task, metrics in results.items() for name, value in metrics.items()
            if "/" not in name}


class RunLogger:
    def __init__(self, run_dir: Path, console: Console, total_steps: int, start_step: int, enabled: bool = True):
        self.run_dir, self.console, self.enabled = run_dir, console, enabled
        self.total_steps = total_steps
        self._progress: Progress | None = None
        self._task = None
        self._tb = None
        self._last_print = time.monotonic()
        if not enabled:
            return
        if console.is_terminal:
            self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                                      console=console, transient=False)
            self._task = self._progress.add_task("", total=total_steps, completed=start_step)
            self._progress.start()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # TensorBoard is an optional extra
            self._tb = None

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def step(self, step: int, lr: float, loss: float, terms: dict[str, float], seconds_per_step: float,
             write: bool) -> None:
        """Called after every optimizer step; `write` selects the steps that go to the log files."""
        if not self.enabled:
            return
        summary = f"loss {loss:.4f} " + " ".join(f"{k} {v:.3f}" for k, v in terms.items() if "/" not in k)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=summary)
        if write:
            self._append({"step": step, "lr": lr, "loss": loss, **terms, "sec_per_step": seconds_per_step})
            if self._tb is not None:
                self._tb.add_scalar("train/loss", loss, step)
                self._tb.add_scalar("train/lr", lr, step)
                for key, value in terms.items():
                    self._tb.add_scalar(f"train/{key}", value, step)
            if self._progress is None:
                eta = (self.total_steps - step) * seconds_per_step
                self.console.print(f"step {step}/{self.total_steps}  {summary}  lr {lr:.2e}  "
                                   f"{seconds_per_step:.2f}s/step  eta {eta / 60:.1f} min", highlight=False)

    def evaluation(self, step: int, results: dict[str, dict[str, float]]) -> None:
        if not self.enabled:
            return
        flat = flatten_metrics(results)
        self._append({"step": step, "split": "val", **flat})
        if self._tb is not None:
            for key, value in flat.items():
                self._tb.add_scalar(f"val/{key}", value, step)
        path = self.run_dir / "results.csv"
        rows = list(csv.DictReader(open(path, encoding="utf-8"))) if path.is_file() else []
        rows.append({"step": str(step), **{k: f"{v:.6g}" for k, v in flat.items()}})
        fields = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        fileio.write_text(path, buffer.getvalue())
        line = "  ".join(f"{name}/{get_task(name.split('/')[-1]).primary_metric} "
                         f"{metrics[get_task(name.split('/')[-1]).primary_metric]:.4g}"
                         for name, metrics in results.items())
        self.print(f"[cyan]val @ {step}[/]  {line}")

    def print(self, message: str) -> None:
        if self.enabled:
            (self._progress.console if self._progress else self.console).print(message, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()

