"""The Trainer: iteration-based, deterministic, resumable training; AMP on CUDA, DDP under torchrun.

    trainer = Trainer(config, run_dir)   # data, model + objective, optimizer, scheduler, scaler, EMA, step, best
    trainer.resume()                     # optional: continue from weights/last.state.pt
    trainer.fit()                        # until train.steps:
        batch -> step()                  #   one optimizer step (non-finite loss or Ctrl-C: save, stop)
        every eval_every -> validate()   #   bounded protocol while training, the full one at the last step
        every save_every -> save("last") #   weights/last.safetensors + last.state.pt; best.safetensors on a new best

Faults: `train()` holds the run folder's writer lock (`runlock`), so a second command on the same folder fails at
once. Ctrl-C stops at the next step boundary, or at once during a validation (redone first on resume), after
saving the state; a full disk stops with one line naming the file and the last intact checkpoint. Every write is
atomic, so a kill -9 at any moment leaves the previous checkpoint, from which `--resume` continues exactly.

Determinism and exact resume come from seeding instead of saved RNG streams: the epoch order is a permutation of
(seed, epoch), every sample's augmentation draws from (seed, epoch, index) inside the dataset, and the global torch
RNG (stratified ray samples) is reseeded from (seed, step, rank) before every step. A run resumed from step s
therefore sees exactly the batches and random draws the uninterrupted run saw. Equal numbers also need the same
environment (instruction set, library builds, threads): `environment.json` records each (re)start's. One DataLoader
with persistent workers serves the whole run (the epoch travels in the sampler's keys), so no worker restarts between
epochs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from mtl3dcli.config import Config, TrainConfig
from mtl3dcli.cpu import tune_cpu_process
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.loader import EpochSampler, close_loader, move_batch
from mtl3dcli.data.transforms import eval_transform, train_transform
from mtl3dcli.engine.checkpoint import load_state, save_state
from mtl3dcli.engine.distributed import DistContext, barrier, init_distributed, shutdown
from mtl3dcli.engine.logger import RunLogger
from mtl3dcli.engine.objective import Objective
from mtl3dcli.environment import record_start
from mtl3dcli.errors import DiskFull, Interrupted, Mtl3dError, disk_full_reason
from mtl3dcli.fileio import remove_stale_temps, write_json, write_text
from mtl3dcli.inference import InferenceSession, resolve_device
from mtl3dcli.interrupts import StopRequest, ignore_in_worker, interrupted
from mtl3dcli.modelcard import write_model_card
from mtl3dcli.models.build import MTL3DModel, build_model, resolve_tasks
from mtl3dcli.reports import evaluation_report, run_report_path, scores_consistency
from mtl3dcli.runlock import folder_lock
from mtl3dcli.tasks import Task, get_task
from mtl3dcli.weights import save_weights


# train.schedule: the decay after warm-up, a function of the progress p in [0, 1] over the remaining steps
SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "poly": lambda p, config: (1.0 - p) ** config.poly_power,
    "cosine": lambda p, config: 0.5 * (1.0 + math.cos(math.pi * p)),
    "constant": lambda p, config: 1.0,
}
# train.optimizer: "adam" is Adam with L2 weight decay (the MTI-Net / InvPT recipes), "adamw" decoupled decay
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda groups, config: torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum),
    "adam": lambda groups, config: torch.optim.Adam(groups, lr=config.lr),
    "adamw": lambda groups, config: torch.optim.AdamW(groups, lr=config.lr),
}


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps: linear warm-up, then the schedule's decay
    over the remaining steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    return SCHEDULES[config.schedule](min(1.0, (step - config.warmup_steps) / span), config)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and normalization parameters (1-D tensors), the usual practice."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return OPTIMIZERS[config.optimizer](groups, config)


class EMA:
    """Exponential moving average of a model's weights (buffers such as BN statistics are copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


