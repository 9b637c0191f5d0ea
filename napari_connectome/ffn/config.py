"""What a saved FFN model needs besides its weights: ``config.json`` next to ``model.safetensors``.

Why a separate file: the weights alone do not say how to use them. google/ffn keeps the FOV,
deltas, image normalisation and inference thresholds in separate request protos, and a model run
with another normalisation or thresholds than it was made for silently gives a worse segmentation.
So every model directory carries the settings it was trained/validated with; inference starts there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.model import FFNArchitecture
from napari_connectome.ffn.options import InferenceOptions

CONFIG_FORMAT = "napari-connectome-ffn"
CONFIG_VERSION = 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and run a saved FFN (see module docstring)."""

    architecture: FFNArchitecture = field(default_factory=FFNArchitecture)
    image_mean: float = 128.0
    image_stddev: float = 33.0
    # The inference options the model was made for; inference starts from these.
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    model_class: str = "ConvStack3DFFN"

    @property
    def fov_size(self) -> tuple[int, int, int]:
        return self.architecture.fov_size

    @property
    def deltas(self) -> tuple[int, int, int]:
        return self.architecture.deltas

    def to_dict(self) -> dict[str, Any]:
        arch = self.architecture.to_dict()
        arch.pop("extra", None)
        return {
            "format": CONFIG_FORMAT,
            "format_version": CONFIG_VERSION,
            "model_class": self.model_class,
            "architecture": arch,
            "image_mean": float(self.image_mean),
            "image_stddev": float(self.image_stddev),
            "inference": self.inference.to_dict(),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise UserInputError(
                f'{source} is not a napari-connectome FFN config (missing "format": '
                f'"{CONFIG_FORMAT}"); import TensorFlow checkpoints with `napari-connectome '
                "import-checkpoint`"
            )
        if int(data.get("format_version", 0)) > CONFIG_VERSION:
            raise UserInputError(
                f"{source} has format_version {data['format_version']}, newer than this "
                f"napari-connectome understands ({CONFIG_VERSION}); upgrade napari-connectome"
            )
        if data.get("model_class", "ConvStack3DFFN") != "ConvStack3DFFN":
            raise UserInputError(f"{source}: unknown model_class {data['model_class']!r}")
        try:
            arch_d = dict(data["architecture"])
            arch = FFNArchitecture(
                depth=int(arch_d["depth"]),
                features=int(arch_d["features"]),
                fov_size=tuple(arch_d["fov_size"]),
                deltas=tuple(arch_d["deltas"]),
            )
            inference = InferenceOptions.from_dict(dict(data.get("inference", {})))
            cfg = cls(
                architecture=arch,
                image_mean=float(data["image_mean"]),
                image_stddev=float(data["image_stddev"]),
                inference=inference,
                provenance=dict(data.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"{source} is malformed: {exc!s}") from None
        if cfg.image_stddev <= 0:
            raise UserInputError(f"{source}: image_stddev must be positive")
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserInputError(f"{path} not found; a model directory needs config.json") from None
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path} is not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))
