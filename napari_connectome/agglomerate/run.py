"""``agglomerate``: supervoxels, scored region graph and agglomerated labels of a segmentation.

Passes, each blockwise on Dask (a given client, a LocalCluster on 127.0.0.1, or this process for
small volumes), each reporting through the progress callback:

1. fill: every unsegmented voxel (0) goes to a supervoxel (:func:`.kernels.fill_block`);
   the supervoxels are written to ``DEST/supervoxels`` (OME-Zarr).
2. region graph of the supervoxels with the EM as evidence (``DEST/region_graph``,
   :mod:`napari_connectome.graph`): what proofreading projects read.
3. contact evidence per edge (:func:`.kernels.block_contacts`), aligned with the graph's edges;
   for a job's output also each edge's faces on block faces (:mod:`.seams`, two planes per seam).
4. optional FFN resegmentation of the contacts whose evidence lies within ``band`` of the
   threshold (:mod:`.reseg`), batched.
5. the rule (:mod:`.rule`) and the agglomerated labels at ``DEST`` (OME-Zarr labels), the scores
   in ``DEST/scores``, what was done in ``DEST/agglomeration.json``.

Everything is built in a hidden sibling of DEST and renamed into place when complete; inputs are
checked before anything is created.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.agglomerate import kernels
from napari_connectome.agglomerate import reseg as reseg_module
from napari_connectome.agglomerate.rule import mean_affinity_agglomerate
from napari_connectome.agglomerate.seg_model import band_for, made_by
from napari_connectome.errors import UserInputError
from napari_connectome.evaluate import NO_LABEL_UINT64
from napari_connectome.progress import ProgressCallback, no_progress
from napari_connectome.volumes.sources import absolute_source
from napari_connectome.volumes.units import relative_spacing

FORMAT = "napari-connectome-agglomeration"
FORMAT_VERSION = 1
META = "agglomeration.json"
SCORES = "scores"
SUPERVOXELS = "supervoxels"
REGION_GRAPH = "region_graph"
DEFAULT_THRESHOLD = 0.65
DEFAULT_SEED_DISTANCE = 12.0
DEFAULT_BAND = 0.1
DEFAULT_MAX_RESEG = 200
DEFAULT_BATCH = 8  # contacts resegmented at once (two boxes each in one forward pass)
DEFAULT_CLAIM_WEIGHT = 0.5  # the FFN claim's share of the affinity where it is known
HALO = 16  # voxels of context around a fill block (watershed basins rarely reach further)
SMOOTH_HALO = 4  # context for the EM smoothing of the contact pass
BLOCK = 256  # voxels per block axis (rounded to whole chunks)
MAX_ID = 2**62  # watershed needs signed ids; new seeds are numbered above the input's ids


def _blocks(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    grid = [math.ceil(s / b) for s, b in zip(shape, block)]
    return [
        tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(idx, block, shape))
        for idx in np.ndindex(*grid)
    ]


def _grow(sl: tuple[slice, ...], lo: int, hi: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - lo, 0), min(s.stop + hi, n)) for s, n in zip(sl, shape))


def _inner(sl: tuple[slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(s.start - o.start, s.stop - o.start) for s, o in zip(sl, outer))


# ---- tasks (run on workers: small picklable arguments, each reads its own voxels) ------------


def rank_table(em_dtype: str, lo: float, hi: float) -> tuple[float, float, int]:
    """(lo, step, bins) of the intensity histogram the ranks come from."""
    dt = np.dtype(em_dtype)
    if dt.kind in "iu" and dt.itemsize <= 2:
        info = np.iinfo(dt)
        return float(info.min), 1.0, int(info.max) - int(info.min) + 1
    span = max(hi - lo, 1e-12)
    return float(lo), span / 4096, 4096


def fill_task(
    seg: Any,
    em: Any,
    sl: tuple[slice, ...],
    shape: tuple,
    out: str,
    table: tuple,
    seed_distance: float,
    new_id_base: int,
    fill: bool,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> dict:
    """Fill one block, write it to the supervoxels' level 0; return its input digest, its
    largest id and the histogram of its smoothed EM."""
    import zarr

    halo = HALO if fill else SMOOTH_HALO  # the smoothing sees the same voxels in any block
    outer = _grow(sl, halo, halo, shape)
    s = np.asarray(seg.read(outer))
    if s.dtype.kind == "i" and s.size and int(s.min()) < 0:
        raise UserInputError(
            f"the segmentation holds negative ids ({int(s.min())}) near {[x.start for x in sl]}: "
            "ids must be 0 (unsegmented) or positive. If it marks unsegmented voxels, map it to "
            f"0 first: `napari-connectome convert SEG seg-fixed.ome.zarr --labels --background "
            f"{int(s.min())}`"
        )
    core = _inner(sl, outer)
    digest = hashlib.blake2b(np.ascontiguousarray(s[core]).tobytes(), digest_size=16).hexdigest()
    e = np.asarray(em.read(outer))
    if fill:
        res = kernels.fill_block(
            s, e, core, seed_distance=seed_distance, new_id_base=new_id_base, spacing=spacing
        )
    else:
        res = np.ascontiguousarray(s[core].astype(np.uint64))
    zarr.open_array(out, mode="r+")[sl] = res
    lo, step, bins = table
    sm = kernels.smoothed(e, spacing)[core]
    idx = np.clip(((sm - lo) / step).astype(np.int64), 0, bins - 1)
    return {
        "digest": digest,
        "max": int(res.max()) if res.size else 0,
        "zeros": int((s[core] == 0).sum()),
        "hist": np.bincount(idx.ravel(), minlength=bins),
    }


def minmax_task(em: Any, sl: tuple[slice, ...]) -> tuple[float, float]:
    e = np.asarray(em.read(sl))
    return float(e.min()), float(e.max())


def contacts_task(
    sv: Any,
    em: Any,
    sl: tuple[slice, ...],
    shape: tuple,
    cdf: np.ndarray,
    table: tuple,
    seg: Any = None,
    claim: Any = None,
    margin: int = 0,
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> dict:
    """The contact evidence of one block (faces whose low voxel lies in it); with ``seg`` and
    ``claim`` (readers of the input and its FFN claim) also the claim counts; ``margin``: the
    contact points keep this far from the volume's border where they can (the resegmentation
    box's half-size)."""
    outer = _grow(sl, SMOOTH_HALO, SMOOTH_HALO + 1, shape)
    rank = kernels.rank_of(np.asarray(em.read(outer)), cdf, table[0], table[1], spacing)
    labels = np.asarray(sv.read(outer)).astype(np.uint64, copy=False)
    start = [s.start - o.start for s, o in zip(sl, outer)]
    stop = [min(s.stop + 1, o.stop) - o.start for s, o in zip(sl, outer)]
    crop = tuple(slice(a, b) for a, b in zip(start, stop))
    n_low = [s.stop - s.start for s in sl]
    extra = {}
    if seg is not None and claim is not None:
        near = kernels.claim_near(
            np.asarray(claim.read(outer)), np.asarray(seg.read(outer)) != 0, spacing
        )
        extra = {"claim": near[0][crop], "segmented": near[1][crop]}
    return kernels.block_contacts(
        labels[crop],
        rank[crop],
        n_low,
        [s.start for s in sl],
        shape=shape,
        margin=margin,
        **extra,
    )


