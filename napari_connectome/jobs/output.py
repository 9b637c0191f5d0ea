"""The job's result: an OME-Zarr 0.5 labels image created complete before any worker starts.

Level 0 has one chunk per block write region, so each block writes exactly one chunk file and a
streaming client can copy that file as soon as the block's progress line appears. Levels 1.. are
strided (every second voxel), which keeps label ids intact, and are filled blockwise after
relabelling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_connectome.volumes.box import Box, chunk_box

Triple = tuple[int, int, int]


def level_shapes(shape: Triple, levels: int) -> list[Triple]:
    out = [tuple(shape)]
    for _ in range(1, levels):
        prev = out[-1]
        if min(prev) <= 1:
            break
        out.append(tuple(-(-s // 2) for s in prev))
    return out


def create_output(
    dest: Path,
    shape: Triple,
    block_shape: Triple,
    *,
    voxel_size_nm: tuple[float, ...],
    offset_nm: tuple[float, ...],
    levels: int,
    name: str,
    claim: bool = False,
) -> None:
    """Write group metadata and every (empty) level array in ``dest`` (which may already hold
    ``_job``); with ``claim`` also the (empty) FFN claim beside level 0, same chunks."""
    import zarr

    shapes = level_shapes(shape, levels)
    group = zarr.open_group(str(dest), mode="a", zarr_format=3)
    datasets = []
    for level, lshape in enumerate(shapes):
        chunks = tuple(min(b, s) for b, s in zip(block_shape, lshape))
        group.create_array(
            str(level),
            shape=lshape,
            chunks=chunks,
            dtype="uint64",
            fill_value=0,
            dimension_names=("z", "y", "x"),
            overwrite=True,
        )
        factor = 2**level
        scale = [float(v) * factor for v in voxel_size_nm]
        # the centre of voxel 0 of level n sits half a coarse voxel minus half a fine voxel further
        # in
        translation = [o + (factor - 1) * v / 2 for o, v in zip(offset_nm, voxel_size_nm)]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        )
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
                "datasets": datasets,
                "metadata": {"method": "strided subsampling (every 2nd voxel)"},
            }
        ],
        "image-label": {"version": "0.5", "source": {"image": "../"}},
    }
    if claim:
        from napari_connectome.ffn.segment_volume import create_claim

        create_claim(dest, shapes[0], tuple(min(b, s) for b, s in zip(block_shape, shapes[0])))
    from napari_connectome.volumes.output_safety import ownership_marker

    group.attrs.update(ownership_marker("run-job"))  # what --overwrite may replace


def open_level(dest: Path | str, level: int, mode: str = "r+"):
    import zarr

    return zarr.open_array(str(Path(dest) / str(level)), mode=mode)


def chunk_file(dest: Path | str, level: int, chunk_index: Triple) -> str:
    """Path of one chunk file relative to ``dest`` (what a streaming client copies)."""
    arr = open_level(dest, level, mode="r")
    key = arr.metadata.chunk_key_encoding.encode_chunk_key(tuple(chunk_index))
    return f"{level}/{key}"


def downsample_chunk(dest: Path | str, level: int, chunk_index: Triple) -> None:
    """Fill one chunk of ``level`` from ``level - 1`` by taking every second voxel."""
    src = open_level(dest, level - 1, mode="r")
    dst = open_level(dest, level)
    box = chunk_box(chunk_index, dst.chunks, dst.shape)
    source_box = Box(tuple(2 * a for a in box.start), tuple(2 * b for b in box.stop)).intersect(
        Box.from_shape(src.shape)
    )
    data = np.asarray(src[source_box.slices])[::2, ::2, ::2]
    dst[box.slices] = data
