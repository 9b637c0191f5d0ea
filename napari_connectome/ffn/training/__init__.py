"""FFN training: partitions and sampling, examples with FOV moves, the loop, reports."""

from napari_connectome.ffn.training.config import TrainConfig
from napari_connectome.ffn.training.trainer import train

__all__ = ["TrainConfig", "train"]
