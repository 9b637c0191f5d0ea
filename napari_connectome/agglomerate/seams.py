"""Block seams of a job's output as evidence for the proofreading queue.

A blockwise job segments each block apart and matches objects across the faces between blocks
(napari_connectome.jobs.reconcile). Where matching fails, a neurite is cut at the face: two
segments that touch over a block face and nowhere else. The job's seam check
(napari_connectome.jobs.seams) measures how much more often labels change across block faces
than across the planes inside blocks; the excess is the share of face changes that are cuts:
``excess = max(0, 1 - interior rate / face rate)`` per axis.

Agglomerating a job's output, each edge of the region graph gets its faces on block faces per
axis (``seam_area``, counted here from the two planes at each seam, never the whole volume), and
the queue turns them into a chance that a pair left apart is a cut:
``p_seam = sum_axis seam_area * excess / area`` (:func:`seam_cut_chance`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AXES = "zyx"


@dataclass(frozen=True)
class BlockSeams:
    """Where a job's block faces lie in its output, and what its seam check found there.

    ``planes[axis]``: the coordinates ``p`` (output voxels) where the faces between voxels
    ``p - 1`` and ``p`` are block faces; ``excess[axis]``: the share of label changes across
    those faces that the seam check attributes to cuts (0: no more than inside blocks)."""

    planes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    excess: tuple[float, float, float]

    @classmethod
    def of_grid(
        cls, shape: Sequence[int], block_shape: Sequence[int], report: dict | None
    ) -> BlockSeams:
        """The seams of a grid of ``block_shape`` blocks over ``shape`` (origin 0), with the
        excess from a seam check ``report`` (:meth:`SeamCounts.report`; None: unknown, 0)."""
        planes = tuple(tuple(range(int(b), int(s), int(b))) for s, b in zip(shape, block_shape))
        return cls(planes, excess_of_report(report or {}))  # type: ignore[arg-type]

    def as_json(self) -> dict:
        return {
            "planes": [list(p) for p in self.planes],
            "excess": [round(float(e), 6) for e in self.excess],
        }

    @classmethod
    def from_json(cls, obj: dict) -> BlockSeams:
        planes = tuple(tuple(int(p) for p in ax) for ax in obj["planes"])
        excess = tuple(float(e) for e in obj["excess"])
        if len(planes) != 3 or len(excess) != 3:
            raise ValueError(f"block seams need three axes, not {obj!r}")
        return cls(planes, excess)  # type: ignore[arg-type]

    def check_fits(self, shape: Sequence[int]) -> None:
        for ax, planes in enumerate(self.planes):
            if any(not 0 < p < int(shape[ax]) for p in planes):
                raise ValueError(
                    f"block seams along {AXES[ax]} at {list(planes)} lie outside a volume of "
                    f"{list(shape)} voxels: they belong to another volume"
                )

    @property
    def any(self) -> bool:
        return any(self.planes)


def excess_of_report(report: dict) -> tuple[float, float, float]:
    """Per axis, the share of face changes that are cuts: ``max(0, 1 - 1 / ratio)``."""
    out = []
    for name in AXES:
        ratio = (report.get(name) or {}).get("ratio")
        out.append(max(0.0, 1.0 - 1.0 / float(ratio)) if ratio else 0.0)
    return tuple(out)  # type: ignore[return-value]


def seams_of_job_output(path: str | Path) -> BlockSeams | None:
    """The block seams of a finished job's output folder (None: not a finished job's output).

    The job writes level 0 with one chunk per block (napari_connectome.jobs.layout) and its seam
    check into ``_job/state.json``."""
    import zarr

    root = Path(path)
    state_file = root / "_job" / "state.json"
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text())
        level0 = zarr.open_array(str(root / "0"), mode="r")
    except (OSError, ValueError, KeyError):
        return None
    if state.get("state") != "done":
        return None
    return BlockSeams.of_grid(level0.shape, level0.chunks, state.get("seams"))


def seam_faces_task(sv: Any, sl: tuple[slice, ...], shape: tuple, planes: tuple) -> dict:
    """Per pair of supervoxels ``u < v`` (both nonzero) touching across a block face whose low
    voxel lies in block ``sl``: the faces per axis. Reads two planes per seam, never the block."""
    us, vs, axes = [], [], []
    for ax in range(3):
        for p in planes[ax]:
            if not (sl[ax].start <= p - 1 < sl[ax].stop) or p >= shape[ax]:
                continue
            slab = tuple(slice(p - 1, p + 1) if a == ax else sl[a] for a in range(3))
            two = np.moveaxis(np.asarray(sv.read(slab)).astype(np.uint64, copy=False), ax, 0)
            a, b = two[0].ravel(), two[1].ravel()
            sel = (a != b) & (a > 0) & (b > 0)
            us.append(np.minimum(a[sel], b[sel]))
            vs.append(np.maximum(a[sel], b[sel]))
            axes.append(np.full(int(sel.sum()), ax, np.int64))
    if not us:
        return empty_seam_faces()
    return reduce_seam_faces(
        [{"u": np.concatenate(us), "v": np.concatenate(vs), "axis": np.concatenate(axes)}]
    )


def empty_seam_faces() -> dict[str, np.ndarray]:
    return {
        "u": np.zeros(0, np.uint64),
        "v": np.zeros(0, np.uint64),
        "faces": np.zeros((0, 3), np.int64),
    }


def reduce_seam_faces(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One table (sorted by (u, v)) from parts given per face (``axis``) or per pair (``faces``)."""
    parts = [p for p in parts if len(p["u"])]
    if not parts:
        return empty_seam_faces()
    u = np.concatenate([p["u"] for p in parts])
    v = np.concatenate([p["v"] for p in parts])
    faces = np.concatenate(
        [p["faces"] if "faces" in p else np.eye(3, dtype=np.int64)[p["axis"]] for p in parts]
    )
    order = np.lexsort((v, u))
    u, v, faces = u[order], v[order], faces[order]
    start = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
    return {"u": u[start], "v": v[start], "faces": np.add.reduceat(faces, start, axis=0)}


def align_to_edges(
    table: dict[str, np.ndarray], edge_u: np.ndarray, edge_v: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """The seam faces per axis of each region-graph edge ((n_edges, 3), 0 where none); ``ids``
    are the graph's sorted fragment ids, edges sorted by (u, v)."""
    out = np.zeros((len(edge_u), 3), np.int64)
    if not len(table["u"]) or not len(edge_u):
        return out
    n = np.int64(len(ids))
    key_e = np.searchsorted(ids, edge_u).astype(np.int64) * n + np.searchsorted(ids, edge_v)
    key_s = np.searchsorted(ids, table["u"]).astype(np.int64) * n + np.searchsorted(ids, table["v"])
    pos = np.clip(np.searchsorted(key_e, key_s), 0, len(key_e) - 1)
    if not np.array_equal(key_e[pos], key_s):
        raise RuntimeError("seam faces between supervoxels that share no edge (a bug)")
    out[pos] = table["faces"]
    return out


def seam_cut_chance(seam_area: np.ndarray, area: np.ndarray, excess: Sequence[float]) -> np.ndarray:
    """Per contact: the chance that it is a cut by a block face, ``sum_axis seam_area * excess /
    area`` (0..1)."""
    expected = np.asarray(seam_area, float).reshape(-1, 3) @ np.asarray(excess, float)
    return np.clip(expected / np.maximum(np.asarray(area, float), 1.0), 0.0, 1.0)
