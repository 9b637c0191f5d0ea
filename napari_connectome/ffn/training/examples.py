"""Training data: load and check the volumes, cut examples, augment them, move the FOV through them.

Why a lockstep batch of independent examples: each batch slot follows its own example through its
FOV moves (the canvas carries the network's previous predictions, as in google/ffn's
``max_pred_moves`` policy) and takes a fresh example when it has no move left, so every optimiser
step sees a full batch and no coordinates are ever written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.inference import check_em_values
from napari_connectome.ffn.training.config import TrainConfig
from napari_connectome.ffn.training.partitions import CoordinateSampler, compute_partitions


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


@dataclass
class TrainingData:
    """The ROI of image and labels in memory, and samplers for the train and validation centres."""

    image: np.ndarray  # float32, normalised
    labels: np.ndarray  # uint64
    train: CoordinateSampler
    val: CoordinateSampler | None
    split_axis: int
    split_at: int
    partition_counts: dict[int, int] = field(default_factory=dict)


def _read(source: Any, what: str) -> Any:
    if isinstance(source, np.ndarray):
        return source
    from napari_connectome.volumes import open_volume

    volume = open_volume(source)
    if what == "image" and volume.is_labels and volume.format.startswith("ome-zarr"):
        raise UserInputError(
            f"the image {source} is an OME-Zarr label image (a segmentation), not EM; give the "
            "EM image as IMAGE and the ground truth as LABELS"
        )
    return volume.data


def load_training_data(
    cfg: TrainConfig,
    image: Any | None = None,
    labels: Any | None = None,
) -> TrainingData:
    """Read and check ``cfg.image``/``cfg.labels`` (or the given arrays), compute partitions."""
    img = _read(image if image is not None else cfg.image, "image")
    lab = _read(labels if labels is not None else cfg.labels, "labels")
    if tuple(img.shape) != tuple(lab.shape):
        raise UserInputError(
            f"labels have shape {tuple(lab.shape)} but the image has shape {tuple(img.shape)}; "
            "training needs ground truth covering the image voxel for voxel"
        )
    if len(img.shape) != 3:
        raise UserInputError(f"training needs 3-D volumes (z, y, x), got shape {tuple(img.shape)}")
    if np.dtype(lab.dtype).kind not in "iu":
        raise UserInputError(
            f"labels have dtype {lab.dtype}; ground truth must hold integer object ids "
            "(0 = unlabelled)"
        )
    if cfg.roi is not None:
        r = cfg.roi
        if any(r[2 * i + 1] > img.shape[i] or r[2 * i] < 0 for i in range(3)):
            raise UserInputError(f"roi {r} lies outside the volume of shape {tuple(img.shape)}")
        sl = tuple(slice(r[2 * i], r[2 * i + 1]) for i in range(3))
        img, lab = img[sl], lab[sl]
    image_np = np.asarray(img)
    if np.dtype(image_np.dtype).kind == "f" and not np.isfinite(image_np).all():
        raise UserInputError("the image holds NaN or infinite values; clean it before training")
    check_em_values(image_np, cfg.image_mean, cfg.image_stddev, "the image")
    image_np = ((image_np.astype(np.float32) - cfg.image_mean) / cfg.image_stddev).astype(
        np.float32
    )
    labels_np = np.asarray(lab)
    if labels_np.dtype.kind == "i" and labels_np.size and labels_np.min() < 0:
        raise UserInputError(
            f"the labels hold negative ids (down to {int(labels_np.min())}); ground truth ids "
            "must be 0 (unlabelled) or more: map negative values (e.g. -1 for 'ignore') to 0"
        )
    labels_np = labels_np.astype(np.uint64, copy=False)
    size = cfg.example_size
    if any(s < e for s, e in zip(labels_np.shape, size)):
        raise UserInputError(
            f"the training region {labels_np.shape} is smaller than one example "
            f"(FOV + 2*deltas = {size}); use a larger region or a smaller FOV"
        )
    parts = compute_partitions(labels_np, cfg.thresholds, cfg.lom_radius, cfg.min_size)
    half = [e // 2 for e in size]
    shape = labels_np.shape
    lo = list(half)
    hi = [n - h for n, h in zip(shape, half)]
    axis = int(np.argmax(shape))
    split = shape[axis]
    val = None
    if cfg.val_fraction > 0:
        split = round(shape[axis] * (1 - cfg.val_fraction))
        vlo, vhi = list(lo), list(hi)
        vlo[axis] = split + half[axis]
        hi[axis] = split - half[axis]
        if vhi[axis] <= vlo[axis]:
            need = size[axis] / shape[axis]
            raise UserInputError(
                f"the validation part ({cfg.val_fraction:.0%} of {shape[axis]} voxels) is thinner "
                f"than one example ({size[axis]} voxels); use --val-fraction of at least "
                f"{need:.2f}, a larger region, or --val-fraction 0"
            )
        val = CoordinateSampler(parts, vlo, vhi, seed=cfg.seed + 1)
        if not len(val):
            raise UserInputError(
                "the validation part holds no labelled voxels to centre examples on"
            )
    train = CoordinateSampler(parts, lo, hi, seed=cfg.seed)
    if not len(train):
        raise UserInputError(
            "too few labelled voxels: no object of at least min_size "
            f"({cfg.min_size}) voxels lies far enough from the region's edge for a "
            f"{size} example; lower --min-size or use a larger region"
        )
    counts = {p: int(c.shape[0]) for p, c in train.coords.items()}
    return TrainingData(image_np, labels_np, train, val, axis, split, counts)


def permutable_axes(cfg: TrainConfig) -> list[int]:
    """Axes that may be swapped by augmentation: those sharing the FOV size and deltas."""
    groups: dict[tuple[int, int], list[int]] = {}
    for a, key in enumerate(zip(cfg.fov_size, cfg.deltas)):
        groups.setdefault(key, []).append(a)
    best = max(groups.values(), key=len)
    return best if len(best) > 1 else []


def cut_example(
    data: TrainingData,
    centre: tuple[int, int, int],
    cfg: TrainConfig,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, soft target, weight) of one example region, augmented when ``rng`` is given."""
    size = cfg.example_size
    sl = tuple(slice(c - s // 2, c - s // 2 + s) for c, s in zip(centre, size))
    img = data.image[sl]
    lab = data.labels[sl]
    if rng is not None:
        axes = permutable_axes(cfg) if cfg.permute_axes else []
        if axes:
            perm = list(range(3))
            shuffled = list(rng.permutation(axes))
            for a, b in zip(axes, shuffled):
                perm[a] = int(b)
            img, lab = img.transpose(perm), lab.transpose(perm)
        if cfg.reflect:
            flips = tuple(a for a in range(3) if rng.random() < 0.5)
            if flips:
                img, lab = np.flip(img, flips), np.flip(lab, flips)
    obj = lab[size[0] // 2, size[1] // 2, size[2] // 2]
    lo, hi = cfg.label_soft
    target = np.where(lab == obj, hi, lo).astype(np.float32)
    weight = (lab != 0).astype(np.float32)
    return np.ascontiguousarray(img), target, weight


class ExampleSlot:
    """One batch slot: an example region, its canvas of logits and the FOV positions to visit."""

    def __init__(self, image: np.ndarray, target: np.ndarray, weight: np.ndarray, cfg: TrainConfig):
        self.image, self.target, self.weight = image, target, weight
        self.fov = tuple(cfg.fov_size)
        self.deltas = tuple(cfg.deltas)
        self.canvas = np.full(image.shape, _logit(cfg.pad_value), np.float32)
        centre = tuple(s // 2 for s in image.shape)
        self.canvas[centre] = _logit(cfg.init_activation)
        self.centre = centre
        self.queue: list[tuple[int, int, int]] = [centre]
        self.visited: set[tuple[int, int, int]] = set()
        self.max_steps = 1 + cfg.max_moves
        self.move_logit = _logit(cfg.move_threshold)

    def _slices(self, pos: tuple[int, int, int]) -> tuple[slice, ...]:
        return tuple(slice(p - f // 2, p - f // 2 + f) for p, f in zip(pos, self.fov))

    @property
    def done(self) -> bool:
        return not self.queue or len(self.visited) >= self.max_steps

    def next_fov(
        self,
    ) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        pos = self.queue.pop(0)
        sl = self._slices(pos)
        self.visited.add(pos)
        return pos, self.image[sl], self.canvas[sl], self.target[sl], self.weight[sl]

    def update(self, pos: tuple[int, int, int], logits: np.ndarray) -> None:
        """Write the prediction into the canvas; after the first step, queue the faces to visit."""
        self.canvas[self._slices(pos)] = logits
        if pos != self.centre:
            return
        half = [f // 2 for f in self.fov]
        moves = []
        for axis in range(3):
            if self.deltas[axis] == 0:
                continue
            for sign in (-1, 1):
                # the voxel where the face of the FOV crosses the axis through its centre
                probe = list(half)
                probe[axis] += sign * self.deltas[axis]
                value = float(logits[tuple(probe)])
                if value >= self.move_logit:
                    new = list(pos)
                    new[axis] += sign * self.deltas[axis]
                    moves.append((value, tuple(new)))
        for _, new in sorted(moves, reverse=True):
            if new not in self.visited and new not in self.queue:
                self.queue.append(new)  # type: ignore[arg-type]
