"""FFN inference options: the one typed model of an FFN request, used everywhere.

google/ffn describes an inference run with the ``InferenceOptions`` message of
``ffn/inference/inference.proto`` (init_activation, pad_value, move_threshold, min_boundary_dist,
segment_threshold, min_segment_size, disco_seed_threshold, consistency_threshold) plus a seed policy
(``seed_policy`` / ``seed_policy_args`` of ``InferenceRequest``). :class:`InferenceOptions` is that
message as one frozen dataclass, documented field by field below, with the same names, meanings and
defaults as Google's FIB-25 run (``inference_training_sample2.pbtxt``), plus ``max_steps``.

It is the only definition: a model's ``config.json`` stores the options it was made for in this
shape (:class:`~napari_connectome.ffn.config.ModelConfig`), the CLI, the widgets and the block-wise
jobs pass it to :mod:`napari_connectome.ffn.inference`, and job specs type ``segmenter.inference``
with a pydantic model generated from it
(:func:`napari_connectome.jobs.spec.inference_overrides_model`), so a typo fails at ``submit``.
Probability-valued thresholds are given as probabilities, as in google/ffn; the engine converts
them to logits once (:meth:`InferenceOptions.logit_thresholds`), because the canvas stores logits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

SEED_POLICIES = ("peaks", "grid", "points")
SEED_ORDERS = ("forward", "reverse")


def _logit32(p: float) -> np.float32:
    """logit(p) rounded to float32, as google/ffn keeps it in a float proto field."""
    p = float(np.float32(p))
    return np.float32(math.log(p / (1.0 - p)))


@dataclass(frozen=True)
class LogitThresholds:
    """The probability options converted to logits (float32), used on the canvas."""

    init_activation: np.float32
    pad_value: np.float32
    move_threshold: np.float32
    segment_threshold: np.float32


@dataclass(frozen=True)
class InferenceOptions:
    """How an FFN grows objects (google/ffn ``InferenceOptions``; see the module docstring).

    Defaults: Google's FIB-25 settings. Frozen (hashable: ``seed_policy_args`` is left out of
    the hash); change a copy with :meth:`updated`.
    """

    # Probability written at the seed voxel when an object starts (google: init_activation).
    init_activation: float = 0.95
    # Probability fed to the network for voxels the FFN has not predicted yet (google: pad_value).
    pad_value: float = 0.05
    # The FOV moves to a face-maximum voxel only if its probability is >= this; an object also stops
    # when the probability at its own seed falls below it (google: move_threshold).
    move_threshold: float = 0.9
    # Probability at or above which a voxel belongs to the object when it is written into the
    # segmentation (google: segment_threshold).
    segment_threshold: float = 0.6
    # Objects with fewer newly claimed voxels are dropped (google: min_segment_size).
    min_segment_size: int = 1000
    # A seed closer than this (z, y, x; inclusive box radius) to an existing segment is skipped
    # (google: min_boundary_dist).
    min_boundary_dist: tuple[int, int, int] = (1, 1, 1)
    # Disconnected-seed bias: if >= 0 and more than this fraction of a prediction is above
    # move_threshold, voxels that were below 0.5 may not be raised again, so a prediction cannot
    # reconnect what the FFN already cut off (biases towards splits). Negative disables it.
    # google/ffn's proto default is 0, i.e. enabled, and Google's FIB-25 run used that.
    disco_seed_threshold: float = 0.0
    # If > 0, the FFN is re-applied at the same position (its output fed back as the mask input, at
    # most 32 times) until the mean absolute probability change falls below this. 0 = one pass.
    consistency_threshold: float = 0.0
    # Where objects start when no explicit seeds are given: "peaks" (google PolicyPeaks: maxima of
    # the distance to image edges), "grid" (google PolicyGrid3d) or "points" (explicit seeds only).
    seed_policy: str = "peaks"
    # Extra arguments of the seed policy, e.g. {"step": 16, "offsets": [0, 8]} for "grid".
    seed_policy_args: dict[str, Any] = field(default_factory=dict, hash=False)
    # The order the policy's seeds are tried in: "forward" (the policy's own) or "reverse" (last
    # first; google/ffn's seed policies take ``reverse``). Objects grown earlier claim contested
    # voxels, so two orders disagree where the FFN is unsure: the over-segmentation
    # (ffn/consensus.py) keeps only what both agree on. Explicit seed points are never reordered.
    seed_order: str = "forward"
    # Stop growing one object after this many FFN steps (0 = no limit; google has none).
    max_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("init_activation", "pad_value", "move_threshold", "segment_threshold"):
            v = getattr(self, name)
            if not 0.0 < float(v) < 1.0:
                raise UserInputError(
                    f"{name} must be a probability strictly between 0 and 1, got {v}"
                )
        mbd = self.min_boundary_dist
        if isinstance(mbd, int):
            mbd = (mbd, mbd, mbd)
        mbd = tuple(int(v) for v in mbd)
        if len(mbd) != 3 or min(mbd) < 0:
            raise UserInputError(
                f"min_boundary_dist needs three integers >= 0 (z, y, x), got {mbd}"
            )
        object.__setattr__(self, "min_boundary_dist", mbd)
        if self.min_segment_size < 0 or self.max_steps < 0:
            raise UserInputError("min_segment_size and max_steps must be >= 0")
        if self.consistency_threshold < 0:
            raise UserInputError("consistency_threshold must be >= 0 (0 disables it)")
        if self.seed_order not in SEED_ORDERS:
            raise UserInputError(
                f"unknown seed_order {self.seed_order!r}; choose one of {', '.join(SEED_ORDERS)}"
            )
        if self.seed_policy not in SEED_POLICIES:
            raise UserInputError(
                f"unknown seed_policy {self.seed_policy!r}; "
                f"choose one of {', '.join(SEED_POLICIES)}"
            )

    def logit_thresholds(self) -> LogitThresholds:
        return LogitThresholds(
            init_activation=_logit32(self.init_activation),
            pad_value=_logit32(self.pad_value),
            move_threshold=_logit32(self.move_threshold),
            segment_threshold=_logit32(self.segment_threshold),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["min_boundary_dist"] = list(self.min_boundary_dist)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> InferenceOptions:
        """Options from a mapping (e.g. a model config); unknown keys ignored, missing default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in known})

    def updated(self, **changes: Any) -> InferenceOptions:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def options_for_model(config: Any, **overrides: Any) -> InferenceOptions:
    """The model's recommended inference options (``config.inference``) plus ``overrides``
    (None values ignored). ``config`` may be None or a mapping (e.g. a parsed config.json)."""
    value = (
        config.get("inference") if isinstance(config, dict) else getattr(config, "inference", None)
    )
    if isinstance(value, InferenceOptions):
        base = value
    else:
        base = InferenceOptions.from_dict(dict(value) if value else None)
    return base.updated(**overrides)
