"""The model zoo: named, hash-pinned FFN models downloaded on first use and cached per user.

Why: users should be able to say ``--model google-fib25`` instead of hunting for checkpoints, and
a download must be verified (sha256, via pooch) before it is converted into our format. Downloads
land in ``pooch.os_cache("napari-connectome")`` (override with ``NAPARI_CONNECTOME_CACHE``); the
converted model directory sits next to them, so conversion happens once.

``NAPARI_CONNECTOME_ZOO_URL`` replaces every entry's base URL (e.g. ``file:///mirror/``) for offline
sites and tests; the file names and hashes stay the same, so a wrong mirror is still caught.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.options import InferenceOptions

ZOO_URL_ENV = "NAPARI_CONNECTOME_ZOO_URL"
CACHE_ENV = "NAPARI_CONNECTOME_CACHE"
_RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "models"


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable model: TF checkpoint files (name -> sha256) under ``base_url``, settings."""

    name: str
    description: str
    base_url: str
    tf_prefix: str
    files: dict[str, str]
    fov_size: tuple[int, int, int]
    deltas: tuple[int, int, int]
    image_mean: float
    image_stddev: float
    inference: InferenceOptions
    license: str
    citation: str
    extra: dict[str, Any] = field(default_factory=dict)


ZOO: dict[str, ZooEntry] = {
    "google-fib25": ZooEntry(
        name="google-fib25",
        description=(
            "Google's published conv-stack FFN (depth 12, 32 features, FOV 33^3, deltas 8^3) "
            "trained on the FIB-25 validation1 volume, 10 nm isotropic FIB-SEM of the Drosophila "
            "medulla"
        ),
        base_url="https://raw.githubusercontent.com/google/ffn/6f61f6e4/models/fib25/",
        tf_prefix="model.ckpt-27465036",
        files={
            "model.ckpt-27465036.index": (
                "6c7b66baa8dae766907f86ca068517fedcfdd85fb7e322d05cd2401ab7b252cc"
            ),
            "model.ckpt-27465036.data-00000-of-00001": (
                "a2910768255bbb1dc5be27a947e4107dd29ccd221646b676ec225981af5526f1"
            ),
        },
        fov_size=(33, 33, 33),
        deltas=(8, 8, 8),
        image_mean=128.0,
        image_stddev=33.0,
        inference=InferenceOptions(
            init_activation=0.95,
            pad_value=0.05,
            move_threshold=0.9,
            min_boundary_dist=(1, 1, 1),
            segment_threshold=0.6,
            min_segment_size=1000,
        ),
        license="Apache-2.0 (google/ffn)",
        citation="Januszewski et al., Nature Methods 15, 605-610 (2018)",
    ),
}


def cache_dir() -> Path:
    """Where downloads and converted zoo models live."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("napari-connectome"))


def shipped_models() -> list[Path]:
    """Model directories shipped in the package (``resources/models/<name>``), sorted by name."""
    from napari_connectome.ffn.checkpoint import is_model_dir

    if not _RESOURCES.is_dir():
        return []
    return sorted(p for p in _RESOURCES.iterdir() if is_model_dir(p))


def default_model() -> Path:
    """The model used when the user names none: the shipped one if any, else ``google-fib25``."""
    shipped = shipped_models()
    if shipped:
        return shipped[0]
    return get_model("google-fib25")


def list_models() -> list[dict[str, Any]]:
    """Zoo entries and shipped models, for ``napari-connectome models``."""
    rows = []
    for p in shipped_models():
        rows.append({"name": p.name, "source": "shipped", "location": str(p), "cached": True})
    for e in ZOO.values():
        rows.append(
            {
                "name": e.name,
                "source": "zoo",
                "location": e.base_url,
                "cached": (cache_dir() / "models" / e.name / "config.json").is_file(),
                "description": e.description,
                "license": e.license,
            }
        )
    return rows


def _file_downloader(url: str, output_file: Any, pooch_obj: Any, check_only: bool = False) -> bool:
    """pooch downloader for ``file://`` URLs (offline mirrors, tests)."""
    src = Path(unquote(urlparse(url).path))
    if check_only:
        return src.is_file()
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    if hasattr(output_file, "write"):
        with open(src, "rb") as f:
            shutil.copyfileobj(f, output_file)
    else:
        shutil.copyfile(src, output_file)
    return True


