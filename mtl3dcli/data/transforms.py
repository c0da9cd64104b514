"""Joint geometric and photometric transforms that keep every label and the camera consistent with the image.

A sample (before collation) is a dict:

    image   float32 (3, H, W) in [0, 1]
    labels  {task name: tensor}  as `Task.to_tensor` gives: class tasks int64 (H, W), others float32 (C, H, W)
    valid   {task name: bool (H, W)}  `Task.valid(label)` AND the region mask (padded pixels are invalid)
    K       float32 (3, 3) intrinsics for the current image size, pixel centres at (u + 0.5, v + 0.5)
    pose    float32 (4, 4) camera-to-world

Other keys pass through untouched. Every transform is called as `transform(sample, tasks, generator)` and returns a
new dict; random draws come only from `generator`, so a sample's augmentation is reproducible from its seed.

How the camera follows the pixels (u, v are pixel indices, centres at u + 0.5):
  resize to (H', W')  sx = W'/W, sy = H'/H, K' = diag(sx, sy, 1) K; exact with the pixel-centre convention because
                      the continuous coordinate x maps to sx * x (u' + 0.5 = sx (u + 0.5)), as in
                      `F.interpolate(align_corners=False)`. z-depth values are unchanged by resizing.
  crop at (y0, x0)    cx -= x0, cy -= y0
  pad left/top        cx += left, cy += top
  mirror (width W)    u' = W - 1 - u, so cx' = W - cx and the skew changes sign; the camera-frame x axis flips, so
                      normals get n_x -> -n_x (Task.hflip) and pose' = pose @ diag(-1, 1, 1, 1), which keeps every
                      back-projected world point (and world-frame normal) where it was. The mirrored camera has a
                      left-handed frame (det R' = -1): fine for projecting points, but not a rotation.
  rotate by theta     about the principal point (the image centre without K), counter-clockwise on screen as
                      OpenCV's angle: pixel offsets d from the principal point become M d, M = [[c, s], [-s, c]]. With
                      square pixels (fx = fy, no skew) that is the camera rolled about its optical axis: K is
                      unchanged, camera-frame vectors get (x, y) -> M (x, y), z-depth is unchanged and
                      pose' = pose @ R^T with R = blockdiag(M, 1, 1), which keeps back-projected points in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from mtl3dcli.errors import Mtl3dError
from mtl3dcli.tasks import ClassTask, Task

Sample = dict[str, Any]
MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


class Transform(Protocol):
    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample: ...


# --- deterministic operations (pure functions on a sample) ----------------------------------------------------------
def image_size(sample: Sample) -> tuple[int, int]:
    """(H, W) of the sample's image."""
    return tuple(sample["image"].shape[-2:])


def resize(sample: Sample, tasks: dict[str, Task], size: tuple[int, int]) -> Sample:
    """Resize to `size` = (H', W'): image bilinear (antialiased when shrinking), labels and masks nearest-exact."""
    height, width = image_size(sample)
    size = (int(size[0]), int(size[1]))
    if size == (height, width):
        return dict(sample)
    out = dict(sample)
    image = F.interpolate(sample["image"][None], size=size, mode="bilinear", align_corners=False, antialias=True)
    out["image"] = image[0].clamp_(0.0, 1.0)
    if "labels" in sample:
        out["labels"] = {name: tasks[name].resize(label, size) for name, label in sample["labels"].items()}
    if "valid" in sample:
        out["valid"] = {name: F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0] > 0.5
                        for name, mask in sample["valid"].items()}
    if "K" in sample:
        scale = torch.tensor([size[1] / width, size[0] / height, 1.0], dtype=sample["K"].dtype)
        out["K"] = scale[:, None] * sample["K"]
    return out


def crop(sample: Sample, top: int, left: int, size: tuple[int, int]) -> Sample:
    """Cut the window of `size` = (h, w) whose top-left pixel is (top, left); it must lie inside the image."""
    height, width = image_size(sample)
    h, w = size
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise ValueError(f"crop {h}x{w} at ({top}, {left}) exceeds the {height}x{width} image")
    window = (slice(top, top + h), slice(left, left + w))
    out = dict(sample)
    out["image"] = sample["image"][(..., *window)]
    if "labels" in sample:
        out["labels"] = {name: label[(..., *window)] for name, label in sample["labels"].items()}
    if "valid" in sample:
        out["valid"] = {name: mask[(..., *window)] for name, mask in sample["valid"].items()}
    if "K" in sample:
        out["K"] = _shift_principal_point(sample["K"], -left, -top)
    return out


