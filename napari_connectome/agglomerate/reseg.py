"""FFN resegmentation of a contact (google/ffn's idea, our code): does the network, started
inside one supervoxel near the contact, flood into the other?

For a pair (a, b) and a point on their contact, a box around the point is cut from the EM and
the supervoxels. In each of a and b the seed is the voxel deepest inside it (largest distance to
its surface) within ``analysis radius`` of the point, at least ``EXCLUSION`` voxels from the
point itself (a seed on the contact would prove nothing). The FFN grows one object from each seed
in the box, unconstrained by the segmentation, with the model's own options (no minimum size).
The score is the mean of the two recovered fractions: the part of b (inside the analysis
region) that a's object covers, and the part of a that b's object covers. 1: each seed's object
floods the other side (one neuron); 0: neither crosses the contact.

All boxes of a batch grow together through :func:`napari_connectome.ffn.inference.segment_many`
(one batched forward pass per round, as inference batches blocks). :func:`resegment_ordered`
spreads the contacts over Dask workers (a job's own, or the local cluster), each on its own
device, and still scores exactly the contacts one pass in order would.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress

EXCLUSION = 3  # voxels around the contact point where no seed is placed
ROOM = 1  # moves of room around the FOV in the box (seeds lie within ROOM moves of the contact)


RESEG_WEIGHT = 0.5  # the resegmentation score's share of a contact's affinity where it has one


def mix(evidence: np.ndarray, reseg: np.ndarray) -> np.ndarray:
    """Each contact's affinity: its evidence (EM and claim), mixed with its resegmentation score
    where it has one (NaN: not resegmented)."""
    scored = np.isfinite(reseg)
    mixed = (1.0 - RESEG_WEIGHT) * evidence + RESEG_WEIGHT * np.nan_to_num(reseg)
    return np.where(scored, mixed, evidence)


def can_cross(evidence: np.ndarray, threshold: float) -> np.ndarray:
    """The contacts whose affinity some score in [0, 1] could put on either side of the
    threshold. Scoring the others cannot change their own verdict, only the mean affinity of
    the groups they join: that was worse on 2 of 10 held-out crops (VI +0.1 on one) and equal
    on the rest, at up to twice the cost (bench_reseg_replay.py, docs/benchmarks.md)."""
    w = RESEG_WEIGHT
    e = np.asarray(evidence, np.float64)
    return ((1.0 - w) * e + w >= threshold) & ((1.0 - w) * e < threshold)


def box_radius(fov_size: Sequence[int], deltas: Sequence[int]) -> np.ndarray:
    """Half-size of the box grown in (z, y, x): the FOV's half plus ``ROOM`` moves, so seeds
    within that many moves of the contact have a whole FOV around them."""
    return np.asarray(fov_size, np.int64) // 2 + ROOM * np.asarray(deltas, np.int64)


def check_fov_fits(shape: Sequence[int], fov_size: Sequence[int], deltas: Sequence[int]) -> None:
    """Refuse a model whose resegmentation box does not fit in the volume."""
    need = 2 * box_radius(fov_size, deltas) + 1
    if any(int(s) < int(n) for s, n in zip(shape, need)):
        raise UserInputError(
            f"the model's field of view {list(fov_size)} with moves {list(deltas)} needs boxes of "
            f"{need.tolist()} voxels for resegmentation, but the volume is {list(shape)}: use a "
            "model with a smaller field of view, a larger volume, or no --model"
        )


def _seed_in(mask: np.ndarray, centre: np.ndarray, margin: np.ndarray, radius: int) -> Any:
    from scipy import ndimage

    if not mask.any():
        return None
    dist = ndimage.distance_transform_edt(np.pad(mask, 1)).astype(np.float32)[1:-1, 1:-1, 1:-1]
    grid = np.indices(mask.shape).reshape(3, -1).T
    off = np.abs(grid - centre).max(axis=1)
    ok = (
        mask.ravel()
        & (off <= radius)
        & (off >= EXCLUSION)
        & np.all(grid >= margin, axis=1)
        & np.all(grid < np.asarray(mask.shape) - margin, axis=1)
    )
    if not ok.any():
        return None
    flat = np.where(ok, dist.ravel(), -1.0)
    return tuple(int(c) for c in grid[int(np.argmax(flat))])


def resegment_pairs(
    em: Any,
    supervoxels: Any,
    pairs: np.ndarray,
    points: np.ndarray,
    model: Any,
    config: Any,
    *,
    batch: int = 8,
    precision: str = "auto",
    device: str = "cpu",
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Resegmentation score of pairs (u, v) at their contact points, in the given order until
    ``limit`` pairs are scored; NaN where no seed fits or the limit was reached first."""
    from napari_connectome.ffn.inference import segment_many
    from napari_connectome.ffn.options import options_for_model
    from napari_connectome.ffn.runner import LockstepRunner

    progress = progress or no_progress
    radius = box_radius(config.fov_size, config.deltas)
    margin = np.asarray(config.fov_size, np.int64) // 2
    analysis = int(radius.min() - margin.max())
    shape = np.asarray(supervoxels.shape, np.int64)
    options = options_for_model(config, min_segment_size=0, min_boundary_dist=0)
    runner = LockstepRunner(model, device=device, precision=precision, batch=batch)
    out = np.full(len(pairs), np.nan)
    limit = len(pairs) if limit is None else int(limit)
    scored, k = 0, 0
    while k < len(pairs) and scored < limit:
        jobs, images, seeds = [], [], []
        while k < len(pairs) and len(jobs) < min(batch, limit - scored):
            p = np.asarray(points[k], np.int64)
            lo = np.clip(p - radius, 0, shape - (2 * radius + 1))
            sl = tuple(slice(int(a), int(a + 2 * r + 1)) for a, r in zip(lo, radius))
            sv = np.asarray(supervoxels[sl])
            centre = p - lo
            masks = [sv == pairs[k][0], sv == pairs[k][1]]
            found = [_seed_in(m, centre, margin, analysis) for m in masks]
            if None not in found:  # else no seed fits: the pair keeps its EM evidence only
                near = np.abs(np.indices(sv.shape) - centre[:, None, None, None]).max(axis=0)
                region = near <= analysis
                jobs.append((k, masks[0] & region, masks[1] & region))
                img = np.asarray(em[sl])
                images += [img, img]
                seeds += [[found[0]], [found[1]]]
            k += 1
        if jobs:
            results = segment_many(
                images, model, config, options, seeds=seeds, runner=runner, speculate=False
            )
            for j, (idx, in_a, in_b) in enumerate(jobs):
                obj_a = results[2 * j].labels > 0
                obj_b = results[2 * j + 1].labels > 0
                f_b = (obj_a & in_b).sum() / max(int(in_b.sum()), 1)
                f_a = (obj_b & in_a).sum() / max(int(in_a.sum()), 1)
                out[idx] = 0.5 * (f_a + f_b)
            scored += len(jobs)
        progress(scored, limit, "agglomerate: FFN resegmentation")
    return out