def _fetch(entry: ZooEntry, fname: str, sha256: str, dest: Path) -> Path:
    import pooch

    base = os.environ.get(ZOO_URL_ENV) or entry.base_url
    url = base.rstrip("/") + "/" + fname
    downloader = _file_downloader if url.startswith("file://") else None
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=fname,
            path=dest,
            downloader=downloader,
            progressbar=False,
        )
    except ValueError as exc:  # pooch's hash mismatch (it deletes the bad download)
        if "hash" not in str(exc):
            raise
        raise UserInputError(
            f"download of {url} failed its sha256 check ({exc}); the mirror holds a different or "
            f"corrupt file. Check {ZOO_URL_ENV} or try again later"
        ) from None
    except _download_errors() as exc:
        raise UserInputError(
            f"could not download {url} ({type(exc).__name__}: {exc}); check the network, or set "
            f"{ZOO_URL_ENV} to a mirror holding {', '.join(entry.files)}"
        ) from None
    return Path(path)


def _download_errors() -> tuple[type[BaseException], ...]:
    """What a failed download raises: the HTTP client's errors (requests, which pooch uses, and
    urllib's), a lost or refused connection, a ``file://`` mirror without the file. A local disk
    that is full or read-only is not among them: that ``OSError`` reaches the caller as it is
    (the CLI names the folder)."""
    from urllib.error import URLError

    import requests

    return (requests.RequestException, URLError, ConnectionError, TimeoutError, FileNotFoundError)


def field_of_view(name_or_path: str | Path) -> tuple[int, int, int]:
    """A model's FOV (z, y, x) from its ``config.json``, or from its zoo entry while it is not
    downloaded yet: reads no weights and downloads nothing (``run-job --check`` on a login node).
    ``default`` is :func:`default_model`'s choice."""
    from napari_connectome.ffn.checkpoint import CONFIG_FILE, is_model_dir
    from napari_connectome.ffn.config import ModelConfig

    name = str(name_or_path)
    if name == "default":
        shipped = shipped_models()
        name = str(shipped[0]) if shipped else "google-fib25"
    path = Path(name)
    if not is_model_dir(path) and name in ZOO:
        path = cache_dir() / "models" / name
        if not is_model_dir(path):
            return ZOO[name].fov_size
    elif not is_model_dir(path):
        path = get_model(name)  # a shipped name, or the error that says what is known
    return ModelConfig.load(path / CONFIG_FILE).fov_size


def get_model(name_or_path: str | Path) -> Path:
    """A model directory for a path (returned as is) or a zoo name (downloaded/converted once)."""
    from napari_connectome.ffn.checkpoint import import_google_checkpoint, is_model_dir

    p = Path(name_or_path)
    if is_model_dir(p):
        return p
    name = str(name_or_path)
    if name in {s.name for s in shipped_models()}:
        return _RESOURCES / name
    if name not in ZOO:
        known = sorted([*ZOO, *(s.name for s in shipped_models())])
        raise UserInputError(
            f"{name!r} is neither a model directory (with model.safetensors and config.json) nor a "
            f"zoo model; known names: {', '.join(known)}"
        )
    entry = ZOO[name]
    model_dir = cache_dir() / "models" / name
    if is_model_dir(model_dir):
        return model_dir
    download_dir = cache_dir() / "downloads" / name
    for fname, sha in entry.files.items():
        _fetch(entry, fname, sha, download_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        import_google_checkpoint(
            download_dir / entry.tf_prefix,
            model_dir,
            fov_size=entry.fov_size,
            deltas=entry.deltas,
            image_mean=entry.image_mean,
            image_stddev=entry.image_stddev,
            inference=entry.inference,
            provenance={
                "zoo_name": name,
                "url": entry.base_url,
                "license": entry.license,
                "citation": entry.citation,
            },
        )
    except UserInputError:
        if not is_model_dir(model_dir):  # another process converting at the same time wins
            raise
    return model_dir