def relabel_task(sv: Any, sl: tuple[slice, ...], ids: np.ndarray, seg_of: np.ndarray, out: str):
    import zarr

    block = np.asarray(sv.read(sl)).astype(np.uint64, copy=False)
    pos = np.clip(np.searchsorted(ids, block), 0, max(len(ids) - 1, 0))
    res = np.where(block == 0, np.uint64(0), seg_of[pos]) if len(ids) else block
    zarr.open_array(out, mode="r+")[sl] = res
    return 1


# ---- the driver -----------------------------------------------------------------------------


class _Runner:
    """Submit tasks to a Dask client or run them here; iterate results with progress."""

    def __init__(self, client: Any, voxels: int, n_tasks: int, workers: int | None) -> None:
        from napari_connectome.graph.compute import IN_PROCESS_MAX_VOXELS, local_client

        self.client, self.cluster = client, None
        if client is None and voxels > IN_PROCESS_MAX_VOXELS and n_tasks > 1:
            self.client, self.cluster = local_client(workers)

    def map(self, fn, arg_list: list[tuple], progress: ProgressCallback, what: str) -> list:
        total = len(arg_list)
        progress(0, total, what)
        if self.client is None:
            out = []
            for i, args in enumerate(arg_list):
                out.append(fn(*args))
                progress(i + 1, total, what)
            return out
        from dask.distributed import as_completed

        futs = [self.client.submit(fn, *a, pure=False) for a in arg_list]
        index = {f.key: i for i, f in enumerate(futs)}
        out = [None] * total
        try:
            for n, fut in enumerate(as_completed(futs), 1):
                out[index[fut.key]] = fut.result()
                progress(n, total, what)
        except BaseException:
            self.client.cancel(futs)
            raise
        return out

    @classmethod
    def in_process(cls) -> _Runner:
        """A runner for this process only (work that cannot go to the workers)."""
        return cls(None, 0, 0, None)

    def worker_count(self) -> int:
        """Workers the tasks spread over (1: this process)."""
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def close(self) -> None:
        if self.cluster is not None:
            self.client.close()
            self.cluster.close()


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (0.0 <= t <= 1.0) or not math.isfinite(t):
        raise UserInputError(
            f"threshold {threshold} is outside 0..1: merge scores are ranks of EM brightness and "
            "resegmentation fractions, both in 0..1 (default 0.65)"
        )
    return t


