"""What a training run reports: a live rich progress bar (plain lines when not a terminal), `metrics.jsonl`,
`results.csv` (one row per evaluation) and TensorBoard scalars when TensorBoard is installed. Rank 0 only.

A resumed run first drops what was logged after its checkpoint (a kill -9 or a full disk leaves such records, and a
last line cut short), so every step and validation is recorded once, as in a run that was never stopped."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mtl3dcli import fileio
from mtl3dcli.errors import disk_full_reason
from mtl3dcli.metrics.consistency import GROUP as CONSISTENCY
from mtl3dcli.tasks import get_task


def _complete(line: str) -> bool:
    """Whether a metrics.jsonl line is a whole record (a kill or a full disk can cut the last one short)."""
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def flatten_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{task: {metric: v}} -> {"task/metric": v}, skipping per-class entries."""
    return {f"{task}/{name}": value for task, metrics in results.items() for name, value in metrics.items()
            if "/" not in name}


class RunLogger:
    """Rank 0's reporting. The ETA counts the steps left at the mean step time so far plus the validations left at
    the duration of the last one; metrics.jsonl records every logged step's time and every validation's duration
    and protocol, so a run's time split can be read back."""

    def __init__(self, run_dir: Path, console: Console, total_steps: int, start_step: int, enabled: bool = True, *,
                 log_every: int = 20, validations: int = 0, redo_validation: bool = False):
        self.run_dir, self.console, self.enabled = run_dir, console, enabled
        self.total_steps, self.log_every = total_steps, log_every
        self.validations_left = validations
        self._start_step, self._step_seconds, self._val_seconds = start_step, 0.0, 0.0
        self._progress: Progress | None = None
        self._task = None
        self._tb = None
        if not enabled:
            return
        self._forget_after(start_step, redo_validation)
        if console.is_terminal:
            self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"),
                                      TextColumn("{task.description}"), console=console, transient=False)
            self._task = self._progress.add_task("", total=total_steps, completed=start_step, eta="-")
            self._progress.start()
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = start_step + (0 if redo_validation else 1) if (run_dir / "tensorboard").is_dir() else None
            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
            self._previous_hook, threading.excepthook = threading.excepthook, self._thread_error
        except ImportError:  # TensorBoard is an optional extra
            self._tb = None

    def _append(self, record: dict[str, Any]) -> None:
        fileio.append_text(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n")

    def _forget_after(self, step: int, redo_validation: bool) -> None:
        """Drop the records of metrics.jsonl and the rows of results.csv past `step` (and its validation, which is
        about to be redone), and a record cut short."""

        def kept(record_step: int, validation: bool) -> bool:
            return record_step < step or (record_step == step and not (validation and redo_validation))

        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if _complete(line)]
            keep = [json.dumps(r) + "\n" for r in records if kept(int(r.get("step", 0)), r.get("split") == "val")]
            if len(keep) != len(lines):
                fileio.write_text(path, "".join(keep))
        path = self.run_dir / "results.csv"
        if path.is_file():
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
            if any(not kept(int(row["step"]), True) for row in rows):
                self._write_rows(path, [row for row in rows if kept(int(row["step"]), True)])

    def eta_seconds(self, step: int) -> float:
        done = step - self._start_step
        per_step = self._step_seconds / done if done else 0.0
        return (self.total_steps - step) * per_step + self.validations_left * self._val_seconds

    def step(self, step: int, lr: float, loss: float, terms: dict[str, float], seconds: float) -> None:
        """After every optimizer step (`seconds` it took); every log_every-th and the last go to the log files."""
        if not self.enabled:
            return
        self._step_seconds += seconds
        summary = f"loss {loss:.4f} " + " ".join(f"{k} {v:.3f}" for k, v in terms.items() if "/" not in k)
        eta = self.eta_seconds(step)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=summary,
                                  eta=time.strftime("%H:%M:%S", time.gmtime(eta)))
        if step % self.log_every and step != self.total_steps:
            return
        self._append({"step": step, "lr": lr, "loss": loss, **terms, "sec_per_step": seconds})
        self._scalars("train", {"loss": loss, "lr": lr, **terms}, step)
        if self._progress is None:
            self.console.print(f"step {step}/{self.total_steps}  {summary}  lr {lr:.2e}  {seconds:.2f}s/step  "
                               f"eta {eta / 60:.1f} min", highlight=False)

    def evaluation(self, step: int, results: dict[str, dict[str, float]], protocols: dict[str, str],
                   seconds: float) -> None:
        """A validation's scores, its protocol per task and how long it took."""
        if not self.enabled:
            return
        self._val_seconds, self.validations_left = seconds, max(0, self.validations_left - 1)
        flat = flatten_metrics(results)
        self._append({"step": step, "split": "val", **flat, "val_seconds": seconds, "protocols": protocols})
        self._scalars("val", flat, step)
        self._write_csv(step, flat)
        line = "  ".join(f"{name}/{get_task(name.split('/')[-1]).primary_metric} "
                         f"{metrics[get_task(name.split('/')[-1]).primary_metric]:.4g}"
                         for name, metrics in results.items() if name != CONSISTENCY)
        self.print(f"[cyan]val @ {step}[/] ({seconds:.1f} s)  {line}")

    def _write_csv(self, step: int, flat: dict[str, float]) -> None:
        path = self.run_dir / "results.csv"
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))) if path.is_file() else []
        rows.append({"step": str(step), **{k: f"{v:.6g}" for k, v in flat.items()}})
        self._write_rows(path, rows)

    @staticmethod
    def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
        fields = list(dict.fromkeys(key for row in rows for key in row)) or ["step"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        fileio.write_text(path, buffer.getvalue())

    def print(self, message: str) -> None:
        if self.enabled:
            (self._progress.console if self._progress else self.console).print(message, highlight=False)

    def _scalars(self, group: str, values: dict[str, float], step: int) -> None:
        if self._tb is not None:
            with fileio.writing(self.run_dir / "tensorboard"):
                for key, value in values.items():
                    self._tb.add_scalar(f"{group}/{key}", value, step)

    def _thread_error(self, args: threading.ExceptHookArgs) -> None:
        """TensorBoard's writer thread meeting a full disk prints no traceback: the next write in the main thread
        raises the same error, which the run reports as its one line."""
        if disk_full_reason(args.exc_value) is None:
            self._previous_hook(args)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            tb, self._tb = self._tb, None
            try:
                with fileio.writing(self.run_dir / "tensorboard"):
                    tb.close()
            finally:
                if threading.excepthook == self._thread_error:
                    threading.excepthook = self._previous_hook
