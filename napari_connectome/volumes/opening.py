"""``open_volume`` and ``discover_volumes``: one entry point for every format we read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.sources import Source, parse_source
from napari_connectome.volumes.volume import Volume


def _zarr_source_text(src: Source) -> str:
    if src.remote is not None:
        return src.remote.source()
    return f"{src.path}/{src.inner}" if src.inner else str(src.path)


def _remote_store(src: Source, store: Any) -> Any:
    """The store a source is read through: ``store`` when given, a new SFTP store for an
    ``ssh://`` source, None (the local folder) otherwise."""
    if store is not None or src.remote is None:
        return store
    from napari_connectome.volumes.remote import open_store

    return open_store(src.remote)


def _regular_file(src: Source) -> Source:
    """Refuse a file source that is not a regular file: a FIFO would block the reader for ever,
    a device never ends."""
    if src.remote is None and src.format in ("hdf5", "tiff"):
        path = Path(src.path)
        if path.exists() and not path.is_file():
            raise UserInputError(
                f"{src.text}: {path} is not a regular file (a FIFO, socket or device): give the "
                "file holding the volume"
            )
    return src


def open_volume(source: str | Path, *, level: int = 0, store: Any = None) -> Volume:
    """Open one array lazily, with voxel size and offset in nm.

    ``level`` picks a resolution level of a multiscale source; the returned volume then describes
    that level (``data``, ``voxel_size_nm``) and ``multiscale`` holds it and every coarser level.
    An ``ssh://`` source is read over SFTP on demand (see :mod:`napari_connectome.volumes.remote`);
    ``store`` reads it through a store opened before (:func:`~.remote.open_store`).
    """
    src = _regular_file(parse_source(source))
    if level < 0:
        raise UserInputError(f"level must be 0 or more, not {level}.")
    if src.format == "zarr":
        from napari_connectome.volumes.read_zarr import open_zarr_node

        return open_zarr_node(
            src.path,
            src.inner,
            _zarr_source_text(src),
            level=level,
            store=_remote_store(src, store),
        )
    if src.format == "zarr-folder":
        from napari_connectome.volumes.read_zarr import open_zarr_folder

        return open_zarr_folder(src.path, str(src.path), level=level)
    if src.format == "webknossos":
        from napari_connectome.volumes.read_webknossos import open_webknossos

        return open_webknossos(src.path, src.inner, level=level)
    if level and src.format in ("hdf5", "tiff", "tiff-folder"):
        raise UserInputError(
            f"{source} is a single-scale {src.format} source; only level 0 exists."
        )
    if src.format == "hdf5":
        from napari_connectome.volumes.read_hdf5 import open_hdf5

        text = f"{src.path}:{src.inner}" if src.inner else str(src.path)
        return open_hdf5(src.path, src.inner, text)
    if src.format in ("tiff", "tiff-folder"):
        from napari_connectome.volumes.read_tiff import open_tiff

        return open_tiff(src.path)
    if src.format == "n5":
        from napari_connectome.volumes.read_tensorstore import open_n5

        return open_n5(src.path, src.inner, _zarr_source_text(src))
    if src.format == "precomputed":
        from napari_connectome.volumes.read_tensorstore import open_precomputed

        return open_precomputed(src.path, level=level)
    if src.format == "tiled":
        from napari_connectome.volumes.read_tiled import open_tiled

        return open_tiled(src.path, level=level)
    raise UserInputError(f"{source}: unsupported format {src.format}.")  # pragma: no cover


def discover_volumes(source: str | Path, *, store: Any = None) -> list[Volume]:
    """Every layer a path holds: an OME-Zarr image and its ``labels/``, every 3D+ dataset of an HDF5
    file or zarr/N5 group (when no dataset is named), every layer of a WebKnossos dataset, every
    array of a folder of zarr arrays, or the one volume of other formats.
    ``store``: as for :func:`open_volume`."""
    src = _regular_file(parse_source(source))
    if src.format == "zarr":
        from napari_connectome.volumes.read_zarr import discover_zarr

        vols = discover_zarr(
            src.path, src.inner, _zarr_source_text(src), store=_remote_store(src, store)
        )
    elif src.format == "zarr-folder":
        from napari_connectome.volumes.read_zarr import discover_zarr_folder

        vols = discover_zarr_folder(src.path)
    elif src.format == "webknossos":
        from napari_connectome.volumes.read_webknossos import discover_webknossos

        vols = discover_webknossos(src.path, src.inner)
    elif src.format == "hdf5" and not src.inner:
        from napari_connectome.volumes.read_hdf5 import discover_hdf5

        vols = discover_hdf5(src.path)
    elif src.format == "n5" and not src.inner:
        from napari_connectome.volumes.read_tensorstore import discover_n5

        vols = discover_n5(src.path)
    else:
        vols = [open_volume(source)]
    if not vols:
        raise UserInputError(f"{source} holds no arrays with 3 or more dimensions to open.")
    return vols
