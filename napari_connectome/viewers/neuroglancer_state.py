"""Neuroglancer viewer states for our volumes: plain JSON, as neuroglancer's URL and Python API
take it.

Neuroglancer ignores OME-Zarr's ``image-label``: a layer is a segmentation only when the state says
``"type": "segmentation"``, so the type comes from what we know (``Volume.is_labels``). Segment
ids are decimal strings (JSON numbers lose ids above 2^53). A proofreading project's merges become
``equivalences``: each segment made of several fragments is one equivalence set of fragment ids;
neuroglancer shows a set under its smallest member, so a selected segment is named by its
smallest fragment.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_connectome.errors import DataWarning

# Fragments in merged segments beyond which the full table is not sent to the browser (a state of
# ~20 MB of JSON); the selected segments' sets are sent instead, with a warning.
MAX_EQUIVALENCE_IDS = 1_000_000


@dataclass
class LayerSpec:
    """One neuroglancer layer: name, data source URL (``zarr3://http://...``, or a Python-served
    ``python://`` volume), and what makes it an image or a segmentation."""

    name: str
    source: Any  # a URL, or an object the neuroglancer package serves (LocalVolume)
    segmentation: bool
    segments: list[int] = field(default_factory=list)
    equivalences: list[list[int]] = field(default_factory=list)
    meshes: list[str] = field(default_factory=list)  # precomputed mesh sources (URLs)

    def to_json(self) -> dict[str, Any]:
        main = self.source if isinstance(self.source, str) else str(self.source)
        out: dict[str, Any] = {
            "type": "segmentation" if self.segmentation else "image",
            "source": [main, *self.meshes] if self.meshes else main,
            "name": self.name,
        }
        if self.segmentation:
            out["segments"] = [str(int(s)) for s in self.segments]
            if self.equivalences:
                out["equivalences"] = [[str(int(i)) for i in group] for group in self.equivalences]
        return out


def dimensions(voxel_size_nm_zyx: Sequence[float]) -> dict[str, list[Any]]:
    """The global coordinate space: x, y, z in voxels of level 0 (neuroglancer's own order)."""
    vz, vy, vx = (float(v) for v in voxel_size_nm_zyx)
    return {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]}


def viewer_state(
    layers: Sequence[LayerSpec],
    voxel_size_nm_zyx: Sequence[float],
    shape_zyx: Sequence[int],
    *,
    position_zyx: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A whole state: the layers, the voxel size, the view at the volume's centre (or at
    ``position_zyx``, voxels), the segmentation selected for the side panel."""
    centre = (
        [float(p) + 0.5 for p in position_zyx]
        if position_zyx is not None
        else [s / 2.0 for s in shape_zyx]
    )
    state: dict[str, Any] = {
        "dimensions": dimensions(voxel_size_nm_zyx),
        "position": centre[::-1],
        "crossSectionScale": 1,
        "projectionScale": float(max(shape_zyx)) * 2,
        "layers": [lay.to_json() for lay in layers],
        "layout": "4panel",
    }
    seg = [lay.name for lay in layers if lay.segmentation]
    if seg:
        state["selectedLayer"] = {"layer": seg[0], "visible": True}
    return state


def equivalences_from_table(
    frag_ids: np.ndarray,
    seg: np.ndarray,
    *,
    only_segments: Iterable[int] | None = None,
    max_ids: int = MAX_EQUIVALENCE_IDS,
) -> list[list[int]]:
    """The equivalence sets of a fragment -> segment table: the fragments of each segment with two
    or more (deleted fragments, segment 0, are left out). Sorted, smallest fragment first.

    When more than ``max_ids`` fragments lie in merged segments, only the sets of
    ``only_segments`` are returned, with a :class:`DataWarning` that says so.
    """
    frag_ids = np.asarray(frag_ids, np.uint64)
    seg = np.asarray(seg, np.uint64)
    keep = seg != 0
    f, s = frag_ids[keep], seg[keep]
    segs, counts = np.unique(s, return_counts=True)
    merged = segs[counts > 1]
    n_ids = int(counts[counts > 1].sum())
    if n_ids > max_ids:
        chosen = np.asarray(sorted({int(x) for x in (only_segments or [])}), np.uint64)
        warnings.warn(
            f"{n_ids} fragments lie in {len(merged)} merged segments, more than the "
            f"{max_ids} a browser state holds well: neuroglancer gets the merges of the "
            f"{len(chosen)} selected segment(s) only; export the project (proofread export) to "
            "show every merge",
            DataWarning,
            stacklevel=2,
        )
        merged = np.intersect1d(merged, chosen)
    if not len(merged):
        return []
    mask = np.isin(s, merged)
    f, s = f[mask], s[mask]
    order = np.lexsort((f, s))
    f, s = f[order], s[order]
    cuts = np.flatnonzero(np.diff(s)) + 1
    groups = [g.tolist() for g in np.split(f, cuts)]
    return sorted(groups, key=lambda g: g[0])
