"""Agglomerate again from an earlier output: its supervoxels, graph and scores, a new threshold.

Why: the fill, the region graph and the scores are the expensive passes (a minute for 250^3 on two
cores, resegmentation far more), while the rule and the labels take about a second per 250^3. A
user trying thresholds should pay for the rule only. The earlier output must belong to this
segmentation: its recorded input fingerprint is compared with SEG's, block by block as it was
computed, its region graph's fingerprint with the graph beside it, and every score column's length
with the graph's edges. Anything else is refused before DEST is created.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress

#: Score columns per edge; recomputed ones (merged) are written anew.
EDGE_COLUMNS = ("area", "mean_rank", "p10", "p50", "p90", "point", "reseg", "affinity")


def digest_task(seg: Any, sl: tuple[slice, ...]) -> str:
    """The digest of one block of SEG, as the fill pass computes it."""
    import hashlib

    block = np.ascontiguousarray(np.asarray(seg.read(sl)))
    return hashlib.blake2b(block.tobytes(), digest_size=16).hexdigest()


def read_previous(previous: str | os.PathLike) -> dict:
    """The earlier output's ``agglomeration.json``, checked to be one of ours and complete."""
    from napari_connectome.agglomerate.run import FORMAT, FORMAT_VERSION, META

    prev = Path(previous).expanduser()
    if not prev.exists():
        raise UserInputError(
            f"--reuse {prev} does not exist: give the folder of an earlier "
            "`napari-connectome agglomerate` of the same SEG"
        )
    try:
        meta = json.loads((prev / META).read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(
            f"--reuse {prev}: no readable {META} ({exc.__class__.__name__}); give a folder "
            "written by `napari-connectome agglomerate`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserInputError(f"--reuse {prev}: {META} is not an agglomerate output's")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserInputError(
            f"--reuse {prev} has format version {meta.get('format_version')}, this version "
            f"reads {FORMAT_VERSION}: run agglomerate without --reuse"
        )
    return meta


def reagglomerate(
    seg: Any,
    em: Any,
    dest: str | os.PathLike,
    previous: str | os.PathLike,
    *,
    threshold: float,
    client: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Like :func:`.run.agglomerate`, but the supervoxels, region graph and scores come from
    ``previous`` (an earlier output for the same ``seg``); only the rule and labels run."""
    import zarr

    from napari_connectome.agglomerate import run
    from napari_connectome.agglomerate.rule import mean_affinity_agglomerate
    from napari_connectome.graph import RegionGraph
    from napari_connectome.graph.sources import as_source
    from napari_connectome.volumes.atomic import (
        check_destination,
        commit,
        remove_path,
        temp_sibling,
    )
    from napari_connectome.volumes.ome_zarr_writer import build_pyramid, create_ome_zarr
    from napari_connectome.volumes.output_safety import refuse_overlap

    progress = progress or no_progress
    t0 = time.perf_counter()
    threshold = run.check_threshold(threshold)
    run.check_inputs(seg, em)
    prev = Path(previous).expanduser().resolve()
    meta = read_previous(prev)
    dest = Path(dest).expanduser()
    refuse_overlap(dest, [getattr(seg, "source", None), getattr(em, "source", None), prev])
    check_destination(dest, overwrite)
    shape = tuple(int(s) for s in seg.shape)
    if list(shape) != list(meta.get("shape", [])):
        raise UserInputError(
            f"--reuse {prev} was made from a volume of shape {meta.get('shape')}, SEG has "
            f"{list(shape)}: it belongs to another segmentation; run agglomerate without --reuse"
        )
    block = tuple(meta.get("block") or run._block_shape(seg, None))
    blocks = run._blocks(shape, block)
    runner = run._Runner(client, math.prod(shape), len(blocks), workers)
    timings: dict[str, float] = {}
    tmp = temp_sibling(dest)
    try:
        t = time.perf_counter()
        reader = as_source(seg, "SEG").reader
        digests = runner.map(
            digest_task, [(reader, sl) for sl in blocks], progress, "agglomerate: checking SEG"
        )
        if _fingerprint(shape, seg.dtype, digests) != meta.get("input_fingerprint"):
            raise UserInputError(
                f"--reuse {prev} was computed from another segmentation "
                f"({meta.get('input')}) than SEG ({run._text(seg)}): its input fingerprint "
                "differs; run agglomerate without --reuse"
            )
        graph = RegionGraph.open(prev / run.REGION_GRAPH)
        if graph.fingerprint != meta.get("region_graph_fingerprint"):
            raise UserInputError(
                f"--reuse {prev}: its region_graph is not the one its scores were computed on "
                "(fingerprints differ); run agglomerate without --reuse"
            )
        scores = zarr.open_group(str(prev / run.SCORES), mode="r")
        columns = {}
        for key in EDGE_COLUMNS:
            if key not in scores or scores[key].shape[0] != graph.n_edges:
                raise UserInputError(
                    f"--reuse {prev}: scores/{key} is missing or does not have one row per "
                    f"edge of its region graph ({graph.n_edges}); run agglomerate without --reuse"
                )
            columns[key] = np.asarray(scores[key][:])
        for key in ("seam_area", "claim", "claim_faces"):  # present for some inputs only
            if key in scores:
                columns[key] = np.asarray(scores[key][:])
        timings["check"] = time.perf_counter() - t
        t = time.perf_counter()
        # the supervoxels' own size: the labels lie over them
        voxel = tuple(float(x) for x in meta.get("voxel_size_nm") or run.voxel_size_of(seg, em))
        chunks = run.label_chunks(block)
        create_ome_zarr(
            tmp,
            shape,
            np.uint64,
            voxel_size_nm=voxel,
            chunks=chunks,
            labels=True,
            name="agglomerated",
        )
        for part in (run.SUPERVOXELS, run.REGION_GRAPH):
            _link_tree(prev / part, tmp / part)
        u = np.asarray(graph._array("edges/u")[:], np.uint64)
        v = np.asarray(graph._array("edges/v")[:], np.uint64)
        agg = mean_affinity_agglomerate(
            u, v, columns["affinity"], columns["area"], graph.fragment_ids, threshold
        )
        sv_src = run._zarr_reader(str(tmp / run.SUPERVOXELS / "0"))
        args = [(sv_src, sl, agg.ids, agg.segment_of, str(tmp / "0")) for sl in blocks]
        runner.map(run.relabel_task, args, progress, "agglomerate: writing labels")
        build_pyramid(tmp)
        columns.update(
            merged=agg.merged_edge,
            merges=agg.merges,
            segment_ids=agg.ids,
            segment_of=agg.segment_of,
        )
        run.write_scores(tmp / run.SCORES, columns)
        timings["agglomerate"] = time.perf_counter() - t
        summary = dict(meta)
        summary.update(
            threshold=threshold,
            reused=str(prev),
            block=list(block),
            n_segments=len(np.unique(agg.segment_of)),
            n_merges=len(agg.merges),
            seconds={**{k: round(s, 3) for k, s in timings.items()}},
        )
        summary["seconds"]["total"] = round(time.perf_counter() - t0, 3)
        (tmp / run.META).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        commit(tmp, dest, overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        runner.close()
    progress(1, 1, "agglomerate: done")
    return dest


def _fingerprint(shape: tuple, dtype: Any, digests: list[str]) -> str:
    """The fill pass's input fingerprint (``run._build``): geometry, then each block's digest."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([list(shape), str(np.dtype(dtype))]).encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


def _link_tree(src: Path, dst: Path) -> None:
    """Hard links of ``src``'s files under ``dst`` (copies where links cannot be made), so the
    reused passes cost neither disk nor time. Safe because nothing writes into a finished output:
    every command builds a new one beside it and renames it into place."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another filesystem, or links not allowed
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)
