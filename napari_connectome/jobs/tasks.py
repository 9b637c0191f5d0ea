"""The functions Dask runs on workers, one call per block or face. Each is idempotent: it returns
early when its result file exists, and writes results atomically."""

from __future__ import annotations

import os
import socket
import time

import numpy as np

from napari_connectome.jobs.grid import Block, BlockGrid, seam_region
from napari_connectome.jobs.layout import JobLayout, atomic_write_bytes
from napari_connectome.jobs.output import chunk_file, downsample_chunk, open_level
from napari_connectome.jobs.spec import JobSpec

_SEGMENTERS: dict[str, object] = {}  # per worker process: the model is loaded once, not per block


def _segmenter(spec: JobSpec):
    from napari_connectome.jobs.segmenters import make_segmenter

    key = spec.fingerprint()
    if key not in _SEGMENTERS:
        _SEGMENTERS[key] = make_segmenter(spec.segmenter)
        if spec.segmenter.kind == "ffn":
            _use_allocation(spec)
    return _SEGMENTERS[key]


def _use_allocation(spec: JobSpec) -> None:
    """Torch threads for this worker: its share of the cores the allocation gave the node.

    Dask starts workers with ``OMP_NUM_THREADS=1``, so without this an FFN job uses one core per
    worker whatever it was given. On someone else's Dask cluster the worker's own thread count is
    the share.
    """
    import torch

    from napari_connectome.ffn.threads import job_threads

    if spec.backend.kind == "dask":
        try:
            from distributed import get_worker

            threads = int(get_worker().state.nthreads)
        except (ImportError, ValueError, AttributeError):
            return
    else:
        from napari_connectome.jobs.cluster import default_workers

        threads = job_threads(default_workers(spec) * spec.backend.threads_per_worker)
    torch.set_num_threads(max(1, threads))


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return None


def segment_block(spec_json: str, grid: BlockGrid, index: tuple[int, int, int]) -> dict:
    """Segment one block's read region, store it with local ids 1..n, and write its provisional ids
    (unique per block) into the output chunk so viewers see it before reconciliation."""
    import fastremap

    from napari_connectome.jobs.source import read_region

    spec = JobSpec.model_validate_json(spec_json)
    layout = JobLayout(spec.output)
    block = grid.block(index)
    info = layout.read_block_info(block)
    if info is not None:
        return {**info, "skipped": True}
    t0 = time.perf_counter()
    mask = None
    claim = None
    if spec.mask:
        mask = read_region(spec.mask, block.read) > 0
    if mask is not None and not mask.any():
        labels = np.zeros(block.read.shape, np.uint32)
    else:
        image = read_region(spec.input, block.read)
        labels, claim = _segment(_segmenter(spec), image)
        if mask is not None:
            labels[~mask] = 0
        labels, _ = fastremap.renumber(labels, preserve_zero=True, in_place=True)
        labels = labels.astype(np.uint32 if labels.max(initial=0) < 2**32 else np.uint64)
    n = int(labels.max(initial=0))
    provisional = labels[block.write_slices_in_read].astype(np.uint64)
    provisional[provisional > 0] += np.uint64(block.flat + 1) << np.uint64(32)
    claim = _store_claim(spec.output, block, grid, claim, labels)
    level0 = open_level(spec.output, 0)
    level0[block.output_slices(grid.roi_start)] = provisional
    written_t = time.time()  # the output chunk is complete from here on
    info = {
        "block": list(block.index),
        "written_t": round(written_t, 4),
        "n_segments": n,
        "seconds": round(time.perf_counter() - t0, 4),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "worker_name": _worker_name(),
    }
    layout.save_block(block, labels, info, claim)
    return info