def pad(sample: Sample, tasks: dict[str, Task], top: int, bottom: int, left: int, right: int) -> Sample:
    """Pad each side by the given pixel counts: image with 0 (black), labels with `Task.fill`, masks with False."""
    if top == bottom == left == right == 0:
        return dict(sample)

    def padded(tensor: torch.Tensor, value: float | bool) -> torch.Tensor:
        height, width = tensor.shape[-2:]
        new = tensor.new_full((*tensor.shape[:-2], height + top + bottom, width + left + right), value)
        new[..., top:top + height, left:left + width] = tensor
        return new

    out = dict(sample)
    out["image"] = padded(sample["image"], 0.0)
    if "labels" in sample:
        out["labels"] = {name: padded(label, tasks[name].fill) for name, label in sample["labels"].items()}
    if "valid" in sample:
        out["valid"] = {name: padded(mask, False) for name, mask in sample["valid"].items()}
    if "K" in sample:
        out["K"] = _shift_principal_point(sample["K"], left, top)
    return out


def hflip(sample: Sample, tasks: dict[str, Task]) -> Sample:
    """Mirror left-right; K' has cx' = W - cx and negated skew, pose' = pose @ diag(-1, 1, 1, 1) (see module doc)."""
    _, width = image_size(sample)
    out = dict(sample)
    out["image"] = sample["image"].flip(-1)
    if "labels" in sample:
        out["labels"] = {name: tasks[name].hflip(label) for name, label in sample["labels"].items()}
    if "valid" in sample:
        out["valid"] = {name: mask.flip(-1) for name, mask in sample["valid"].items()}
    if "K" in sample:
        K = sample["K"].clone()
        K[0, 1] = -K[0, 1]
        K[0, 2] = width - K[0, 2]
        out["K"] = K
    if "pose" in sample:
        out["pose"] = sample["pose"] @ MIRROR_X.to(sample["pose"].dtype)
    return out


def rotate(sample: Sample, tasks: dict[str, Task], degrees: float) -> Sample:
    """Rotate by `degrees` about the principal point (see module doc), keeping the size: image bilinear, labels and
    masks nearest; pixels whose source falls outside the image are black and invalid for every task (label
    `Task.fill`)."""
    if degrees == 0:
        return dict(sample)
    height, width = image_size(sample)
    if "K" in sample:
        cx, cy = float(sample["K"][0, 2]), float(sample["K"][1, 2])
    else:
        cx, cy = width / 2.0, height / 2.0
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # source position of each output pixel centre: d = M^T d'
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    du, dv = u - cx, v - cy
    src_u, src_v = cx + cos * du - sin * dv, cy + sin * du + cos * dv
    inside = (src_u >= 0) & (src_u < width) & (src_v >= 0) & (src_v < height)
    grid = torch.stack([2.0 * src_u / width - 1.0, 2.0 * src_v / height - 1.0], dim=-1)[None]

    def warp(tensor: torch.Tensor, mode: str) -> torch.Tensor:  # (..., H, W) -> same shape and dtype
        flat = tensor.reshape(1, -1, height, width).float()
        out = F.grid_sample(flat, grid, mode=mode, padding_mode="zeros", align_corners=False)
        return out.reshape(tensor.shape).to(tensor.dtype)

    out = dict(sample)
    out["image"] = warp(sample["image"], "bilinear").clamp(0.0, 1.0)
    if "labels" in sample:
        labels = {}
        for name, label in sample["labels"].items():
            task = tasks[name]
            label = torch.where(inside, warp(label, "nearest"), torch.tensor(task.fill, dtype=label.dtype))
            if task.camera_frame_vector:
                x, y = label[0], label[1]
                label = torch.cat([torch.stack([cos * x + sin * y, -sin * x + cos * y]), label[2:]])
            labels[name] = label
        out["labels"] = labels
    if "valid" in sample:
        out["valid"] = {name: warp(mask, "nearest") & inside for name, mask in sample["valid"].items()}
    if "pose" in sample:
        roll = torch.eye(4, dtype=sample["pose"].dtype)
        roll[:2, :2] = torch.tensor([[cos, sin], [-sin, cos]], dtype=roll.dtype)
        out["pose"] = sample["pose"] @ roll.T
    return out