def _text(v: Any) -> str:
    """What a Volume or a VoxelSource (a job's ROI of its input) is called in messages."""
    return str(getattr(v, "source", None) or getattr(v, "text", "") or "the volume")


def check_inputs(seg: Any, em: Any) -> None:
    from napari_connectome.volumes.volume import Volume, require_3d

    for v in (seg, em):
        if isinstance(v, Volume):
            require_3d(v, "agglomerate")
    if not np.issubdtype(seg.dtype, np.integer):
        raise UserInputError(
            f"SEG {_text(seg)} holds {seg.dtype} values, not integer ids: give a segmentation"
        )
    if em.dtype.kind not in "uif":
        raise UserInputError(f"EM {_text(em)} has dtype {em.dtype}: give a grayscale EM volume")
    if em.dtype.kind in "iu" and em.dtype.itemsize >= 4:
        raise UserInputError(
            f"EM {_text(em)} has dtype {em.dtype}, the dtype of label ids, not of EM: give the "
            "grayscale EM volume the segmentation was made from, not a segmentation"
        )
    if tuple(em.shape) != tuple(seg.shape):
        raise UserInputError(
            f"EM {_text(em)} has shape {list(em.shape)} but SEG {_text(seg)} has "
            f"{list(seg.shape)}: give the EM volume the segmentation was made from (same region)"
        )


