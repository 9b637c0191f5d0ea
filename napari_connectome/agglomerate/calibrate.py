"""The proofreading queue's calibration fitted on ground truth of the user's own data.

Why: the shipped calibrations (:mod:`.queue`) were fitted on FIB-25, one on Google's published
segmentation and one on our small model's output. Another tissue, stain, resolution or model
weighs the contact features differently, and a lab with a densely annotated cube should not
need Python to rank its queue by it. :func:`fit_on_truth` fits one from agglomerate outputs and
their ground truth; :func:`save_calibration` writes it as JSON (never a pickle), which the
queue panel and ``ProofreadQueue(dest, calibration=load_calibration(path))`` read.

The truth of a candidate: a merge is right when the contact's two supervoxels belong to one
ground-truth body, a pair left apart is right when its two segments do not. A side's body is
the one most of its annotated voxels (GT > 0) belong to. A side with fewer than
``min_annotated`` annotated voxels is unknown and its candidates are left out, so a ground-truth
cube inside a larger volume calibrates on the decisions inside it. The voxels are read block by
block (memory grows with a block and the table of (supervoxel, body) pairs, not the volume).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.agglomerate.queue import (
    FEATURES,
    GAIN_WEIGHT,
    SHAPE_FEATURES,
    Calibration,
    Candidates,
    fit_features,
    read_candidates,
)
from napari_connectome.errors import UserInputError
from napari_connectome.evaluate import refuse_no_label_ids
from napari_connectome.progress import ProgressCallback, no_progress

FORMAT = "napari-connectome-queue-calibration"
FORMAT_VERSION = 1
MIN_ANNOTATED = 100  # annotated voxels a side needs before its body counts as known
MIN_EACH = 5  # real errors and right decisions a fit needs at least (else it fits noise)
FIRST = (20, 40)  # the queue's first items the figures judge


@dataclass(frozen=True)
class Judged:
    """One agglomerate output's candidates with their truth: ``same`` (the two sides are one
    body) where ``known``."""

    name: str
    threshold: float
    candidates: Candidates
    same: np.ndarray
    known: np.ndarray


def _body_pairs(sv: Any, gt: Any, progress: ProgressCallback, what: str) -> tuple:
    """(supervoxel, body, voxels) over the annotated voxels, block by block."""
    from napari_connectome.agglomerate.run import _blocks

    chunks = getattr(sv, "storage_chunks", None) or (64, 64, 64)
    block = tuple(max(int(c), 128 // int(c) * int(c)) for c in chunks)
    blocks = _blocks(tuple(sv.shape), block)
    keys = np.zeros((2, 0), np.uint64)
    n = np.zeros(0, np.int64)
    progress(0, len(blocks), what)
    for i, sl in enumerate(blocks):
        g = np.asarray(gt.data[sl])
        refuse_no_label_ids(g, "GT", f"near {[x.start for x in sl]}")
        keep = g > 0
        if keep.any():  # the supervoxels are read only where something is annotated
            s = np.asarray(sv.data[sl]).astype(np.uint64, copy=False)
            pk, pn = np.unique(
                np.stack([s[keep], g[keep].astype(np.uint64)]), axis=1, return_counts=True
            )
            keys, inv = np.unique(np.c_[keys, pk], axis=1, return_inverse=True)
            n = np.bincount(inv.ravel(), weights=np.r_[n, pn], minlength=keys.shape[1])
            n = n.astype(np.int64)
        progress(i + 1, len(blocks), what)
    return keys[0], keys[1], n


def _majority(group: np.ndarray, body: np.ndarray, n: np.ndarray) -> tuple[dict, dict]:
    """Per group: the body most of its annotated voxels belong to, and its annotated voxels."""
    if not len(group):
        return {}, {}
    keys, inv = np.unique(np.stack([group, body]), axis=1, return_inverse=True)
    total = np.bincount(inv.ravel(), weights=n, minlength=keys.shape[1])
    order = np.lexsort((-total, keys[0]))
    first = order[np.r_[True, keys[0][order][1:] != keys[0][order][:-1]]]
    g_ids, g_inv = np.unique(keys[0], return_inverse=True)
    annotated = np.bincount(g_inv.ravel(), weights=total)
    return (
        dict(zip(keys[0][first].tolist(), keys[1][first].tolist())),
        dict(zip(g_ids.tolist(), annotated.tolist())),
    )


def judge_output(
    dest: str | os.PathLike,
    gt: Any,
    *,
    min_annotated: int = MIN_ANNOTATED,
    progress: ProgressCallback | None = None,
) -> Judged:
    """The candidates of agglomerate output ``dest`` and their truth from ``gt`` (a Volume of
    the same shape, 0 = not annotated)."""
    import zarr

    from napari_connectome.volumes import open_volume

    progress = progress or no_progress
    dest = Path(dest)
    cand = read_candidates(dest)  # refuses a folder that is not an agglomerate output
    meta = json.loads((dest / "agglomeration.json").read_text())
    sv = open_volume(str(dest / "supervoxels"))
    if tuple(gt.shape) != tuple(sv.shape):
        raise UserInputError(
            f"the ground truth {getattr(gt, 'source', '')} has shape {list(gt.shape)} but "
            f"{dest} has {list(sv.shape)}: give ground truth over the region it was made from "
            "(0 where nothing is annotated)"
        )
    if not np.issubdtype(gt.dtype, np.integer):
        raise UserInputError(
            f"the ground truth {getattr(gt, 'source', '')} holds {gt.dtype} values, not body ids"
        )
    s_ids, body, n = _body_pairs(sv, gt, progress, f"calibration: reading {dest.name}")
    scores = zarr.open_group(str(dest / "scores"), mode="r")
    ids = np.asarray(scores["segment_ids"][:], np.uint64)
    seg_of = np.asarray(scores["segment_of"][:], np.uint64)
    sv_body, sv_annotated = _majority(s_ids, body, n)
    segs = seg_of[np.clip(np.searchsorted(ids, s_ids), 0, max(len(ids) - 1, 0))]
    seg_body, seg_annotated = _majority(segs, body, n)

    def side(k: int, merged: bool) -> tuple[int, float]:
        if merged:
            return sv_body.get(k, 0), sv_annotated.get(k, 0.0)
        s = int(seg_of[np.searchsorted(ids, np.uint64(k))])
        return seg_body.get(s, 0), seg_annotated.get(s, 0.0)

    same, known = [], []
    for merged, a, b in zip(cand.merged.tolist(), cand.a.tolist(), cand.b.tolist()):
        (ba, na), (bb, nb) = side(a, merged), side(b, merged)
        known.append(min(na, nb) >= min_annotated)
        same.append(ba == bb and ba != 0)
    return Judged(
        str(dest), float(meta["threshold"]), cand, np.array(same, bool), np.array(known, bool)
    )


def _features(j: Judged, shape: bool) -> tuple[np.ndarray, np.ndarray]:
    return j.candidates.features(j.threshold, shape)[j.known], j.same[j.known]


def _wrong(j: Judged) -> np.ndarray:
    merged = j.candidates.merged[j.known]
    same = j.same[j.known]
    return np.where(merged, ~same, same)


def figures(j: Judged, calibration: Calibration) -> dict:
    """How the queue ranks ``j``'s known candidates with ``calibration``: real errors among the
    first items (:data:`FIRST`) and the AUC of the chance the rule is wrong."""
    x, _ = _features(j, calibration.shape)
    p_same = calibration.p_same(x)
    merged = j.candidates.merged[j.known]
    p_wrong = np.where(merged, 1 - p_same, p_same)
    wrong = _wrong(j)
    gain = j.candidates.gain()[j.known]
    order = np.argsort(-(p_wrong * gain**GAIN_WEIGHT), kind="stable")
    out = {f"real_errors_first_{k}": round(float(wrong[order[:k]].mean()), 3) for k in FIRST}
    area = auc(p_wrong, wrong)
    out["auc"] = round(area, 3) if math.isfinite(area) else None  # None: one class only
    out["candidates"], out["real_errors"] = len(wrong), int(wrong.sum())
    return out


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """The chance a real error outranks a right decision (ties count half)."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(np.r_[pos, neg])
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit_on_truth(judged: list[Judged], *, shape: bool = False) -> Calibration:
    """One calibration from the known candidates of every output."""
    parts = [_features(j, shape) for j in judged]
    x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, len(FEATURES)))
    y = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, bool)
    wrong = np.concatenate([_wrong(j) for j in judged]) if judged else np.zeros(0, bool)
    if int(wrong.sum()) < MIN_EACH or int((~wrong).sum()) < MIN_EACH:
        raise UserInputError(
            f"the ground truth shows {int(wrong.sum())} real errors and {int((~wrong).sum())} "
            f"right decisions among {len(wrong)} candidates it covers; a calibration needs at "
            f"least {MIN_EACH} of each: annotate a larger region, or give more outputs"
        )
    w = fit_features(x, y.astype(float))
    return Calibration(float(w[0]), tuple(float(c) for c in w[1:]))


