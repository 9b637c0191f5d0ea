"""Segmentation quality against dense ground truth: variation of information and adapted Rand error.

Conventions (the same as the connectomics literature and skimage.metrics):

* Only voxels where GT > 0 count (0 = unlabelled in the ground truth). With ``mask_zero``,
  voxels where the segmentation is 0 (unsegmented) are left out too; otherwise segmentation 0
  is one more segment.
* ``vi_split`` = H(SEG | GT), in bits: how much a ground-truth body is spread over several
  segments, i.e. over-segmentation / false splits. ``vi_merge`` = H(GT | SEG): how much a
  segment mixes several bodies, i.e. under-segmentation / false merges. ``vi`` = their sum.
  ``skimage.metrics.variation_of_information(gt, seg)`` returns ``(H(seg|gt), H(gt|seg))``:
  its first entry is the split term. (The shared data README names the two terms the other
  way round; their sum is right.)
* ``arand`` = skimage's adapted Rand error (1 - Rand F-score, alpha 0.5).

Why blockwise: both scores only need the contingency table of (GT id, SEG id) voxel counts.
Building it slab by slab with compact indices works for volumes larger than memory and for
uint64 ids (skimage's own table uses the raw ids as sparse indices, which fails for large ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress


def _as_array(volume: Any, what: str) -> Any:
    if isinstance(volume, (str, Path)):
        from napari_connectome.volumes import open_volume

        return open_volume(volume).data
    if hasattr(volume, "data") and hasattr(volume, "axes") and not isinstance(volume, np.ndarray):
        return volume.data  # a napari_connectome Volume
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        raise UserInputError(
            f"{what} must be a volume source or an array, not {type(volume).__name__}"
        )
    return volume


def contingency_counts(
    seg: Any,
    gt: Any,
    *,
    mask_zero: bool = False,
    slab: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Sparse (GT x SEG) voxel-count table over voxels with GT > 0, and the two label lists.

    Reads ``slab`` z-planes at a time (default: the array's z chunk, else 64).
    """
    from scipy import sparse

    progress = progress or no_progress
    seg = _as_array(seg, "SEG")
    gt = _as_array(gt, "GT")
    if tuple(seg.shape) != tuple(gt.shape):
        raise UserInputError(
            f"SEG has shape {tuple(seg.shape)} but GT has shape {tuple(gt.shape)}; evaluate needs "
            "two volumes of the same size (crop one, e.g. with a region of the other)"
        )
    for name, arr in (("SEG", seg), ("GT", gt)):
        kind = np.dtype(arr.dtype).kind
        if kind not in "iub":
            raise UserInputError(
                f"{name} has dtype {arr.dtype}; a segmentation must hold integer labels"
            )
    if len(seg.shape) == 0:
        raise UserInputError("SEG and GT are scalars, not volumes")
    if slab is None:
        chunks = getattr(gt, "chunks", None)
        first = chunks[0] if chunks else None
        if isinstance(first, tuple):  # dask: tuple of block sizes per axis
            first = first[0] if first else None
        slab = int(first) if first else 64
    slab = max(1, slab)
    counts: dict[tuple[int, int], int] = {}
    n = int(seg.shape[0])
    for start in range(0, n, slab):
        stop = min(n, start + slab)
        g = np.asarray(gt[start:stop]).ravel()
        s = np.asarray(seg[start:stop]).ravel()
        _refuse_negative_ids(g, "GT", start, stop)
        _refuse_negative_ids(s, "SEG", start, stop)
        keep = g != 0
        if mask_zero:
            keep &= s != 0
        g, s = g[keep], s[keep]
        if g.size:
            gu, gi = np.unique(g, return_inverse=True)
            su, si = np.unique(s, return_inverse=True)
            local = sparse.coo_array(
                (np.ones(g.size, np.int64), (gi.ravel(), si.ravel())), shape=(gu.size, su.size)
            )
            local.sum_duplicates()
            for r, c, v in zip(local.row, local.col, local.data):
                key = (int(gu[r]), int(su[c]))
                counts[key] = counts.get(key, 0) + int(v)
        progress(stop, n, "contingency table")
    if not counts:
        raise UserInputError(
            "GT has no labelled voxels (all 0)"
            + (" where SEG is non-zero" if mask_zero else "")
            + "; give a ground truth with labels > 0"
        )
    keys = np.array(list(counts), dtype=np.uint64)
    values = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    gt_ids, rows = np.unique(keys[:, 0], return_inverse=True)
    seg_ids, cols = np.unique(keys[:, 1], return_inverse=True)
    table = sparse.csr_array(
        (values, (rows.ravel(), cols.ravel())), shape=(gt_ids.size, seg_ids.size)
    )
    return table, gt_ids, seg_ids