def best_metric_key(tasks: list[Task], config: TrainConfig) -> tuple[str, str, bool]:
    """(task, metric, higher_is_better) that chooses `best`: train.best_metric or the first task's primary metric."""
    spec = config.best_metric or f"{tasks[0].name}/{tasks[0].primary_metric}"
    if "/" not in spec:
        raise Mtl3dError(f"train.best_metric must look like task/metric, got {spec!r}")
    task_name, metric = spec.split("/", 1)
    task = get_task(task_name)
    if metric != task.primary_metric:
        raise Mtl3dError(f"train.best_metric {spec!r}: use the primary metric of {task.name} ({task.primary_metric})")
    if task.name not in {t.name for t in tasks}:
        raise Mtl3dError(f"train.best_metric names task {task.name!r}, which this run does not train")
    return task.name, metric, task.higher_is_better


def validation_steps(start: int, config: TrainConfig) -> list[int]:
    """The steps after `start` at which the Trainer validates: every eval_every, and the last step."""
    return sorted({s for s in range(start + 1, config.steps + 1) if s % config.eval_every == 0} | {config.steps})


class _StopValidation(BaseException):
    """Ctrl-C in a validation: a BaseException, so no `except Exception` on the way swallows it."""


class Trainer:
    """Owns a run's state (model, objective, optimizer, scheduler, scaler, EMA, step, best) and its phases."""

    def __init__(self, config: Config, run_dir: Path, console: Console | None = None,
                 context: DistContext | None = None):
        self.config, self.run_dir = config, Path(run_dir)
        self.console = console or Console(stderr=True)
        self.context = context or DistContext()
        cfg = config.train
        self.device = resolve_device(cfg.device, self.context.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        else:
            tune_cpu_process()
        self.amp = cfg.amp and self.device.type == "cuda"
        self.tasks = resolve_tasks(config)
        self.best_key = best_metric_key(self.tasks, cfg)
        self.train_set, self.val_set = self._datasets()
        torch.manual_seed(cfg.seed)
        self.model = build_model(config, self.train_set.meta, tasks=self.tasks).to(self.device)
        if cfg.sync_bn and self.context.enabled and self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.objective = Objective(self.model, config).to(self.device)
        self.forward: nn.Module = self.objective
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema else None
        self.step_count, self.best = 0, None
        self.last_results: dict[str, dict[str, float]] = {}
        self.logger: RunLogger | None = None
        self._stop = StopRequest()
        self._checkpoint_step: int | None = None  # the step weights/last.state.pt holds
        self._validation_pending = False  # a validation began and has not finished (a stop cut it short)
        self._buffers = list(self.model.buffers())  # BatchNorm statistics: a forward pass updates them in place
        self._buffers_before = [b.clone() for b in self._buffers]  # ... as they were before the current step

    @property
    def weights_dir(self) -> Path:
        return self.run_dir / "weights"

    @property
    def deployed(self) -> MTL3DModel:
        """The weights that are evaluated and exported: the EMA when enabled."""
        return self.ema.model if self.ema is not None else self.model

    def _datasets(self) -> tuple[MultiTaskDataset, MultiTaskDataset]:
        data, reg, seed = self.config.data, self.config.regularizer, self.config.train.seed
        train_set = MultiTaskDataset(data.root, data.train_split, self.tasks,
                                     train_transform(data.size, data.scale, data.flip, data.jitter, data.rotate,
                                                     data.crop_max_class),
                                     pairs=reg.enabled and reg.cross_view, min_overlap=reg.min_overlap, seed=seed,
                                     fraction=data.train_fraction, cache=data.cache)
        val_set = MultiTaskDataset(data.root, data.val_split, self.tasks,
                                   eval_transform(data.eval_size, data.eval_mode), seed=seed, cache=data.cache)
        for dataset in (train_set, val_set):
            dataset.check_files()
        if EpochSampler.batches_per_epoch(len(train_set), data.batch_size, self.context.world) == 0:
            raise Mtl3dError(f"{len(train_set)} training samples cannot fill one batch of {data.batch_size} per "
                             f"process ({self.context.world} process(es)); lower data.batch_size")
        return train_set, val_set

    # --- phases ---------------------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Load weights/last.state.pt: model, optimizer, scheduler, scaler, EMA, step, best, and whether the
        validation of that step is still to do."""
        state = load_state(self.weights_dir / "last.state.pt")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty from a run without AMP (CPU): a CUDA resume starts its scaler afresh
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.model.load_state_dict(state["ema"])
        self.step_count, self.best = int(state["step"]), state.get("best")
        self._checkpoint_step, self._validation_pending = self.step_count, bool(state.get("validation_pending"))

    def step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step on a batch; a stop request (before the step: a resumed run then counts no forward pass
        twice, BatchNorm statistics included) or a non-finite loss on any rank saves and stops."""
        cfg = self.config.train
        self._stop_if_requested()
        torch.manual_seed((cfg.seed * 1_000_003 + self.step_count) * self.context.world + self.context.rank)
        batch = move_batch(batch, self.device)
        self.objective.train()
        if self._buffers:  # a host without BatchNorm may have none
            torch._foreach_copy_(self._buffers_before, self._buffers)  # one call: 0.6 ms for MTI-Net's 746 on CPU
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            total, terms = self.forward(batch)
        self._check(total, terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step_count += 1
        return total, terms

    def _check(self, total: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        finite = torch.tensor([float(torch.isfinite(total))], device=self.device)
        if self.context.enabled:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite[0] < 1:
            if self._buffers:
                torch._foreach_copy_(self._buffers, self._buffers_before)  # as before the bad batch
            self.save("last")
            bad = ", ".join(f"{k}={v.item():.3g}" for k, v in terms.items())
            raise Mtl3dError(f"non-finite loss at step {self.step_count} ({bad}); the last good state is saved in "
                             f"{self.weights_dir} (lower train.lr or enable train.clip_grad)")

    def _stop_if_requested(self) -> None:
        requested = torch.tensor([float(self._stop.requested)], device=self.device)
        if self.context.enabled:
            dist.all_reduce(requested, op=dist.ReduceOp.MAX)
        if requested[0] > 0:
            self._interrupt()

    def _interrupt(self, during: str = "") -> None:
        """Save the state (consistent between steps) unless it was just saved, and stop with how to continue."""
        if self._checkpoint_step != self.step_count:
            self.save("last")
        raise Interrupted(f"interrupted at step {self.step_count}{during}; checkpoint saved, continue with "
                          f"`mtl3d train --resume {self.run_dir}`")

    def validate(self, final: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
        """Score the deployed weights on the validation split: ({task: {metric: value}}, {task: protocol}). While
        training, slow metrics (boundaries) use the bounded protocol of `eval` (a fixed subset, fewer thresholds);
        `final` uses the full protocol, as `mtl3d evaluate` does."""
        evaluation = self.config.eval
        session = InferenceSession.from_model(self.deployed, self.device, self.tasks, amp=self.amp)
        subset = None if final else evaluation.validation_subset(len(self.val_set))
        consistency = final and scores_consistency(self.val_set.layout.has_cameras, self.tasks)
        try:
            results = session.evaluate(self._batches(self.val_loader), metric_options=evaluation.metric_options(final),
                                       slow_subset=subset, consistency=consistency)
        finally:
            self.model.train()
        return results, session.protocols(evaluation.metric_options(final), slow_subset=subset,
                                          consistency=consistency)

    def write_report(self, protocols: dict[str, str]) -> None:
        """The last weights' evaluation report (as `mtl3d evaluate` writes it) from the final validation's results,
        at `run_report_path`: no second pass over the split is needed to score the run."""
        data = self.config.data
        write_json(run_report_path(self.run_dir, data.root), evaluation_report(
            weights=self.weights_dir / "last.safetensors", step=self.step_count, dataset=data.root,
            split=data.val_split, samples=len(self.val_set), results=self.last_results, protocols=protocols,
            tasks=self.tasks, references=self.config.eval.references))
        write_model_card(self.run_dir, self.config)  # README.md: the run as a hub model card

    def save(self, name: str, metrics: dict[str, Any] | None = None) -> None:
        """weights/<name>.safetensors (deployed weights, self-describing); for "last" also the training state."""
        if not self.context.main:
            return
        if name == "last":
            save_state(self.weights_dir / "last.state.pt", {
                "step": self.step_count, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.model.state_dict() if self.ema is not None else None, "best": self.best,
                "validation_pending": self._validation_pending,
            })
            self._checkpoint_step = self.step_count
        save_weights(self.weights_dir / f"{name}.safetensors", self.deployed.state_dict(), self.config,
                     self.train_set.meta, self.step_count, metrics)

    # --- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until train.steps; returns {"run_dir", "step", "best", "metrics"}. A full disk stops the run with
        one line naming the file and the last intact checkpoint (DiskFull)."""
        try:
            return self._fit()
        except Exception as exc:
            full = self._disk_full(exc)
            if full is None:
                raise
            raise full from None

    def _fit(self) -> dict[str, Any]:
        cfg = self.config.train
        if self.step_count >= cfg.steps and not self._validation_due():
            if self.context.main:
                self.console.print(f"{self.run_dir} already finished {self.step_count} of {cfg.steps} steps "
                                   f"(raise --steps to go on)")
            return self._summary()
        self._start_run()
        train_loader = None
        try:
            with self._stop:
                if self._validation_due():  # the validation a stop or a kill cut short
                    self._after_step(redo=True)
                if self.step_count < cfg.steps:
                    train_loader = self._loader(self.train_set, EpochSampler(
                        len(self.train_set), self.config.data.batch_size, cfg.seed, rank=self.context.rank,
                        world=self.context.world, start=self.step_count))
                    self._loop(train_loader)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
                self._close(train_loader)
            raise
        self._close(train_loader)
        return self._summary()

    def _close(self, train_loader: DataLoader | None) -> None:
        for loader in (train_loader, getattr(self, "_val_loader", None)):
            if loader is not None:
                close_loader(loader)
        self.logger.close()

    def _loop(self, train_loader: DataLoader) -> None:
        tick = time.perf_counter()
        for batch in self._batches(train_loader):
            total, terms = self.step(batch)
            self.logger.step(self.step_count, self.scheduler.get_last_lr()[0], total.item(),
                             {k: v.item() for k, v in terms.items()}, time.perf_counter() - tick)
            self._after_step()
            if self.step_count >= self.config.train.steps:
                break
            if self._stop.requested and not self.context.enabled:  # Ctrl-C while saving: stop now, not a step on
                self._interrupt()
            tick = time.perf_counter()  # validation and saving do not count as step time

    def _validation_due(self) -> bool:
        """A validation a stop cut short, or the final validation of a finished run whose report a kill or a full
        disk prevented: done first on resume."""
        if self._validation_pending:
            return True
        return (0 < self.config.train.steps <= self.step_count
                and not run_report_path(self.run_dir, self.config.data.root).is_file())

    def _disk_full(self, exc: Exception) -> DiskFull | None:
        """A full disk met anywhere in the run as one DiskFull that names the file and the last intact checkpoint."""
        if isinstance(exc, DiskFull):
            path, reason = exc.path, exc.reason
        else:
            reason = disk_full_reason(exc)
            if reason is None:
                return None
            path = getattr(exc, "filename", None) or f"a file in {self.run_dir}"
        if self._checkpoint_step is None:
            return DiskFull.writing(path, reason, "no checkpoint was saved yet; free some space and run the same "
                                                  "command again")
        return DiskFull.writing(path, reason, f"the last intact checkpoint is step {self._checkpoint_step} "
                                              f"({self.weights_dir / 'last.state.pt'}); free some space, then "
                                              f"`mtl3d train --resume {self.run_dir}`")

    def _start_run(self) -> None:
        if not self.context.main:
            self.logger = RunLogger(self.run_dir, self.console, self.config.train.steps, self.step_count, False)
            barrier(self.context)
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)  # on resume too: the run may go on for more steps
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        record_start(self.run_dir, self.step_count, self.device)
        redo = self._validation_due()
        validations = set(validation_steps(self.step_count, self.config.train)) | ({self.step_count} if redo
                                                                                  else set())
        self.logger = RunLogger(self.run_dir, self.console, self.config.train.steps, self.step_count,
                                log_every=self.config.train.log_every, validations=len(validations),
                                redo_validation=redo)
        reg = self.config.regularizer
        self.logger.print(
            f"[bold]{self.config.name}[/]: {len(self.train_set)} train / {len(self.val_set)} val samples, tasks "
            f"{', '.join(t.name for t in self.tasks)}, host {self.config.model.host}, regularizer "
            f"{'on' if reg.enabled else 'off'}{' (+cross-view)' if reg.enabled and reg.cross_view else ''}, device "
            f"{self.device}{f' x{self.context.world}' if self.context.enabled else ''}, run dir {self.run_dir}")
        barrier(self.context)

    def _after_step(self, redo: bool = False) -> None:
        """Validate (rank 0) and save when the schedule says so; `redo`: validate and save the current step now."""
        cfg, step = self.config.train, self.step_count
        protocols = None
        if redo or step % cfg.eval_every == 0 or step == cfg.steps:
            if self.context.main:
                protocols = self._validate_and_keep_best(final=step == cfg.steps)
            barrier(self.context)
        if redo or step % cfg.save_every == 0 or step == cfg.steps:
            self.save("last", self.last_results)
        if step == cfg.steps and protocols is not None:
            self.write_report(protocols)

    def _validate_and_keep_best(self, final: bool) -> dict[str, str]:
        """Validate the current step, log it and save best.safetensors on a new best; Ctrl-C stops at once (the
        state is saved with the validation marked as still to do)."""
        step, start = self.step_count, time.perf_counter()
        self._validation_pending, stopped = True, False
        try:
            with self._stop.immediate(_StopValidation):
                self.last_results, protocols = self.validate(final=final)
        except _StopValidation:
            stopped = True  # stop outside this block: the validation's frames (its worker pools) go with it
        if stopped:
            self._interrupt(" during its validation, which a resume does first")
        self._validation_pending = False
        self.logger.evaluation(step, self.last_results, protocols, time.perf_counter() - start)
        task, metric, higher = self.best_key
        value = self.last_results[task][metric]
        if self.best is None or (value > self.best["value"] if higher else value < self.best["value"]):
            self.best = {"value": value, "step": step, "metric": f"{task}/{metric}"}
            self.save("best", self.last_results)
        return protocols

    def _loader(self, dataset: MultiTaskDataset, sampler: EpochSampler | None = None) -> DataLoader:
        workers = self.config.data.workers
        return DataLoader(dataset, batch_size=self.config.data.batch_size, sampler=sampler, shuffle=False,
                          drop_last=sampler is not None, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=self.device.type == "cuda", worker_init_fn=ignore_in_worker if workers else None)

    @property
    def val_loader(self) -> DataLoader:
        if not hasattr(self, "_val_loader"):  # built on first use, then its workers live for the run
            self._val_loader = self._loader(self.val_set)
        return self._val_loader

    def _batches(self, loader: DataLoader) -> Iterator[dict[str, Any]]:
        """The loader's batches; a bad file found by a worker saves the last good state and stops the run."""
        iterator = iter(loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Mtl3dError as exc:
                self.save("last")
                raise Mtl3dError(f"{exc} (stopped at step {self.step_count} with the last good state saved; fix "
                                 f"the file, then `mtl3d train --resume {self.run_dir}`)") from None
            yield batch

    def _summary(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "step": self.step_count, "best": self.best,
                "metrics": self.last_results}


def train(config: Config, run_dir: Path, *, resume: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Train `config` into `run_dir` (weights/, metrics.jsonl, results.csv, config.yaml); returns a summary.
    `resume` continues the run from its last checkpoint (a run killed before its first one starts over); without
    it an existing run is never overwritten. The run folder's writer lock is held throughout (rank 0)."""
    run_dir = Path(run_dir)
    if interrupted():  # a study worker told to stop before this run began
        raise Interrupted(f"interrupted before {run_dir} started")
    device = config.train.device
    context = init_distributed("cuda" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
                               else "cpu")
    try:
        with folder_lock(run_dir, "run") if context.main else contextlib.nullcontext():
            if context.main:
                for folder in (run_dir, run_dir / "weights"):
                    remove_stale_temps(folder)  # left by a process killed mid-write
            state = run_dir / "weights" / "last.state.pt"
            if not resume and state.exists():
                raise Mtl3dError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                                 f"another --out")
            trainer = Trainer(config, run_dir, console, context)
            if resume and not state.exists() and (run_dir / "config.yaml").is_file():
                trainer.console.print(f"{run_dir} has no checkpoint yet (stopped before its first): starting it "
                                      f"over from step 0")
            elif resume:
                trainer.resume()
            return trainer.fit()
    finally:
        shutdown(context)
