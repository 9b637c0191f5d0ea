"""Model choice for the desk widgets: shipped default, zoo, a local folder, a google/ffn import.

Resolving a choice may download (zoo, sha256-checked by pooch) or convert a TensorFlow checkpoint,
so it runs in the widgets' worker threads; loaded models are cached per (folder, device) because
click-to-segment must answer in well under a second after the first click.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit

from napari_connectome.errors import UserInputError

DEFAULT = "default model"
LOCAL = "local model folder…"
IMPORT = "import google/ffn checkpoint…"


def model_names() -> list[str]:
    """The model menu: default first, then shipped and zoo models, then folder / import."""
    from napari_connectome.ffn import zoo

    names = [DEFAULT]
    names += [p.name for p in zoo.shipped_models()]
    names += [name for name in zoo.ZOO if name not in names]
    return [*names, LOCAL, IMPORT]


def resolve_model(choice: str, path: str | Path | None = None) -> Path:
    """The model directory for a menu choice (downloads or imports when needed)."""
    from napari_connectome.ffn import zoo

    if choice == DEFAULT:
        return zoo.default_model()
    if choice == LOCAL:
        if not path or not Path(path).is_dir():
            raise UserInputError("choose a model folder (with model.safetensors and config.json)")
        return Path(path)
    if choice == IMPORT:
        return import_checkpoint(path)
    return zoo.get_model(choice)


def import_checkpoint(prefix: str | Path | None) -> Path:
    """Convert a google/ffn TF checkpoint once into the cache; reuse the conversion afterwards."""
    from napari_connectome.ffn import zoo
    from napari_connectome.ffn.checkpoint import import_google_checkpoint, is_model_dir

    if not prefix:
        raise UserInputError("choose the checkpoint's .index file (model.ckpt-NNN.index)")
    prefix = Path(prefix)
    if prefix.suffix == ".index":
        prefix = prefix.with_suffix("")
    if not prefix.with_suffix(prefix.suffix + ".index").is_file():
        raise UserInputError(
            f"{prefix}.index not found; choose a google/ffn checkpoint .index file"
        )
    dest = zoo.cache_dir() / "models" / "imported" / f"{prefix.parent.name}-{prefix.name}"
    if not is_model_dir(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        import_google_checkpoint(prefix, dest)
    return dest


@functools.lru_cache(maxsize=4)
def _load(model_dir: str, device: str) -> tuple[Any, Any]:
    from napari_connectome.ffn.checkpoint import load_model

    return load_model(model_dir, device=device)


def load(choice: str, path: str | Path | None, device: str) -> tuple[Any, Any, Path]:
    """(model, config, folder) for a menu choice, loaded once per folder and device."""
    from napari_connectome.ffn.runner import resolve_device

    folder = resolve_model(choice, path)
    model, config = _load(str(folder.resolve()), str(resolve_device(device)))
    return model, config, folder


def device_names() -> list[str]:
    """cpu, plus every CUDA device PyTorch sees."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


class ModelPicker(Container):
    """Model menu with a path field that appears for a local folder or a checkpoint import."""

    def __init__(self) -> None:
        self.choice = ComboBox(label="model", choices=model_names(), value=DEFAULT)
        self.path = FileEdit(label="path", mode="d", visible=False)
        super().__init__(widgets=[self.choice, self.path], labels=True)
        self.margins = (0, 0, 0, 0)
        self.choice.changed.connect(self._on_choice)

    def _on_choice(self, value: str) -> None:
        self.path.visible = value in (LOCAL, IMPORT)
        self.path.mode = "d" if value == LOCAL else "r"
        if value == IMPORT:
            self.path.filter = "*.index"

    def path_value(self) -> Path | None:
        """The folder or checkpoint path when the choice needs one."""
        return self.path.value if self.choice.value in (LOCAL, IMPORT) else None