def _shift_principal_point(K: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    K = K.clone()
    K[0, 2] += dx
    K[1, 2] += dy
    return K


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator))


# --- transform objects ---------------------------------------------------------------------------------------------
class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, tasks, generator)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize to a fixed (H, W), aspect ratio not kept (the standard NYUD/PASCAL evaluation resize)."""

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        return resize(sample, tasks, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomScale:
    """Resize by a factor drawn uniformly from [low, high] (relative to the current size, aspect ratio kept)."""

    def __init__(self, low: float, high: float):
        if not 0 < low <= high:
            raise Mtl3dError(f"scale range must satisfy 0 < min <= max, got ({low}, {high})")
        self.low, self.high = float(low), float(high)

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        factor = _uniform(generator, self.low, self.high)
        height, width = image_size(sample)
        return resize(sample, tasks, (max(1, round(height * factor)), max(1, round(width * factor))))

    def __repr__(self) -> str:
        return f"RandomScale({self.low}, {self.high})"


class PadTo:
    """Pad at the bottom and right up to at least `size` = (H, W); the padding is invalid for every task."""

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        height, width = image_size(sample)
        return pad(sample, tasks, 0, max(0, self.size[0] - height), 0, max(0, self.size[1] - width))

    def __repr__(self) -> str:
        return f"PadTo({self.size})"


class ResizePad:
    """Resize keeping the aspect ratio so the image fits inside `size`, then pad bottom/right to exactly `size`."""

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        height, width = image_size(sample)
        factor = min(self.size[0] / height, self.size[1] / width)
        fitted = (min(self.size[0], max(1, round(height * factor))), min(self.size[1], max(1, round(width * factor))))
        sample = resize(sample, tasks, fitted)
        return pad(sample, tasks, 0, self.size[0] - fitted[0], 0, self.size[1] - fitted[1])

    def __repr__(self) -> str:
        return f"ResizePad({self.size})"


class RandomCrop:
    """Crop a random `size` = (H, W) window; a smaller image is first padded at the bottom/right (invalid region).

    max_class_ratio < 1 redraws the window (at most `attempts` draws, the last one kept) until the labelled pixels
    of the first class task in it show at least two classes and none covers `max_class_ratio` of them or more: the
    class-balanced crop of mmsegmentation (its cat_max_ratio) that InvPT trains with."""

    def __init__(self, size: tuple[int, int], max_class_ratio: float = 1.0, attempts: int = 10):
        if not 0 < max_class_ratio <= 1:
            raise Mtl3dError(f"the crop's max class ratio must be in (0, 1], got {max_class_ratio}")
        self.size = (int(size[0]), int(size[1]))
        self.max_class_ratio, self.attempts = float(max_class_ratio), int(attempts)

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        sample = PadTo(self.size)(sample, tasks, generator)
        classes = balance_task(sample, tasks)
        window = None if classes is None else lambda rows, cols: (sample["labels"][classes][rows, cols],
                                                                    sample["valid"][classes][rows, cols])
        top, left = self.draw(generator, image_size(sample), window)
        return crop(sample, top, left, self.size)

    def draw(self, generator: torch.Generator, size: tuple[int, int], window=None) -> tuple[int, int]:
        """(top, left) of the crop in an image of `size`; `window(rows, cols)` gives the (labels, valid) of the
        class task in a candidate window (slices), None where no class task takes part."""
        balance = self.max_class_ratio < 1 and window is not None
        for _ in range(self.attempts if balance else 1):
            top = _randint(generator, size[0] - self.size[0])
            left = _randint(generator, size[1] - self.size[1])
            if balance and self._balanced(*window(slice(top, top + self.size[0]), slice(left, left + self.size[1]))):
                break
        return top, left

    def _balanced(self, labels: torch.Tensor, valid: torch.Tensor) -> bool:
        counts = torch.bincount(labels[valid].flatten())
        counts = counts[counts > 0]
        return len(counts) > 1 and float(counts.max()) / float(counts.sum()) < self.max_class_ratio

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, max_class_ratio={self.max_class_ratio})"


def balance_task(sample: Sample, tasks: dict[str, Task]) -> str | None:
    """The class task whose labels the class-balanced crop counts: the sample's first."""
    return next((name for name in sample.get("labels", {}) if isinstance(tasks[name], ClassTask)), None)


