"""The training loop: iteration-based, deterministic, resumable, AMP on CUDA, DDP under torchrun.

Determinism and exact resume come from seeding instead of saved RNG streams: the epoch order is a permutation of
(seed, epoch), every sample's augmentation draws from (seed, epoch, index) inside the dataset, and the global torch
RNG (stratified ray samples) is reseeded from (seed, step, rank) before every step. A run resumed from step s
therefore sees exactly the batches and random draws the uninterrupted run saw.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from mtl3dcli.config import Config, TrainConfig
from mtl3dcli.data.dataset import MultiTaskDataset
from mtl3dcli.data.transforms import eval_transform, train_transform
from mtl3dcli.engine.checkpoint import load_state, save_state
from mtl3dcli.weights import save_weights
from mtl3dcli.engine.distributed import DistContext, EpochSampler, barrier, init_distributed, shutdown
from mtl3dcli.engine.evaluate import evaluate, move_batch
from mtl3dcli.engine.logger import RunLogger
from mtl3dcli.engine.objective import Objective
from mtl3dcli.errors import Mtl3dError
from mtl3dcli.fileio import write_text
from mtl3dcli.models.build import MTL3DModel, build_model, resolve_tasks
from mtl3dcli.tasks import get_task


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps: linear warm-up, then poly/cosine/constant
    decay over the remaining steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    if config.schedule == "poly":
        return (1.0 - progress) ** config.poly_power
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def resolve_device(name: str, context: DistContext) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{context.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Mtl3dError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{context.local_rank}")
    return device


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and normalization parameters (1-D tensors), the usual practice."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


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


def best_metric_key(config: Config) -> tuple[str, str, bool]:
    """(task, metric, higher_is_better) used to choose `best`; the metric must be the task's primary one."""
    first = resolve_tasks(config)[0]
    spec = config.train.best_metric or f"{first.name}/{first.primary_metric}"
    if "/" not in spec:
        raise Mtl3dError(f"train.best_metric must look like task/metric, got {spec!r}")
    task_name, metric = spec.split("/", 1)
    task = get_task(task_name)
    if metric != task.primary_metric:
        raise Mtl3dError(f"train.best_metric {spec!r}: use the primary metric of {task.name} ({task.primary_metric})")
    return task.name, metric, task.higher_is_better


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop stops at the next step boundary and saves a consistent checkpoint."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a test runner): keep default behaviour
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(config: Config, run_dir: Path, *, resume: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Train `config` into `run_dir` (weights/, metrics.jsonl, results.csv, config.yaml); returns a summary."""
    console = console or Console(stderr=True)
    cfg = config.train
    context = init_distributed("cuda" if cfg.device.startswith("cuda") or
                               (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
    try:
        return _train(config, run_dir, resume, console, context)
    finally:
        shutdown(context)


def _train(config: Config, run_dir: Path, resume: bool, console: Console, context: DistContext) -> dict[str, Any]:
    cfg = config.train
    device = resolve_device(cfg.device, context)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = cfg.amp and device.type == "cuda"
    tasks = resolve_tasks(config)
    best_task, best_name, higher = best_metric_key(config)
    if best_task not in {t.name for t in tasks}:
        raise Mtl3dError(f"train.best_metric names task {best_task!r}, which this run does not train")
    reg = config.regularizer
    train_set = MultiTaskDataset(config.data.root, config.data.train_split, tasks,
                                 train_transform(config.data.size, config.data.scale, config.data.flip,
                                                 config.data.jitter),
                                 pairs=reg.enabled and reg.cross_view, min_overlap=reg.min_overlap, seed=cfg.seed)
    val_set = MultiTaskDataset(config.data.root, config.data.val_split, tasks,
                               eval_transform(config.data.eval_size, config.data.eval_mode), seed=cfg.seed)
    batch_size = config.data.batch_size
    per_epoch = EpochSampler.batches_per_epoch(len(train_set), batch_size, context.world)
    if per_epoch == 0:
        raise Mtl3dError(f"{len(train_set)} training samples cannot fill one batch of {batch_size} per process "
                         f"({context.world} process(es)); lower data.batch_size")

    torch.manual_seed(cfg.seed)
    model = build_model(config, train_set.meta).to(device)
    objective = Objective(model, config).to(device)
    wrapped: nn.Module = objective
    if context.enabled:
        wrapped = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    weights_dir = run_dir / "weights"
    step, best = 0, None
    if resume:
        state = load_state(weights_dir / "last.state.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.model.load_state_dict(state["ema"])
        step, best = int(state["step"]), state.get("best")
        if step >= cfg.steps:
            if context.main:
                console.print(f"{run_dir} already finished {step} of {cfg.steps} steps (raise --steps to go on)")
            return {"run_dir": str(run_dir), "step": step, "best": best, "metrics": {}}
    elif (weights_dir / "last.state.pt").exists():
        raise Mtl3dError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    if context.main:  # on resume too: the run may continue with more steps than first planned
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    barrier(context)

    deploy = (lambda: ema.model) if ema is not None else (lambda: model)

    def save(name: str, metrics: dict[str, Any] | None = None) -> None:
        if not context.main:
            return
        if name == "last":
            save_state(weights_dir / "last.state.pt", {
                "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema.model.state_dict() if ema is not None else None, "best": best,
            })
        save_weights(weights_dir / f"{name}.safetensors", deploy().state_dict(), config, train_set.meta, step,
                     metrics)

    logger = RunLogger(run_dir, console, cfg.steps, step, enabled=context.main)
    if context.main:
        logger.print(f"[bold]{config.name}[/]: {len(train_set)} train / {len(val_set)} val samples, tasks "
                     f"{', '.join(t.name for t in tasks)}, regularizer {'on' if reg.enabled else 'off'}"
                     f"{' (+cross-view)' if reg.enabled and reg.cross_view else ''}, device {device}"
                     f"{f' x{context.world}' if context.enabled else ''}, run dir {run_dir}")
    last_results: dict[str, dict[str, float]] = {}
    tick = time.perf_counter()
    try:
        with _StopRequest() as stop:
            while step < cfg.steps:
                epoch, skip = divmod(step, per_epoch)
                train_set.set_epoch(epoch)
                loader = DataLoader(train_set, batch_size=batch_size, drop_last=True, num_workers=config.data.workers,
                                    sampler=EpochSampler(len(train_set), batch_size, cfg.seed, epoch, context, skip),
                                    pin_memory=device.type == "cuda",
                                    generator=torch.Generator().manual_seed(cfg.seed + epoch))
                for batch in loader:
                    torch.manual_seed((cfg.seed * 1_000_003 + step) * context.world + context.rank)
                    batch = move_batch(batch, device)
                    objective.train()
                    with torch.autocast(device_type=device.type, enabled=amp):
                        total, terms = wrapped(batch)
                    flags = torch.tensor([float(torch.isfinite(total)), float(stop.requested)], device=device)
                    if context.enabled:
                        dist.all_reduce(flags[:1], op=dist.ReduceOp.MIN)
                        dist.all_reduce(flags[1:], op=dist.ReduceOp.MAX)
                    if flags[0] < 1:
                        save("last")
                        bad = ", ".join(f"{k}={v.item():.3g}" for k, v in terms.items())
                        raise Mtl3dError(f"non-finite loss at step {step} ({bad}); the last good state is saved in "
                                         f"{weights_dir} (lower train.lr or enable train.clip_grad)")
                    if flags[1] > 0:
                        save("last")
                        raise Mtl3dError(f"interrupted at step {step}; checkpoint saved, continue with "
                                         f"`mtl3d train --resume {run_dir}`")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(total).backward()
                    if cfg.clip_grad:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    if ema is not None:
                        ema.update(model)
                    step += 1
                    now = time.perf_counter()
                    write = step % cfg.log_every == 0 or step == cfg.steps
                    logger.step(step, scheduler.get_last_lr()[0], total.item(), {k: v.item() for k, v in terms.items()},
                                now - tick, write)
                    if step % cfg.eval_every == 0 or step == cfg.steps:
                        if context.main:
                            last_results = _validate(deploy(), val_set, config, device, amp)
                            logger.evaluation(step, last_results)
                            value = last_results[best_task][best_name]
                            if best is None or (value > best["value"] if higher else value < best["value"]):
                                best = {"value": value, "step": step, "metric": f"{best_task}/{best_name}"}
                                save("best", last_results)
                        barrier(context)
                    if step % cfg.save_every == 0 or step == cfg.steps:
                        save("last", last_results)
                    tick = time.perf_counter()  # evaluation and saving do not count as step time
                    if step >= cfg.steps:
                        break
    finally:
        logger.close()
    return {"run_dir": str(run_dir), "step": step, "best": best, "metrics": last_results}


def _validate(model: MTL3DModel, dataset: MultiTaskDataset, config: Config, device: torch.device,
              amp: bool) -> dict[str, dict[str, float]]:
    loader = DataLoader(dataset, batch_size=config.data.batch_size, shuffle=False,
                        num_workers=config.data.workers, pin_memory=device.type == "cuda")
    return evaluate(model, loader, device, amp=amp,
                    metric_options=config.eval.metric_options())
