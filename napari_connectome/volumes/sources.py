"""SOURCE strings (``path``, ``file.h5:dataset``, ``store.zarr/group/array``,
``ssh://cluster/abs/path/store.zarr/group``), format detection."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from napari_connectome.errors import UserInputError

TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
PRECOMPUTED_PREFIX = "precomputed://"
SSH_PREFIX = "ssh://"
WEBKNOSSOS_PROPERTIES = "datasource-properties.json"


@dataclass(frozen=True)
class Source:
    """A parsed SOURCE: the file or folder on disk, the part inside it, and its format."""

    path: Path  # for a remote source: the store's root on the cluster (a PurePosixPath)
    inner: str
    # "zarr", "zarr-folder" (arrays without a group), "hdf5", "n5", "precomputed", "tiff",
    # "tiff-folder", "tiled", "webknossos"
    format: str
    text: str
    # a store on a cluster (volumes.remote.RemoteLocation); None: on this machine
    remote: Any = None


def _zarr_version(path: Path) -> int | None:
    """3 for a folder with ``zarr.json``, 2 with ``.zgroup`` / ``.zarray``, else None."""
    if (path / "zarr.json").is_file():
        return 3
    if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
        return 2
    return None


def _zarr_root_kind(path: Path) -> str | None:
    if _zarr_version(path) is not None:
        return "zarr"
    if (path / "attributes.json").is_file() or path.suffix.lower() == ".n5":
        return "n5"
    if (path / "info").is_file() and _looks_like_precomputed(path / "info"):
        return "precomputed"
    return None


def _looks_like_precomputed(info: Path) -> bool:
    import json

    try:
        meta = json.loads(info.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "scales" in meta and "data_type" in meta


def webknossos_root(path: Path) -> tuple[Path, str] | None:
    """For a WebKnossos dataset folder, one of its layers or a mag of a layer: the dataset folder
    (the one holding ``datasource-properties.json``) and ``""``, ``LAYER`` or ``LAYER/MAG``."""
    parts: list[str] = []
    cur = path
    for _ in range(3):
        if (cur / WEBKNOSSOS_PROPERTIES).is_file():
            if _written_beside_ome_zarr(cur):
                return None  # our own description for WebKnossos: the folder is an OME-Zarr
            names = _webknossos_layer_names(cur) if parts else None
            if names is not None and parts[0] not in names:
                return None  # another folder kept beside the layers (an export, agglomerates)
            return cur, "/".join(parts)
        if cur.parent == cur:
            return None
        parts.insert(0, cur.name)
        cur = cur.parent
    return None


def _written_beside_ome_zarr(root: Path) -> bool:
    """A properties file napari-connectome wrote into an OME-Zarr folder (see
    viewers/webknossos_properties.py): WebKnossos reads the folder as a dataset, we as the
    OME-Zarr it is (offsets and all)."""
    import json

    if not ((root / "zarr.json").is_file() or (root / ".zgroup").is_file()):
        return False
    try:
        meta = json.loads((root / WEBKNOSSOS_PROPERTIES).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "napari_connectome" in meta


def _webknossos_layer_names(root: Path) -> set[str] | None:
    """The layer names a properties file lists; None when it cannot be read (the reader then
    says what is wrong with it)."""
    import json

    try:
        layers = json.loads((root / WEBKNOSSOS_PROPERTIES).read_bytes())["dataLayers"]
        return {str(lay["name"]) for lay in layers}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def zarr_nodes_below(folder: Path, *, limit: int = 2000, depth: int = 4) -> list[str]:
    """Paths (relative, ``/``-separated) of the zarr arrays and groups below a folder that has no
    zarr metadata itself (as tensorstore and others write a set of arrays: no ``.zgroup``).
    Looks at most ``depth`` folders down and at ``limit`` folders in all; a node's own folders
    (chunks, members) are not entered."""
    found: list[str] = []
    level = [folder]
    seen = 0
    for _ in range(depth):
        nxt: list[Path] = []
        for cur in level:
            try:
                children = sorted(
                    p for p in cur.iterdir() if p.is_dir() and not p.name.startswith(".")
                )
            except OSError:
                continue
            for child in children:
                seen += 1
                if seen > limit:
                    return found
                if _zarr_version(child) is not None:
                    found.append(child.relative_to(folder).as_posix())
                else:
                    nxt.append(child)
        level = nxt
    return found


def _kind_of(path: Path) -> str | None:
    if path.is_dir():
        if webknossos_root(path) is not None:
            return "webknossos"
        kind = _zarr_root_kind(path)
        if kind:
            return kind
        if (path / "tiled.json").is_file():
            return "tiled"  # a virtual tiled volume (read_tiled.py)
        if any(p.suffix.lower() in TIFF_SUFFIXES for p in path.iterdir() if p.is_file()):
            return "tiff-folder"
        if zarr_nodes_below(path):
            return "zarr-folder"  # zarr arrays without a group around them (read_zarr.py)
        return None
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    try:
        import h5py

        if h5py.is_hdf5(path):
            return "hdf5"
    except OSError:
        pass
    return None


def _store_root(path: Path) -> tuple[Path, str] | None:
    """For a path inside a zarr/N5 store, the store root and the inner path (walks upwards)."""
    parts: list[str] = []
    cur = path
    while True:
        if cur.is_dir() and _zarr_root_kind(cur) in ("zarr", "n5"):
            # keep walking up while the parent is also part of the same hierarchy (a zarr v2
            # store below a zarr v3 group is not: e.g. the stray zarr.json napari-ome-zarr 0.10
            # writes two folders above a label image it opens)
            parent = cur.parent
            if (
                parent != cur
                and parent.is_dir()
                and _zarr_root_kind(parent) == _zarr_root_kind(cur)
                and _zarr_version(parent) == _zarr_version(cur)
            ):
                parts.insert(0, cur.name)
                cur = parent
                continue
            return cur, "/".join(parts)
        if cur.parent == cur:
            return None
        parts.insert(0, cur.name)
        cur = cur.parent


def _inside_zarr_array(path: Path, root: Path) -> bool:
    """Whether a folder between ``path`` and the store ``root`` (both included) is a zarr array."""
    import json

    cur = path
    while True:
        if (cur / ".zarray").is_file():
            return True
        try:
            meta = json.loads((cur / "zarr.json").read_bytes())
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("node_type") == "array":
            return True
        if cur == root or cur.parent == cur:
            return False
        cur = cur.parent


def _recover_interrupted(path: Path) -> None:
    """An output whose replacement a crash interrupted comes back (one stat when there is none)."""
    from napari_connectome.volumes.atomic import journal_path, recover_replacement

    if journal_path(path).is_file():
        with contextlib.suppress(OSError, UserInputError):  # e.g. a read-only folder: read as is
            recover_replacement(path)


def absolute_source(source: str | Path) -> str:
    """``source`` as typed, its local file or folder made absolute (links kept): what a record
    that is read from another working folder (an agglomeration's ``em``) must hold. URLs and
    paths that do not exist stay as they are."""
    text = str(source)
    if "://" in text:
        return text
    path = Path(text).expanduser()
    if path.exists():
        return os.path.abspath(path)
    head, _, tail = text.rpartition(":")
    if head and Path(head).expanduser().exists():
        return f"{os.path.abspath(Path(head).expanduser())}:{tail}"
    return text


def parse_source(source: str | Path) -> Source:
    """Split a SOURCE into what exists on disk and what is inside it, and detect its format."""
    text = str(source)
    if text[: len(SSH_PREFIX)].lower() == SSH_PREFIX:
        from napari_connectome.volumes.remote.url import parse_ssh_url

        loc = parse_ssh_url(text)  # checked here; nothing is read until the volume is opened
        return Source(PurePosixPath(loc.root), loc.inner, "zarr", text, remote=loc)  # type: ignore[arg-type]
    if text.startswith(PRECOMPUTED_PREFIX):
        text = text[len(PRECOMPUTED_PREFIX) :].removeprefix("file://")
        path = Path(text).expanduser()
        if not (path / "info").is_file():
            raise UserInputError(f"{source}: no neuroglancer 'info' file in {path}.")
        return Source(path, "", "precomputed", str(source))
    if text.startswith("file://"):
        text = text[len("file://") :]
    path = Path(text).expanduser()
    inner = ""
    if not path.exists():
        _recover_interrupted(path)
    if not path.exists() and ":" in text:
        # file.h5:dataset or store.zarr:inner/path (rsplit keeps a Windows drive letter intact)
        head, _, tail = text.rpartition(":")
        if head and Path(head).expanduser().exists():
            path, inner = Path(head).expanduser(), tail
    if not path.exists():
        root = _store_root(path)
        if root is not None:
            path, inner = root[0], root[1]
        else:
            raise UserInputError(
                f"{source} does not exist; check the path (for HDF5 use file.h5:dataset, "
                "for zarr store.zarr/group/array)."
            )
    kind = _kind_of(path)
    if kind == "webknossos":
        root_inner = webknossos_root(path)
        assert root_inner is not None
        path, extra = root_inner
        inner = "/".join(p for p in (extra, inner) if p)
    elif kind is None and path.is_dir():
        root = _store_root(path)
        # a folder without zarr metadata in or below it is no part of a zarr group above it,
        # whatever zarr.json lies there; a folder inside an array (its chunks) is named as such,
        # and N5 groups may lack attributes.json
        if root is not None and (
            _zarr_root_kind(root[0]) == "n5" or _inside_zarr_array(path, root[0])
        ):
            path, extra = root
            inner = "/".join(p for p in (extra, inner) if p)
            kind = _zarr_root_kind(path)
    elif kind in ("zarr", "n5") and not inner:
        root = _store_root(path)
        if root is not None:
            path, inner = root
    if kind == "zarr-folder" and inner:  # folder:array names the array itself
        return parse_source(path / inner)
    if kind is None:
        raise UserInputError(
            f"{source}: unknown format; napari-connectome reads OME-Zarr/zarr (a directory with "
            "zarr.json, .zgroup or .zarray), N5 (attributes.json), neuroglancer precomputed "
            "(info), WebKnossos (datasource-properties.json), HDF5 (.h5), TIFF (.tif or a folder "
            "of .tif slices)."
        )
    if inner and kind in ("tiff", "tiff-folder", "precomputed", "zarr-folder"):
        raise UserInputError(
            f"{source}: a {kind} source has no inner datasets; give the path alone."
        )
    return Source(path, inner, kind, str(source))