def voxel_size_of(seg: Any, em: Any) -> tuple[float, float, float]:
    """The voxel size (nm, z y x) the passes measure distances in: SEG's, or the EM's where SEG
    gives none (a reader that finds none reports 1 nm per axis, never a real EM voxel)."""

    def size(v: Any) -> tuple[float, ...] | None:
        s = getattr(v, "voxel_size_nm", None)
        return tuple(float(x) for x in s) if s is not None and len(s) == 3 else None

    own, other = size(seg), size(em)
    if own is not None and own != (1.0, 1.0, 1.0):
        if other is not None and other != (1.0, 1.0, 1.0) and not np.allclose(own, other):
            import warnings

            from napari_connectome.errors import DataWarning

            warnings.warn(
                f"SEG {_text(seg)} says its voxels are {list(own)} nm but EM {_text(em)} says "
                f"{list(other)} nm; SEG's is used. Check that the two are the same region",
                DataWarning,
                stacklevel=2,
            )
        return own
    if other is not None and other != (1.0, 1.0, 1.0):
        import warnings

        from napari_connectome.errors import DataWarning

        warnings.warn(  # the reader's "1 nm assumed" for SEG is not what agglomerate uses
            f"SEG {_text(seg)} gives no voxel size; the EM's {list(other)} nm is used for SEG "
            "too (recorded as voxel_size_nm in DEST/agglomeration.json)",
            DataWarning,
            stacklevel=2,
        )
    return other or own or (1.0, 1.0, 1.0)