def _segment(segmenter, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The block's labels (uint64) and, from a segmenter that has one, its FFN claim."""
    with_claim = getattr(segmenter, "segment_with_claim", None)
    labels, claim = with_claim(image) if with_claim is not None else (segmenter(image), None)
    labels = np.asarray(labels, dtype=np.uint64)
    if labels.shape != image.shape:
        raise RuntimeError(f"segmenter returned shape {labels.shape} for a block of {image.shape}")
    if claim is not None and np.shape(claim) != image.shape:
        raise RuntimeError(f"segmenter returned a claim of {np.shape(claim)} for {image.shape}")
    return labels, claim


def _claim_array(output: str):
    """``OUTPUT/ffn_claim`` opened for writing, or None when the output has none."""
    from napari_connectome.ffn.segment_volume import stored_claim

    path = stored_claim(output)
    if path is None:
        return None
    import zarr

    return zarr.open_array(str(path), mode="r+")


def _store_claim(output: str, block: Block, grid: BlockGrid, claim, labels) -> np.ndarray | None:
    """Write the block's part of ``OUTPUT/ffn_claim`` (its write region, 0 where it labelled
    nothing) and return its read region's claim, which the block keeps with its labels for
    neighbours that fill their holes from its context. None (nothing written) when the output
    has no claim: an output made before jobs stored the claim, where a claim with some blocks
    missing would read as evidence against every merge there."""
    arr = None if claim is None else _claim_array(output)
    if arr is None:
        return None
    claim = np.where(labels > 0, np.asarray(claim, dtype=np.uint8), 0).astype(np.uint8)
    arr[block.output_slices(grid.roi_start)] = claim[block.write_slices_in_read]
    return claim


def match_face(
    spec_json: str, grid: BlockGrid, index: tuple[int, int, int], axis: int
) -> np.ndarray:
    """Matched (local id in lower block, local id in upper block) pairs across one face."""
    from napari_connectome.jobs.reconcile import match_overlap

    spec = JobSpec.model_validate_json(spec_json)
    layout = JobLayout(spec.output)
    a = grid.block(index)
    nxt = list(index)
    nxt[axis] += 1
    b = grid.block(tuple(nxt))
    path = layout.face_npy(a, axis)
    if path.exists():
        return np.load(path, allow_pickle=False)
    seam = seam_region(a, b, axis, spec.match.slab)

    def crop(block: Block) -> np.ndarray:
        return layout.load_block(block)[seam.slices_in(block.read)]

    m = spec.match
    pairs = match_overlap(crop(a), crop(b), m.min_fraction, m.min_voxels, m.rule)
    import io

    buf = io.BytesIO()
    np.save(buf, pairs, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return pairs


def relabel_block(
    spec_json: str,
    grid: BlockGrid,
    index: tuple[int, int, int],
    offset: int,
    neighbours: tuple[tuple[tuple[int, int, int], int], ...] = (),
    digest: str = "",
) -> dict:
    """Write the block's final ids (lookup table applied) into its output chunk; with
    ``match.fill_holes``, voxels it left unlabelled take what a face neighbour (``neighbours``:
    (index, fragment offset), fixed order) labelled there. The seam counts
    (:mod:`napari_connectome.jobs.seams`) and ``digest`` of the table go into its relabel marker."""
    import json

    from napari_connectome.jobs.reconcile import fill_holes, owned_ids
    from napari_connectome.jobs.seams import block_seam_counts

    spec = JobSpec.model_validate_json(spec_json)
    layout = JobLayout(spec.output)
    block = grid.block(index)
    t0 = time.perf_counter()
    lut = np.load(layout.lut, mmap_mode="r", allow_pickle=False)

    def table(b: Block, off: int) -> np.ndarray:
        n = int(layout.read_block_info(b)["n_segments"])
        t = np.array(lut[off : off + n + 1], dtype=np.uint64)
        t[0] = 0
        return t

    final = table(block, offset)[layout.load_block(block)[block.write_slices_in_read]]
    loaded = {}  # neighbour index -> (block, local labels of its read region, its table)
    for nb_index, nb_offset in neighbours:
        is_lower = any(nb_index[ax] == index[ax] - 1 for ax in range(3))
        if spec.match.fill_holes or is_lower:
            nb = grid.block(nb_index)
            loaded[nb_index] = (nb, layout.load_block(nb), table(nb, nb_offset))
    seams = block_seam_counts(final, block, list(loaded.values()))
    filled = 0
    if spec.match.fill_holes and loaded:
        others = [(nb.read.start, labels, tab) for nb, labels, tab in loaded.values()]
        owned = [tab[labels[nb.write_slices_in_read]] for nb, labels, tab in loaded.values()]
        claim_arr = _claim_array(spec.output)
        claims = claim = None
        if claim_arr is not None:  # holes take the neighbour's FFN claim with its label
            claims = [layout.load_block_claim(nb) for nb, _, _ in loaded.values()]
            claim = np.asarray(claim_arr[block.output_slices(grid.roi_start)])
        filled = fill_holes(
            final, block.write.start, others, owned_ids(final, owned), claims, claim
        )
        if claim is not None and filled:
            claim_arr[block.output_slices(grid.roi_start)] = claim
    open_level(spec.output, 0)[block.output_slices(grid.roi_start)] = final
    written_t = time.time()
    marker = {"seams": seams, "lut": digest}  # digest: which table (see pipeline._table_digest)
    atomic_write_bytes(layout.relabel_done(block), json.dumps(marker).encode())
    return {
        "block": list(block.index),
        "written_t": round(written_t, 4),
        "seconds": round(time.perf_counter() - t0, 4),
        "chunk": chunk_file(spec.output, 0, block.index),
        "filled": filled,
        "seams": seams,
    }


def downsample(output: str, level: int, index: tuple[int, int, int]) -> None:
    downsample_chunk(output, level, index)
