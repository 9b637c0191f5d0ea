"""Model choice for the desk widgets: shipped default, zoo, a local folder, a google/ffn import.

Every menu entry says what the model is and how good (from the shipped model's ``config.json``
provenance and the zoo entries), and a zoo model that is not in the local cache is marked "not
downloaded — needs internet" before Segment is pressed, so an offline desk learns it from the menu,
not from a download error. Resolving a choice may download (zoo, sha256-checked by pooch) or convert
a TensorFlow checkpoint, so it runs in the widgets' worker threads; loaded models are cached per
(folder, device) because click-to-segment must answer in well under a second after the first click.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label

from napari_connectome.errors import UserInputError

DEFAULT = "default model"
LOCAL = "local model folder…"
IMPORT = "import google/ffn checkpoint…"


NOT_DOWNLOADED = "not downloaded — needs internet"
#: What the zoo's models are: (menu, tooltip); quality from docs/training.md (held-out FIB-25 half).
ZOO_QUALITY = {
    "google-fib25": (
        "Google's FIB-25 model: best (ARAND 0.10), slower",
        "Google's published FIB-25 FFN (depth 12, 32 features, 33^3 FOV): held-out VI 1.83, "
        "ARAND 0.10 on FIB-25; several times slower than fib25-small",
    ),
}


def model_names() -> list[str]:
    """The model menu's values: default first, then shipped and zoo models, then folder / import."""
    from napari_connectome.ffn import zoo

    names = [DEFAULT]
    names += [p.name for p in zoo.shipped_models()]
    names += [name for name in zoo.ZOO if name not in names]
    return [*names, LOCAL, IMPORT]


def is_downloaded(name: str) -> bool:
    """True when a zoo model can be used without the internet: converted in the cache, or its
    files are in a ``file://`` mirror (``NAPARI_CONNECTOME_ZOO_URL``)."""
    import os
    from urllib.parse import unquote, urlparse

    from napari_connectome.ffn import zoo
    from napari_connectome.ffn.checkpoint import is_model_dir

    if name not in zoo.ZOO or is_model_dir(zoo.cache_dir() / "models" / name):
        return True
    mirror = os.environ.get(zoo.ZOO_URL_ENV, "")
    if mirror.startswith("file://"):
        folder = Path(unquote(urlparse(mirror).path))
        return all((folder / f).is_file() for f in zoo.ZOO[name].files)
    return False


def _shipped_provenance(folder: Path) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads((folder / "config.json").read_text()).get("provenance", {}))
    except (OSError, ValueError):
        return {}


def _describe(value: str) -> tuple[str, str]:
    """(short menu text, long description) for a menu value."""
    from napari_connectome.ffn import zoo

    shipped = {p.name: p for p in zoo.shipped_models()}
    default = ""
    if value == DEFAULT:
        if not shipped:
            return _describe("google-fib25")
        value, default = next(iter(shipped)), " (default)"
    if value in shipped:
        prov = _shipped_provenance(shipped[value])
        short = f"{value}{default}: {prov.get('short_description', 'shipped')}"
        long = "; ".join(str(prov[k]) for k in ("summary", "quality") if prov.get(k))
        return short, long or "shipped with napari-connectome"
    if value in zoo.ZOO:
        short, long = ZOO_QUALITY.get(value, (value, zoo.ZOO[value].description))
        short = f"{value}: {short}" if short != value else value
        if not is_downloaded(value):
            short += f" — {NOT_DOWNLOADED}"
        return short, long
    return value, ""


def model_label(value: str) -> str:
    """The menu's text for a value: the model's name, what it is, whether it needs a download."""
    return _describe(value)[0]


def model_choices(_widget: Any = None) -> list[tuple[str, str]]:
    """(label, value) pairs for the menu; re-read on reset_choices (after a download)."""
    return [(model_label(v), v) for v in model_names()]


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
    if choice in zoo.ZOO and not is_downloaded(choice):
        try:
            return zoo.get_model(choice)
        except UserInputError:
            raise UserInputError(offline_message(choice)) from None
    return zoo.get_model(choice)


def offline_message(name: str) -> str:
    """What to do when a zoo model is not downloaded and the download failed."""
    from napari_connectome.ffn import zoo

    entry = zoo.ZOO[name]
    return (
        f"{name} is not downloaded and could not be downloaded now (no internet here?). Use the "
        "default fib25-small, which is shipped; or download it once on a machine with internet "
        f"(choose it there, or `napari-connectome segment --model {name} ...`) and copy "
        f"{zoo.cache_dir() / 'models' / name} here; or set {zoo.ZOO_URL_ENV} to a folder "
        f"holding {', '.join(entry.files)}"
    )


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
    """Model menu with a path field that appears for a local folder or a checkpoint import, and a
    note under it when the chosen zoo model is not downloaded."""

    def __init__(self) -> None:
        self.choice = ComboBox(label="model", choices=model_choices, value=DEFAULT)
        # long entries must not widen the dock: the menu shows what fits, the tooltip the rest
        from qtpy.QtWidgets import QComboBox

        self.choice.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.choice.native.setMinimumContentsLength(24)
        self.path = FileEdit(label="path", mode="d", visible=False)
        self.note = Label(value="", visible=False)
        self.note.native.setWordWrap(True)
        super().__init__(widgets=[self.choice, self.path, self.note], labels=True)
        self.margins = (0, 0, 0, 0)
        self.choice.changed.connect(self._on_choice)
        self.refresh_note()

    def _on_choice(self, value: str) -> None:
        self.path.visible = value in (LOCAL, IMPORT)
        self.path.mode = "d" if value == LOCAL else "r"
        if value == IMPORT:
            self.path.filter = "*.index"
        self.refresh_note()

    def refresh_note(self) -> None:
        """Say before Segment that the chosen model needs a download (and the internet)."""
        from napari_connectome.ffn import zoo

        value = self.choice.value
        self.choice.tooltip = (
            _describe(value)[1]
            or "the default is shipped; zoo models download once (sha256-checked)"
        )
        missing = value in zoo.ZOO and not is_downloaded(value)
        self.note.value = (
            f"{value} is {NOT_DOWNLOADED}: Segment downloads it first "
            f"({zoo.ZOO[value].base_url.split('/')[2]}); offline, use the default fib25-small"
            if missing
            else ""
        )
        self.note.visible = missing

    def path_value(self) -> Path | None:
        """The folder or checkpoint path when the choice needs one."""
        return self.path.value if self.choice.value in (LOCAL, IMPORT) else None