def _block_shape(seg: Any, block_shape: Sequence[int] | None) -> tuple[int, int, int]:
    """Whole storage chunks, about BLOCK voxels per axis (or ``block_shape``, checked)."""
    chunks = getattr(seg, "storage_chunks", None) or getattr(seg, "chunks", None)
    chunks = tuple(int(c) for c in (chunks or (64, 64, 64)))
    if block_shape is not None:
        from napari_connectome.graph.compute import check_block_shape

        return check_block_shape(block_shape, tuple(seg.shape), chunks)
    return tuple(
        min(max(c, BLOCK // c * c), math.ceil(s / c) * c) for c, s in zip(chunks, seg.shape)
    )


def agglomerate(
    seg: Any,
    em: Any,
    dest: str | os.PathLike,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    model: tuple[Any, Any] | None = None,
    model_name: str | None = None,
    model_source: str | os.PathLike | None = None,
    fill: bool = True,
    seed_distance: float = DEFAULT_SEED_DISTANCE,
    band: float | None = None,
    max_reseg: int = DEFAULT_MAX_RESEG,
    precision: str = "auto",
    batch: int = DEFAULT_BATCH,
    device: str = "auto",
    block_shape: Sequence[int] | None = None,
    seams: Any = None,
    claim: bool | None = None,
    claim_weight: float = DEFAULT_CLAIM_WEIGHT,
    client: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Agglomerate ``seg`` (a Volume) with ``em`` (a Volume of the same shape) into ``dest``.

    ``model``: (module, config) of an FFN for resegmentation scores, or None for EM evidence
    only. ``seams``: the :class:`.seams.BlockSeams` of a job's output (its block faces and seam
    check), which the proofreading queue weighs; None for a single-canvas segmentation (when
    ``seg`` is a finished job's output folder they are read from it). ``claim``: use the FFN
    claim that ``segment`` stores in ``SEG/ffn_claim`` (None: where present; False: never),
    weighed ``claim_weight`` against the EM in the affinity. The resegmentation runs on the
    Dask workers when there are any (``client``, or the local cluster of a large volume) and
    ``model_source`` (the model's folder) says where they load the model from; each worker uses
    ``device`` (``auto``: its GPU where it has one). Without workers it runs in this process.
    ``band``: resegment the contacts whose evidence lies within it of the threshold; None: every
    contact (:data:`.seg_model.OWN_BAND`) when ``seg`` is an over-segmentation that
    ``model_source`` made (as ``seg`` records it), else :data:`DEFAULT_BAND`. Returns ``dest``.
    """
    from napari_connectome.graph.sources import as_source
    from napari_connectome.volumes.atomic import (
        check_destination,
        commit,
        remove_path,
        temp_sibling,
    )
    from napari_connectome.volumes.output_safety import refuse_overlap

    progress = progress or no_progress
    t0 = time.perf_counter()
    threshold = check_threshold(threshold)
    check_inputs(seg, em)
    if model is not None:
        from napari_connectome.agglomerate.reseg import check_fov_fits
        from napari_connectome.ffn.runner import check_device_name, resolve_device

        check_fov_fits(seg.shape, model[1].fov_size, model[1].deltas)
        # refused before any output: a CUDA device this machine lacks (with a Dask client the
        # workers' GPUs count, which this machine cannot see: only the name is checked)
        if client is not None:
            check_device_name(device)
        else:
            resolve_device(device)
    seg_source = getattr(seg, "source", None)
    made = (
        made_by(seg_source, model_source) if model is not None else None
    )  # reads SEG's record once
    own_model = made is not None
    if band is None:
        band = band_for(own_model and made.oversegment)
    elif not 0.0 <= float(band) <= 1.0:
        raise UserInputError(f"the band must lie in [0, 1], not {band}")
    dest = Path(dest).expanduser()
    # the model's folder too: the panel and a job pass one the command line never saw
    refuse_overlap(dest, [seg_source, getattr(em, "source", None), model_source])
    check_destination(dest, overwrite)

    shape = tuple(int(s) for s in seg.shape)
    seams = _seams_for(seg, seams, shape)
    claim_path = None if claim is False else _claim_for(seg, shape, required=bool(claim))
    if not 0.0 <= float(claim_weight) <= 1.0:
        raise UserInputError(f"the claim weight must lie in [0, 1], not {claim_weight}")
    block = _block_shape(seg, block_shape)
    blocks = _blocks(shape, block)
    seg_src, em_src = as_source(seg, "SEG"), as_source(em, "EM")
    tmp = temp_sibling(dest)
    runner = _Runner(client, math.prod(shape), len(blocks), workers)
    timings: dict[str, float] = {}
    try:
        summary = _build(
            tmp,
            seg,
            em,
            seg_src,
            em_src,
            shape,
            block,
            blocks,
            runner,
            progress,
            timings,
            threshold=threshold,
            model=model,
            model_source=model_source,
            fill=fill,
            seed_distance=seed_distance,
            band=band,
            max_reseg=max_reseg,
            precision=precision,
            batch=batch,
            device=device,
            seams=seams,
            claim_path=claim_path,
            claim_weight=float(claim_weight),
        )
        summary["seconds"] = {k: round(v, 3) for k, v in timings.items()}
        summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
        summary["model"] = model_name
        reseg = model is not None
        # which folder the model came from ("default" names whatever the zoo held then)
        summary["model_source"] = (
            str(Path(model_source).resolve()) if reseg and model_source else None
        )
        summary["model_made_seg"] = own_model  # SEG records this model (seg_model.py)
        summary["precision"] = precision if reseg else None
        summary["device"] = device if reseg else None
        (tmp / META).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        commit(tmp, dest, overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        runner.close()
    progress(1, 1, "agglomerate: done")
    return dest


def _build(
    tmp: Path,
    seg,
    em,
    seg_src,
    em_src,
    shape,
    block,
    blocks,
    runner,
    progress,
    timings,
    *,
    threshold,
    model,
    model_source,
    fill,
    seed_distance,
    band,
    max_reseg,
    precision,
    batch,
    device,
    seams,
    claim_path,
    claim_weight,
) -> dict:
    from napari_connectome.graph import RegionGraph, compute_region_graph
    from napari_connectome.volumes import create_ome_zarr, open_volume
    from napari_connectome.volumes.ome_zarr_writer import build_pyramid

    voxel = voxel_size_of(seg, em)
    spacing = relative_spacing(voxel)
    # output chunks divide the blocks, so no two tasks ever write the same chunk
    chunks = label_chunks(block)
    create_ome_zarr(
        tmp, shape, np.uint64, voxel_size_nm=voxel, chunks=chunks, labels=True, name="agglomerated"
    )
    create_ome_zarr(
        tmp / SUPERVOXELS,
        shape,
        np.uint64,
        voxel_size_nm=voxel,
        chunks=chunks,
        labels=True,
        name="supervoxels",
    )
    # 1. fill ------------------------------------------------------------------------------
    t = time.perf_counter()
    lo_hi = (0.0, 1.0)
    if em.dtype.kind == "f" or np.dtype(em.dtype).itemsize > 2:
        ends = runner.map(
            minmax_task, [(em_src.reader, sl) for sl in blocks], progress, "agglomerate: EM range"
        )
        lo_hi = (min(e[0] for e in ends), max(e[1] for e in ends))
    table = rank_table(str(em.dtype), *lo_hi)
    seg_max = max(
        runner.map(
            max_task, [(seg_src.reader, sl) for sl in blocks], progress, "agglomerate: largest id"
        )
    )
    if seg_max >= MAX_ID:
        hint = "renumber first"
        if seg_max == NO_LABEL_UINT64:
            hint = (
                "if that is a 'no segment' value (-1 as uint64, CREMI's), map it to 0 first: "
                "`napari-connectome convert SEG seg-fixed.ome.zarr --labels --background "
                f"{seg_max}`"
            )
        raise UserInputError(
            f"SEG holds ids up to {seg_max}; agglomerate needs ids below 2**62 ({hint})"
        )
    stride = math.prod(b + 2 * HALO for b in block)
    if seg_max + stride * (len(blocks) + 1) >= MAX_ID:
        raise UserInputError("SEG's ids leave no room for new supervoxel ids: renumber first")
    sv_path = str(tmp / SUPERVOXELS / "0")
    args = [
        (
            seg_src.reader,
            em_src.reader,
            sl,
            shape,
            sv_path,
            table,
            seed_distance,
            seg_max + i * stride,
            fill,
            spacing,
        )
        for i, sl in enumerate(blocks)
    ]
    filled = runner.map(fill_task, args, progress, "agglomerate: filling unsegmented voxels")
    hist = np.sum([f["hist"] for f in filled], axis=0).astype(np.float64)
    cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([list(shape), str(seg.dtype)]).encode())
    for f in filled:
        digest.update(f["digest"].encode())
    input_fp = digest.hexdigest()
    build_pyramid(tmp / SUPERVOXELS)
    timings["fill"] = time.perf_counter() - t
    # 2. region graph ---------------------------------------------------------------------------
    t = time.perf_counter()
    sv_vol = open_volume(str(tmp / SUPERVOXELS))
    compute_region_graph(
        sv_vol, tmp / REGION_GRAPH, image=em, client=runner.client, progress=progress
    )
    graph = RegionGraph.open(tmp / REGION_GRAPH)
    timings["region_graph"] = time.perf_counter() - t
    # 3. contact evidence -------------------------------------------------------------------
    t = time.perf_counter()
    sv_src = _zarr_reader(sv_path)
    claim_src = None if claim_path is None else _zarr_reader(claim_path)
    seg_reader = None if claim_src is None else seg_src.reader
    margin = 0  # with a model, points where its boxes fit whole (else the brightest face)
    if model is not None:
        from napari_connectome.agglomerate.reseg import box_radius

        margin = int(box_radius(model[1].fov_size, model[1].deltas).max())
    args = [
        (sv_src, em_src.reader, sl, shape, cdf, table, seg_reader, claim_src, margin, spacing)
        for sl in blocks
    ]
    parts = runner.map(contacts_task, args, progress, "agglomerate: contact evidence")
    c = kernels.reduce_contacts(parts)
    gu = np.asarray(graph._array("edges/u")[:], np.uint64)
    gv = np.asarray(graph._array("edges/v")[:], np.uint64)
    if not (np.array_equal(gu, c["u"]) and np.array_equal(gv, c["v"])):
        raise RuntimeError("contact evidence and region graph disagree on the edges (a bug)")
    area = c["area"]
    mean_rank = c["rank_sum"] / np.maximum(area, 1)
    claimed = c["claim_hits"] / np.maximum(c["claim_faces"], 1)
    claimed = np.where(c["claim_faces"] > 0, claimed, np.nan)
    evidence = claim_affinity(mean_rank, claimed, c["claim_faces"], area, claim_weight)
    seam_area = _seam_faces(runner, progress, sv_src, blocks, shape, seams, c["u"], c["v"], graph)
    timings["contacts"] = time.perf_counter() - t
    # 4. FFN resegmentation near the threshold ------------------------------------------------
    reseg = np.full(len(area), np.nan)
    n_reseg = 0
    if model is not None and max_reseg > 0 and len(area):
        from napari_connectome.agglomerate.reseg import can_cross, resegment_ordered

        t = time.perf_counter()
        near = np.flatnonzero(
            (np.abs(evidence - threshold) <= band) & can_cross(evidence, threshold)
        )
        near = near[np.argsort(np.abs(evidence[near] - threshold), kind="stable")]
        reseg[near] = resegment_ordered(
            runner,
            em_src.reader,
            shape,
            sv_path,
            np.stack([c["u"][near], c["v"][near]], axis=1),
            c["point"][near],
            model,
            model_source=model_source,
            limit=max_reseg,
            batch=batch,
            precision=precision,
            device=device,
            progress=progress,
        )
        n_reseg = int(np.isfinite(reseg).sum())
        timings["resegmentation"] = time.perf_counter() - t
    affinity = reseg_module.mix(evidence, reseg)
    # 5. rule, labels, tables ------------------------------------------------------------------
    t = time.perf_counter()
    ids = graph.fragment_ids
    agg = mean_affinity_agglomerate(c["u"], c["v"], affinity, area, ids, threshold)
    args = [(sv_src, sl, agg.ids, agg.segment_of, str(tmp / "0")) for sl in blocks]
    runner.map(relabel_task, args, progress, "agglomerate: writing labels")
    build_pyramid(tmp)
    columns = {
        "area": area,
        "mean_rank": mean_rank,
        "p10": kernels.percentile_from_hist(c["hist"], 0.1),
        "p50": kernels.percentile_from_hist(c["hist"], 0.5),
        "p90": kernels.percentile_from_hist(c["hist"], 0.9),
        "point": c["point"],
        "reseg": reseg,
        "claim": claimed,
        "claim_faces": c["claim_faces"],
        "affinity": affinity,
        "merged": agg.merged_edge,
        "merges": agg.merges,
        "segment_ids": agg.ids,
        "segment_of": agg.segment_of,
    }
    if seam_area is not None:
        columns["seam_area"] = seam_area
    write_scores(tmp / SCORES, columns)
    timings["agglomerate"] = time.perf_counter() - t
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rule": "mean-affinity hierarchical agglomeration (docs/agglomeration.md)",
        "threshold": threshold,
        "fill": "watershed" if fill else "none",
        "seed_distance": seed_distance,
        "voxel_size_nm": list(voxel),  # distances and smoothing count the finest axis's voxels
        "band": band if model is not None else None,
        "max_reseg": max_reseg if model is not None else None,
        "input": absolute_source(_text(seg)),  # the queue opens the EM from any folder
        "em": absolute_source(_text(em)),
        "input_fingerprint": input_fp,
        "region_graph_fingerprint": graph.fingerprint,
        "shape": list(shape),
        "block": list(block),  # the input fingerprint's blocks (agglomerate --reuse checks it)
        "n_supervoxels": len(ids),
        "n_edges": len(area),
        "n_resegmented": n_reseg,
        "n_segments": len(np.unique(agg.segment_of)),
        "n_merges": len(agg.merges),
        "unsegmented_voxels": sum(f["zeros"] for f in filled),
        "seams": seams.as_json() if seams is not None else None,
        "claim": None
        if claim_path is None
        else {"weight": claim_weight, "source": absolute_source(claim_path)},
    }


def claim_applies(claimed: np.ndarray, claim_faces: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Per edge, whether the FFN claim speaks for the contact: FFN segmented both sides of at
    least half of its faces (elsewhere the fill made the contact and FFN has nothing to say)."""
    return np.isfinite(claimed) & (2 * np.asarray(claim_faces) >= np.asarray(area))


def claim_affinity(
    mean_rank: np.ndarray,
    claimed: np.ndarray,
    claim_faces: np.ndarray,
    area: np.ndarray,
    weight: float,
) -> np.ndarray:
    """Each edge's affinity before resegmentation: the EM evidence, mixed with the FFN claim
    (``weight`` of it) where the claim applies (:func:`claim_applies`)."""
    ok = claim_applies(claimed, claim_faces, area)
    mixed = (1.0 - weight) * mean_rank + weight * np.nan_to_num(claimed)
    return np.where(ok, mixed, mean_rank)


def _claim_for(seg: Any, shape: tuple, *, required: bool) -> str | None:
    """``SEG/ffn_claim`` when SEG is a folder that holds one of SEG's shape (else None, or an
    error when the user asked for it)."""
    from napari_connectome.ffn.segment_volume import CLAIM, stored_claim

    source = getattr(seg, "source", None)
    path = stored_claim(source)
    if path is None:
        if required:
            raise UserInputError(
                f"{source} holds no FFN claim ({CLAIM}/): only segmentations written by "
                "`napari-connectome segment` have one; agglomerate without it"
            )
        return None
    import zarr

    arr = zarr.open_array(str(path), mode="r")
    if tuple(arr.shape) != tuple(shape) or arr.dtype != np.uint8:
        raise UserInputError(
            f"{path} is {arr.dtype} {list(arr.shape)}, but SEG is {list(shape)}: the FFN claim "
            "belongs to another segmentation; remove it or agglomerate with --no-claim"
        )
    return str(path)


def _seams_for(seg: Any, seams: Any, shape: tuple) -> Any:
    """The block seams to weigh: given ones (checked to fit), else a job output's own."""
    from napari_connectome.agglomerate.seams import seams_of_job_output

    if seams is None:
        source = getattr(seg, "source", None)
        seams = seams_of_job_output(source) if isinstance(source, str | Path) else None
    if seams is None or not seams.any:  # one block: no faces between blocks
        return None
    try:
        seams.check_fits(shape)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    return seams


def _seam_faces(runner, progress, sv_src, blocks, shape, seams, u, v, graph) -> Any:
    """Each edge's faces on the job's block faces per axis, or None without seams."""
    from napari_connectome.agglomerate import seams as seam_faces

    if seams is None:
        return None
    planes = seams.planes
    args = [
        (sv_src, sl, shape, planes)
        for sl in blocks
        if any(sl[ax].start < p <= sl[ax].stop for ax in range(3) for p in planes[ax])
    ]
    parts = runner.map(seam_faces.seam_faces_task, args, progress, "agglomerate: block seams")
    table = seam_faces.reduce_seam_faces(parts)
    return seam_faces.align_to_edges(table, u, v, graph.fragment_ids)


def label_chunks(block: Sequence[int]) -> tuple[int, ...]:
    """Output chunks that divide the blocks, so no two tasks ever write the same chunk."""
    return tuple(max(d for d in range(1, min(64, b) + 1) if b % d == 0) for b in block)


def write_scores(path: Path, columns: dict[str, Any]) -> None:
    """The score columns as one zarr v3 group (``DEST/scores``)."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for key, data in columns.items():
        data = np.asarray(data)
        group.create_array(key, data=data, chunks=(max(1, min(65536, len(data))), *data.shape[1:]))


def max_task(seg: Any, sl: tuple[slice, ...]) -> int:
    b = np.asarray(seg.read(sl))
    return int(b.max()) if b.size else 0


def _zarr_reader(path: str) -> Any:
    import zarr

    from napari_connectome.graph.sources import ZarrReader

    return ZarrReader(zarr.open_array(path, mode="r"), path)