def save_calibration(
    calibration: Calibration, path: str | os.PathLike, *, about: dict, overwrite: bool = False
) -> Path:
    """Write ``calibration`` (and ``about``: what it was fitted on) as JSON, atomically."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise UserInputError(f"{path} exists; choose another file or pass --overwrite")
    if path.exists() and not _is_calibration(path):
        raise UserInputError(
            f"{path} exists and is not a queue calibration; --overwrite replaces only a "
            "calibration this command wrote"
        )
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **calibration.as_dict(), **about}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _is_calibration(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_calibration(path: str | os.PathLike) -> Calibration:
    """A calibration :func:`save_calibration` wrote; anything else is refused with why."""
    path = Path(path).expanduser()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read the queue calibration {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserInputError(
            f'{path} is not a queue calibration (no "format": "{FORMAT}"); make one with '
            "`napari-connectome calibrate-queue`"
        )
    if doc.get("format_version") != FORMAT_VERSION:
        raise UserInputError(
            f"{path} is queue calibration format {doc.get('format_version')}; this version "
            f"reads {FORMAT_VERSION}: fit it again with `napari-connectome calibrate-queue`"
        )
    names = doc.get("features")
    if names not in (list(FEATURES), [*FEATURES, *SHAPE_FEATURES]):
        raise UserInputError(
            f"{path} weighs the features {names}, not the queue's ({list(FEATURES)}, or with "
            "the shape rule's): fit it again with this version"
        )
    try:
        bias = float(doc["bias"])
        weights = tuple(float(w) for w in doc["weights"])
    except (KeyError, TypeError, ValueError):
        raise UserInputError(f"{path}: its bias and weights are not numbers") from None
    if len(weights) != len(names) or not all(math.isfinite(v) for v in (bias, *weights)):
        raise UserInputError(f"{path}: it needs one finite weight per feature ({len(names)})")
    return Calibration(bias, weights)
