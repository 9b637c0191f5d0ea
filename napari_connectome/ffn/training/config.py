"""All knobs of a training run in one typed object, saved as ``train_config.json`` in the run.

Why one object: a resumed run must train the same model on the same data in the same way, so the
saved config is compared field by field with the new one and a difference is refused by name.
Only the fields in :data:`RESUMABLE_FIELDS` (how long, how often to log, where to compute) may
change.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError

# google/ffn compute_partitions defaults: thresholds on the local object-mask fraction
DEFAULT_THRESHOLDS = (0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

RESUMABLE_FIELDS = frozenset(
    {
        "steps",
        "checkpoint_every",
        "val_every",
        "log_every",
        "threads",
        "device",
        "precision",
        "keep_checkpoints",
    }
)


@dataclass
class TrainConfig:
    """A training run (sizes in z, y, x).

    image/labels: volume sources (``file.h5:raw``, a zarr path...); ``roi``
    ``[z0, z1, y0, y1, x0, x1]`` restricts both. The validation split is the last
    ``val_fraction`` of the ROI along its longest axis; examples never straddle the split.
    Partitions: every labelled voxel gets the fraction of its ``lom_radius`` box that belongs
    to its own object, bucketed by ``thresholds``; examples are drawn with equal probability
    per bucket (google/ffn's oversampling), so thin processes and big bodies are seen equally
    often. ``min_size``: smaller objects are never example centres.
    An example is a ``fov + 2*deltas`` region: the first step predicts at its centre from
    Google's seed (``init_activation`` at the centre, ``pad_value`` elsewhere); then the FOV
    moves by ``deltas`` to each face whose centre probability reaches ``move_threshold``
    (recurrent moves: the canvas carries the network's own predictions). Loss: sigmoid
    cross-entropy against soft labels 0.95 (same object as the centre) / 0.05 (anything
    else); unlabelled voxels weigh 0.
    """

    image: str = ""
    labels: str = ""
    roi: list[int] | None = None
    val_fraction: float = 0.2
    depth: int = 12
    features: int = 32
    fov_size: list[int] = field(default_factory=lambda: [33, 33, 33])
    deltas: list[int] = field(default_factory=lambda: [8, 8, 8])
    image_mean: float = 128.0
    image_stddev: float = 33.0
    batch_size: int = 4
    steps: int = 10000
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    max_moves: int = 6
    move_threshold: float = 0.9
    init_activation: float = 0.95
    pad_value: float = 0.05
    label_soft: list[float] = field(default_factory=lambda: [0.05, 0.95])
    lom_radius: list[int] | None = None
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    min_size: int = 1000
    permute_axes: bool = True
    reflect: bool = True
    seed: int = 0
    init_model: str | None = None
    world_size: int = 1
    val_examples: int = 32
    val_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    threads: int | None = None
    device: str = "cpu"
    # "bf16": the forward pass under autocast (weights, optimizer and loss stay float32); about 3x
    # faster on CPUs with bf16 units and on GPUs. "auto": bf16 where the device has native bf16,
    # fp32 otherwise (ffn/precision.py). Validation always runs in float32.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise UserInputError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        self.fov_size = [int(v) for v in _triple(self.fov_size, "fov_size")]
        self.deltas = [int(v) for v in _triple(self.deltas, "deltas")]
        if self.lom_radius is None:
            self.lom_radius = [f // 2 + d for f, d in zip(self.fov_size, self.deltas)]
        self.lom_radius = [int(v) for v in _triple(self.lom_radius, "lom_radius")]
        if self.roi is not None:
            self.roi = [int(v) for v in self.roi]
        self.thresholds = [float(t) for t in self.thresholds]
        self.label_soft = [float(v) for v in self.label_soft]
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> UserInputError:
            return UserInputError(f"training config: {msg}")

        # NaN passes every comparison below (nan <= 0 is False), so refuse it by name first
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise bad(f"{f.name} must be a finite number, not {value}")

        if any(f % 2 == 0 or f < 3 for f in self.fov_size):
            raise bad(f"fov_size must be odd and at least 3 along every axis, got {self.fov_size}")
        if any(d < 0 or d > f // 2 for d, f in zip(self.deltas, self.fov_size)):
            raise bad(f"deltas {self.deltas} must lie within half the FOV {self.fov_size}")
        if self.depth < 1 or self.features < 1:
            raise bad("depth and features must be positive")
        if self.batch_size < 1 or self.steps < 0:
            raise bad("batch_size must be positive and steps not negative")
        if not 0.0 <= self.val_fraction < 0.9:
            raise bad(f"val_fraction must be in [0, 0.9), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd"):
            raise bad(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if self.learning_rate <= 0:
            raise bad("learning_rate must be positive")
        if self.image_stddev <= 0:
            raise bad("image_stddev must be positive")
        if sorted(self.thresholds) != self.thresholds or not all(
            0 < t < 1 for t in self.thresholds
        ):
            raise bad("thresholds must be increasing fractions between 0 and 1")
        if self.roi is not None and (
            len(self.roi) != 6 or any(self.roi[2 * i] >= self.roi[2 * i + 1] for i in range(3))
        ):
            raise bad(f"roi must be z0,z1,y0,y1,x0,x1 with each start < stop, got {self.roi}")
        if self.threads is not None and self.threads < 1:
            raise bad(f"threads must be at least 1, not {self.threads}")
        for name in ("val_every", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be at least 1")

    @property
    def example_size(self) -> tuple[int, int, int]:
        """Side lengths of one training example region (FOV plus one move each way)."""
        return tuple(f + 2 * d for f, d in zip(self.fov_size, self.deltas))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserInputError(f"training config has unknown field {unknown[0]!r}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path} is not valid JSON ({exc})") from None

    def first_difference(self, other: TrainConfig) -> tuple[str, Any, Any] | None:
        """(field, mine, theirs) of the first field that must match on resume, else None."""
        mine, theirs = self.to_dict(), other.to_dict()
        for f in fields(self):
            if f.name in RESUMABLE_FIELDS:
                continue
            if mine[f.name] != theirs[f.name]:
                return f.name, mine[f.name], theirs[f.name]
        return None


def _triple(value: Any, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    vals = tuple(int(v) for v in value)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise UserInputError(f"training config: {name} needs three integers z,y,x, got {value!r}")
    return vals  # type: ignore[return-value]