class RandomScaleCrop:
    """`RandomScale` then `RandomCrop`, in one step: the same draws and the same sample to the last bit, in less
    time. The image is resized whole as before (antialiased bilinear), but labels and masks, which nearest-neighbour
    resizing only copies, are read from the stored resolution for the crop's pixels alone (the source of each resized
    pixel is read off `F.interpolate` itself): at the NYUv2 presets' scales of 1-2, a third to a quarter of the
    pixels. (The two steps carry class ids through float32, exact below 2^24: every class id.) Labels of a task
    with another interpolation take the two steps."""

    def __init__(self, low: float, high: float, size: tuple[int, int], max_class_ratio: float = 1.0):
        self.scale, self.crop = RandomScale(low, high), RandomCrop(size, max_class_ratio)

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        labels, valid = sample.get("labels", {}), sample.get("valid", {})
        if any(tasks[name].interpolation != "nearest-exact" for name in labels):
            return self.crop(self.scale(sample, tasks, generator), tasks, generator)
        factor = _uniform(generator, self.scale.low, self.scale.high)
        height, width = image_size(sample)
        scaled = (max(1, round(height * factor)), max(1, round(width * factor)))
        rest = {key: value for key, value in sample.items() if key not in ("labels", "valid")}
        rest = PadTo(self.crop.size)(resize(rest, tasks, scaled), tasks, generator)
        rows, cols = (nearest_sources(stored, new, padded) for stored, new, padded
                      in zip((height, width), scaled, image_size(rest)))
        classes = balance_task(sample, tasks)

        def window(r: slice, c: slice) -> tuple[torch.Tensor, torch.Tensor]:
            sources = WindowSources(rows[r], cols[c], width)
            return sources.take(labels[classes], tasks[classes].fill), sources.take(valid[classes], False)

        top, left = self.crop.draw(generator, image_size(rest), None if classes is None else window)
        out = crop(rest, top, left, self.crop.size)
        sources = WindowSources(rows[top:top + self.crop.size[0]], cols[left:left + self.crop.size[1]], width)
        if "labels" in sample:
            out["labels"] = {name: sources.take(label, tasks[name].fill) for name, label in labels.items()}
        if "valid" in sample:
            out["valid"] = {name: sources.take(mask, False) for name, mask in valid.items()}
        return out

    def __repr__(self) -> str:
        return f"RandomScaleCrop({self.scale.low}, {self.scale.high}, {self.crop.size}, " \
               f"max_class_ratio={self.crop.max_class_ratio})"


def nearest_sources(stored: int, resized: int, padded: int) -> torch.Tensor:
    """For each pixel along one axis of an image resized from `stored` to `resized` pixels (nearest-exact, as
    `resize` does labels; unchanged when equal) and then padded at the end to `padded`: the stored pixel it copies,
    -1 for padding. int64 (padded,)."""
    sources = torch.arange(stored)
    if resized != stored:
        ramp = torch.arange(stored, dtype=torch.float32).view(1, 1, 1, stored)
        sources = F.interpolate(ramp, size=(1, resized), mode="nearest-exact").view(resized).long()
    return torch.cat([sources, sources.new_full((padded - resized,), -1)])