NO_LABEL_UINT64 = 2**64 - 1  # -1 as uint64: CREMI's and others' "no label" (ignore) value


def _refuse_negative_ids(ids: np.ndarray, name: str, start: int, stop: int) -> None:
    """Ids are object numbers >= 0 (0 = unlabelled); a negative one in a signed volume is no id
    the scores can count (and would not fit the uint64 table), so say where it is. In GT the
    uint64 maximum too (:func:`refuse_no_label_ids`); in SEG it is one segment like any id, as
    its 0 is unless ``mask_zero``."""
    refuse_no_label_ids(ids, name, f"in z {start}:{stop}", uint64_max=name == "GT")


def refuse_no_label_ids(ids: np.ndarray, name: str, where: str, uint64_max: bool = True) -> None:
    """Refuse a negative id (an 'ignore' value of -1) or, with ``uint64_max``, the uint64
    maximum (-1 stored as uint64, CREMI's "no label"): in ground truth it would count as one
    huge body, so the user maps it to 0 (unannotated) first, with ``convert --background``."""
    if not ids.size or ids.dtype.kind not in "iu":
        return
    if ids.dtype.kind == "i":
        low = int(ids.min())
        if low >= 0:
            return
        value, what = low, f"negative ids ({low}, dtype {ids.dtype})"
    else:
        if not uint64_max or ids.dtype.itemsize < 8 or int(ids.max()) != NO_LABEL_UINT64:
            return
        value, what = (
            NO_LABEL_UINT64,
            f"the id {NO_LABEL_UINT64} (-1 as uint64, a 'no label' value)",
        )
    raise UserInputError(
        f"{name} holds {what} {where}; ids must be 0 (unlabelled) or more. If it marks voxels "
        f"without a label, map it to 0 first: `napari-connectome convert {name} "
        f"{name.lower()}-fixed.ome.zarr --labels --background {value}`"
    )


def evaluate_segmentation(
    seg: Any,
    gt: Any,
    *,
    mask_zero: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, float | int]:
    """VI (split, merge, total) and adapted Rand error of ``seg`` against ``gt`` (module docstring).

    ``seg``/``gt`` are arrays (numpy, dask, zarr) or volume sources such as ``file.h5:labels``.
    """
    from skimage.metrics import adapted_rand_error

    table, gt_ids, seg_ids = contingency_counts(seg, gt, mask_zero=mask_zero, progress=progress)
    n_voxels = int(table.sum())
    # skimage's variation_of_information(table=...) trips over its own shape check (0.26), so the
    # two conditional entropies are computed from the same table here: H(A|B) = H(A, B) - H(B).
    h_joint = _entropy(table.data / n_voxels)
    h_gt = _entropy(np.asarray(table.sum(axis=1)).ravel() / n_voxels)
    h_seg = _entropy(np.asarray(table.sum(axis=0)).ravel() / n_voxels)
    h_seg_given_gt = max(h_joint - h_gt, 0.0)
    h_gt_given_seg = max(h_joint - h_seg, 0.0)
    arand = adapted_rand_error(table=table)[0]
    return {
        "vi_split": float(h_seg_given_gt),
        "vi_merge": float(h_gt_given_seg),
        "vi": float(h_seg_given_gt + h_gt_given_seg),
        "arand": float(arand),
        "n_voxels": n_voxels,
        "gt_segments": int(gt_ids.size),
        "seg_segments": int(seg_ids.size),
    }


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in bits of a probability vector (zeros allowed)."""
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())
