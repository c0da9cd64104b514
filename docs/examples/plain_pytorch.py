"""The 3D-aware regularizer in a plain PyTorch training loop, on a network this project did not write.

torchvision's DeepLabV3-MobileNetV3 (randomly initialized, extra 1x1 heads: `custom_host.DeepLabMultiTask`) is
trained twice on the synthetic scenes, without and with `TriplaneRegularizer` on its backbone features; both runs
are scored on the validation split through the public metric API (`Task.metric`, `delta_m`).

    mtl3d download synthetic --out data/synthetic
    python docs/examples/plain_pytorch.py --data data/synthetic --steps 800
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from custom_host import DeepLabMultiTask
from mtl3dcli import MultiTaskDataset, TaskSpec, TriplaneRegularizer, delta_m, eval_transform, get_task, train_transform

TASKS = [get_task(name) for name in ("semseg", "depth", "normals", "edge")]


def train(data: Path, regularize: bool, args: argparse.Namespace) -> DeepLabMultiTask:
    """`args.steps` AdamW steps of the network, plus the rendered loss when `regularize`."""
    torch.manual_seed(0)
    train_set = MultiTaskDataset(data, "train", TASKS, train_transform(args.size), cache=True)
    channels = {task.name: task.channels(train_set.meta) for task in TASKS}
    net = DeepLabMultiTask(channels).to(args.device).train()
    params = list(net.parameters())
    if regularize:  # the regularizer's parameters join the optimizer; the network's state_dict never holds them
        reg = TriplaneRegularizer(net.feature_channels, [TaskSpec(t.name, channels=channels[t.name]) for t in TASKS],
                                  render_size=args.render_size, plane_size=args.render_size, samples=16,
                                  decode="ray", alpha=0.2, depth_range=train_set.meta.depth_range).to(args.device)
        params += list(reg.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    step = 0
    while step < args.steps:
        for batch in loader:
            image, labels, valid = (to(batch[key], args.device) for key in ("image", "labels", "valid"))
            outputs, features = net(image)
            loss = sum(t.loss_weight * t.loss(outputs[t.name], labels[t.name], valid[t.name]) for t in TASKS)
            if regularize:
                loss = loss + reg(features, labels, valid=valid).total  # alpha_t w_t L_t(render_t), summed
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.log_every == 0 or step == args.steps:
                print(f"{'reg' if regularize else 'noreg'} step {step}: loss {loss.item():.4f}", flush=True)
            if step == args.steps:
                break
    return net


def to(value, device: str):
    """A tensor, or a dict of tensors, on `device`."""
    return {k: v.to(device) for k, v in value.items()} if isinstance(value, dict) else value.to(device)


@torch.no_grad()
def evaluate(net: DeepLabMultiTask, data: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every task's metrics on the validation split: {task: {metric: value}} (mIoU, RMSE, mean angle, odsF...)."""
    val_set = MultiTaskDataset(data, "val", TASKS, eval_transform(args.size))
    meters = {t.name: t.metric(val_set.meta, edge_thresholds=args.edge_thresholds) for t in TASKS}
    net.eval()
    for batch in DataLoader(val_set, batch_size=args.batch_size):
        outputs, _ = net(batch["image"].to(args.device))
        for task in TASKS:
            meters[task.name].update(task.activate(outputs[task.name]), batch["labels"][task.name],
                                     batch["valid"][task.name])
    return {name: meter.compute() for name, meter in meters.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), help="training crop H W")
    parser.add_argument("--render-size", type=int, nargs=2, default=(12, 16), help="rendered maps H W")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--edge-thresholds", type=int, default=25)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    args.size, args.render_size = tuple(args.size), tuple(args.render_size)
    results = {name: evaluate(train(args.data, name == "reg", args), args.data, args) for name in ("noreg", "reg")}
    primary = {t.name: (t.primary_metric, t.higher_is_better) for t in TASKS}
    for name, metrics in results.items():
        print(name, "  ".join(f"{task} {primary[task][0]} {metrics[task][primary[task][0]]:.4g}" for task in primary))
    print(f"Delta_m of reg over noreg: {delta_m(results['reg'], results['noreg'], primary):+.2f}%")
    return results


if __name__ == "__main__":
    main()