class WindowSources:
    """Where each pixel of a window comes from in a stored (..., H, W) tensor: `rows` and `cols` from
    `nearest_sources` (-1, padding, only ever ends an axis), `width` = W. One numpy take per tensor, on a flat index
    computed once (a third of the time of index_select along rows and columns)."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, width: int):
        self.shape = (len(rows), len(cols))
        self.inside = (int((rows >= 0).sum()), int((cols >= 0).sum()))
        self.index = (rows[:self.inside[0], None] * width + cols[None, :self.inside[1]]).numpy()

    def take(self, tensor: torch.Tensor, fill: float | bool) -> torch.Tensor:
        """tensor (..., H, W) -> (..., *self.shape); padded pixels take `fill`."""
        flat = tensor.reshape(*tensor.shape[:-2], -1).numpy()
        block = torch.from_numpy(np.take(flat, self.index, axis=-1))
        if self.inside == self.shape:
            return block
        out = tensor.new_full((*tensor.shape[:-2], *self.shape), fill)
        out[..., :self.inside[0], :self.inside[1]] = block
        return out


class RandomRotate:
    """Rotate by an angle drawn uniformly from [-degrees, degrees] (labels, normals and pose follow; see `rotate`)."""

    def __init__(self, degrees: float):
        if not 0 <= degrees <= 180:
            raise Mtl3dError(f"rotation range must be in [0, 180] degrees, got {degrees}")
        self.degrees = float(degrees)

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        return rotate(sample, tasks, _uniform(generator, -self.degrees, self.degrees))

    def __repr__(self) -> str:
        return f"RandomRotate({self.degrees})"


class RandomHorizontalFlip:
    """Mirror with probability p (labels, normals, K and pose follow; see `hflip`)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        return hflip(sample, tasks) if float(torch.rand((), generator=generator)) < self.p else dict(sample)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class ColorJitter:
    """Photometric jitter of the image only: brightness, contrast, saturation factors in [1 - x, 1 + x], hue shift in
    [-hue, hue] (fraction of a turn), applied in that fixed order so one seed gives one result."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
            raise Mtl3dError("color jitter strengths must be >= 0 (and hue <= 0.5)")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, sample: Sample, tasks: dict[str, Task], generator: torch.Generator) -> Sample:
        from torchvision.transforms.v2 import functional as TF  # imported here: seconds of start-up otherwise

        b = _uniform(generator, 1 - self.brightness, 1 + self.brightness)
        c = _uniform(generator, 1 - self.contrast, 1 + self.contrast)
        s = _uniform(generator, 1 - self.saturation, 1 + self.saturation)
        h = _uniform(generator, -self.hue, self.hue)
        image = TF.adjust_brightness(sample["image"], b)
        image = TF.adjust_contrast(image, c)
        image = TF.adjust_saturation(image, s)
        if self.hue > 0:
            image = TF.adjust_hue(image, h)
        return dict(sample, image=image.clamp(0.0, 1.0))

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation}, {self.hue})"


# --- factories -----------------------------------------------------------------------------------------------------
def train_transform(size: tuple[int, int], scale: tuple[float, float] = (0.75, 1.5), flip: bool = True,
                    jitter: float = 0.2, rotate: float = 0.0, max_class_ratio: float = 1.0) -> Compose:
    """Training augmentation of the standard MTL codebases: random scale of the stored image, random rotation in
    [-rotate, rotate] degrees (MTL-PyTorch's PASCAL recipe; 0 = off), random crop to `size` (padding when smaller;
    class-balanced below `max_class_ratio`, InvPT's recipe), horizontal flip, colour jitter (brightness/contrast/
    saturation = `jitter`, no hue). Switched-off steps draw nothing from the generator."""
    transforms: list[Transform] = []
    if tuple(scale) != (1.0, 1.0) and rotate == 0:
        transforms.append(RandomScaleCrop(*scale, size, max_class_ratio))  # RandomScale + RandomCrop, faster
    else:
        if tuple(scale) != (1.0, 1.0):
            transforms.append(RandomScale(*scale))
        if rotate > 0:
            transforms.append(RandomRotate(rotate))
        transforms.append(RandomCrop(size, max_class_ratio))
    if flip:
        transforms.append(RandomHorizontalFlip(0.5))
    if jitter > 0:
        transforms.append(ColorJitter(jitter, jitter, jitter))
    return Compose(transforms)


EVAL_MODES: dict[str, Callable[[tuple[int, int]], Transform]] = {"resize": Resize, "pad": ResizePad}  # data.eval_mode


def eval_transform(size: tuple[int, int] | None, mode: str = "resize") -> Compose:
    """Evaluation preprocessing: None keeps the stored size; "resize" stretches to `size`; "pad" fits the image
    inside `size` keeping its aspect ratio and pads the rest (padding is excluded from metrics via `valid`)."""
    if size is None:
        return Compose([])
    if mode not in EVAL_MODES:
        raise Mtl3dError(f"unknown eval resize mode {mode!r} (use {' or '.join(map(repr, EVAL_MODES))})")
    return Compose([EVAL_MODES[mode](size)])

