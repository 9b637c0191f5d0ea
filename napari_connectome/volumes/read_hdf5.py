"""HDF5 datasets (``file.h5:dataset``): voxel size from the attributes the field uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.volumes.lazy import HDF5Array, to_dask
from napari_connectome.volumes.read_zarr import default_axes
from napari_connectome.volumes.units import (
    VOXEL_SIZE_KEYS_TEXT,
    offset_from_attrs,
    voxel_size_from_attrs,
    warn_no_voxel_size,
)
from napari_connectome.volumes.volume import Volume, dtype_looks_like_labels

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".n5h5")


def list_datasets(h5file: Any) -> list[str]:
    """Names of every dataset in the file, nested ones as ``group/name``."""
    import h5py

    names: list[str] = []
    h5file.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    return names


def _open_file(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise UserInputError(
            f"{path} cannot be opened as HDF5 ({exc}); check that it is a complete .h5 file."
        ) from exc


def open_hdf5(path: Path, dataset: str, source: str) -> Volume:
    """Open one dataset lazily; with no dataset name, the file must hold exactly one."""
    f = _open_file(path)
    names = list_datasets(f)
    if not dataset:
        if len(names) != 1:
            f.close()
            raise UserInputError(
                f"{path} holds {len(names)} datasets; choose one as {path}:DATASET "
                f"(datasets: {', '.join(names) or 'none'})."
            )
        dataset = names[0]
        source = f"{path}:{dataset}"
    ds = f.get(dataset.strip("/"))
    import h5py

    if not isinstance(ds, h5py.Dataset):
        f.close()
        raise UserInputError(
            f"dataset '{dataset}' does not exist in {path}; datasets there: "
            f"{', '.join(names) or 'none'}."
        )
    ndim = ds.ndim
    attrs: dict[str, Any] = {}
    for holder in (f, ds.parent, ds):  # dataset attributes win over group and file ones
        attrs.update({k: _plain(v) for k, v in holder.attrs.items()})
    axes = attrs.get("axes")
    axes = axes.lower() if isinstance(axes, str) and len(axes) == ndim else default_axes(ndim)
    size = voxel_size_from_attrs(attrs, ndim)
    if size is None:
        warn_no_voxel_size(source, f"no attribute {VOXEL_SIZE_KEYS_TEXT}")
        size = (1.0,) * ndim
    offset = offset_from_attrs(attrs, ndim) or (0.0,) * ndim
    storage_chunks = ds.chunks or tuple(min(64, s) for s in ds.shape)
    name, is_labels = ds.name, dtype_looks_like_labels(ds.dtype, ds.name)
    f.close()
    data = to_dask(HDF5Array(str(path), name), storage_chunks)
    return Volume(
        name=dataset.strip("/").split("/")[-1],
        data=data,
        multiscale=[data],
        voxel_size_nm=size,
        offset_nm=offset,
        axes=axes,
        is_labels=is_labels,
        source=source,
        level_voxel_sizes=[size],
        format="hdf5",
        storage_chunks=tuple(storage_chunks),
    )


def discover_hdf5(path: Path) -> list[Volume]:
    """Every dataset of 3 or more dimensions, in file order."""
    with _open_file(path) as f:
        names = [n for n in list_datasets(f) if f[n].ndim >= 3]
    return [open_hdf5(path, n, f"{path}:{n}") for n in names]


def _plain(value: Any) -> Any:
    """h5py attribute values as plain Python (bytes -> str, arrays -> lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        out = value.tolist()
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else out
    return value