class ReaderView:
    """Slicing over a worker reader (:mod:`napari_connectome.graph.sources`), for the boxes."""

    def __init__(self, reader: Any, shape: Sequence[int]) -> None:
        self.reader, self.shape = reader, tuple(shape)

    def __getitem__(self, sl: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.reader.read(sl))


_LOADING = threading.Lock()


@functools.lru_cache(maxsize=2)
def _worker_model(model_dir: str, device: str) -> tuple[Any, Any]:
    from napari_connectome.ffn.checkpoint import load_model

    return load_model(model_dir, device=device)


def _model_here(model: Any, device: str) -> tuple[Any, Any]:
    """(module, config): as given in this process, or loaded once per worker process from the
    model's folder (a worker's threads share it)."""
    if isinstance(model, tuple):
        return model
    with _LOADING:
        return _worker_model(str(model), device)


def resegment_task(
    em_reader: Any,
    shape: Sequence[int],
    sv_path: str,
    pairs: np.ndarray,
    points: np.ndarray,
    model: tuple[Any, Any] | str,
    batch: int,
    precision: str,
    device: str,
) -> np.ndarray:
    """One task: every pair of ``pairs`` scored (NaN where no seed fits), on this worker's
    device (``auto``: its GPU where it has one; ``ffn.runner.worker_device``)."""
    import zarr

    from napari_connectome.ffn.runner import worker_device

    dev = worker_device(device)
    module, config = _model_here(model, dev)
    sv = zarr.open_array(sv_path, mode="r")
    return resegment_pairs(
        ReaderView(em_reader, shape),
        sv,
        pairs,
        points,
        module,
        config,
        batch=batch,
        precision=precision,
        device=dev,
    )


def resegment_ordered(
    runner: Any,
    em_reader: Any,
    shape: Sequence[int],
    sv_path: str,
    pairs: np.ndarray,
    points: np.ndarray,
    model: tuple[Any, Any],
    *,
    model_source: str | None = None,
    limit: int,
    batch: int = 8,
    precision: str = "auto",
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Scores of ``pairs`` (most wanted first) until ``limit`` are scored, on ``runner``'s
    workers (agglomerate's runner: a Dask client, or this process). Workers load the model from
    ``model_source`` (its folder; a module cannot travel); without one, or without workers, it
    runs here with ``model``.

    Waves: each takes the next ``limit - scored`` pairs, cut into a few tasks per worker. A wave
    can score no more than it was given, and the next one starts where it ended, so the pairs
    scored are exactly those one pass in order would score, whatever the number of workers."""
    progress = progress or no_progress
    what = "agglomerate: FFN resegmentation"
    out = np.full(len(pairs), np.nan)
    limit = min(int(limit), len(pairs))
    if runner.client is None or model_source is None:
        runner, shared = runner.in_process(), model
    else:
        shared = str(model_source)
    workers = runner.worker_count()
    scored, k = 0, 0
    progress(0, limit, what)
    while k < len(pairs) and scored < limit:
        take = min(limit - scored, len(pairs) - k)
        # a few tasks per worker; never more than 8 batches each, so progress keeps moving
        size = max(batch, min(math.ceil(take / (4 * workers)), 8 * batch))
        cuts = [(a, min(a + size, k + take)) for a in range(k, k + take, size)]

        def wave_progress(done: int, total: int, _msg: str = "", _at=(k, size, take)) -> None:
            # pairs tried so far: grows within a wave and from one wave to the next
            progress(min(limit, _at[0] + min(done * _at[1], _at[2])), limit, what)

        args = [
            (em_reader, shape, sv_path, pairs[a:b], points[a:b], shared, batch, precision, device)
            for a, b in cuts
        ]
        for (a, b), part in zip(cuts, runner.map(resegment_task, args, wave_progress, what)):
            out[a:b] = part
        k += take
        scored = int(np.isfinite(out).sum())
    progress(limit, limit, what)  # done (``n_resegmented`` says how many had seeds that fit)
    return out
