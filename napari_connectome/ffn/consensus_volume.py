"""The split consensus of two segmentation files (``napari-connectome consensus A B DEST``).

For runs made apart, e.g. two jobs over the same input, one with
``segmenter.inference.seed_order: reverse``; ``segment --oversegment`` does both runs and the
consensus in one command. Both inputs are read whole (three label arrays in memory: about 24 bytes
per voxel); everything is checked before anything is written, and the result is written to a
hidden sibling of DEST and renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.consensus import DEFAULT_MIN_SIZE, ConsensusStats, split_consensus
from napari_connectome.progress import ProgressCallback, no_progress

REPORT_FILE = "consensus.json"
"""Beside the labels: the inputs, the rule's settings and :class:`ConsensusStats`."""


def _open_labels(source: str, what: str) -> Any:
    from napari_connectome.volumes import open_volume, require_3d

    vol = require_3d(open_volume(source), "a consensus")
    if vol.dtype.kind not in "iub":
        raise UserInputError(
            f"{what} {source} has dtype {vol.dtype}, not integer ids; give a segmentation "
            "(e.g. the OME-Zarr labels that segment writes), not EM"
        )
    return vol


def consensus_volumes(
    a: str,
    b: str,
    dest: str | Path,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    unmatched: str = "drop",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[Path, ConsensusStats]:
    """Write the split consensus of segmentations ``a`` and ``b`` (sources that ``open_volume``
    reads, same shape, voxel size and offset) to ``dest`` as OME-Zarr labels with
    ``dest / REPORT_FILE``. The labels keep ``a``'s voxel size and offset."""
    from napari_connectome.ffn.segment_volume import write_claim
    from napari_connectome.volumes import write_ome_zarr
    from napari_connectome.volumes.atomic import (
        check_destination,
        commit,
        remove_path,
        temp_sibling,
    )
    from napari_connectome.volumes.output_safety import refuse_overlap

    progress = progress or no_progress
    dest = Path(dest).expanduser()
    refuse_overlap(dest, [a, b])
    check_destination(dest, overwrite)
    va, vb = _open_labels(a, "A"), _open_labels(b, "B")
    if tuple(va.shape) != tuple(vb.shape):
        raise UserInputError(
            f"A {a} has shape {tuple(va.shape)} but B {b} has {tuple(vb.shape)}; a consensus "
            "needs two segmentations of the same region"
        )
    for name in ("voxel_size_nm", "offset_nm"):
        if not np.allclose(getattr(va, name)[-3:], getattr(vb, name)[-3:]):
            raise UserInputError(
                f"A and B have different {name.removesuffix('_nm').replace('_', ' ')} "
                f"({tuple(getattr(va, name))} and {tuple(getattr(vb, name))} nm); a consensus "
                "needs two segmentations of the same region"
            )
    # the rule's own checks (min_size, unmatched, negative ids) run before the output exists
    progress(0, 3, "reading A")
    arr_a = np.asarray(va.data)
    progress(1, 3, "reading B")
    arr_b = np.asarray(vb.data)
    progress(2, 3, "consensus")
    labels, stats = split_consensus(arr_a, arr_b, min_size=min_size, unmatched=unmatched)
    del arr_a, arr_b
    tmp = temp_sibling(dest, "consensus")
    try:
        write_ome_zarr(
            labels,
            tmp,
            voxel_size_nm=tuple(float(v) for v in va.voxel_size_nm[-3:]),
            offset_nm=tuple(float(v) for v in va.offset_nm[-3:]),
            labels=True,
            name=dest.name.split(".")[0],
        )
        claim = _claims(va, vb, labels)
        if claim is not None:
            write_claim(tmp, claim)
        report = {
            "rule": "split consensus (napari_connectome.ffn.consensus)",
            "a": str(a),
            "b": str(b),
            **stats.to_dict(),
        }
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        commit(tmp, dest, overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    progress(3, 3, f"{stats.segments} supervoxels")
    return dest, stats


def _claims(va: Any, vb: Any, labels: np.ndarray) -> np.ndarray | None:
    """The runs' FFN claims (``segment`` stores them beside the labels) combined for the
    consensus; None when neither run has one of the consensus's shape."""
    import zarr

    from napari_connectome.ffn.consensus import consensus_claim
    from napari_connectome.ffn.segment_volume import stored_claim

    found = []
    for vol in (va, vb):
        path = stored_claim(getattr(vol, "source", None))
        if path is not None:
            arr = zarr.open_array(str(path), mode="r")
            if tuple(arr.shape) == labels.shape and arr.dtype == np.uint8:
                found.append(arr[...])
    return consensus_claim(found, labels) if found else None
