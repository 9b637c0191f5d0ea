"""The job's last phase: the region graph of its own output, on the job's own Dask workers.

So a finished job is ready to proofread: per-fragment counts and boxes, the contact graph with
the job's input EM as boundary evidence, and the chunk digests sit in ``OUTPUT/region_graph/``
(napari_connectome.graph). A resumed job finishes an interrupted pass; a job whose relabel
rewrote blocks in this run computes the graph again.
"""

from __future__ import annotations

from typing import Any

from napari_connectome.jobs.grid import BlockGrid
from napari_connectome.jobs.layout import JobLayout
from napari_connectome.jobs.output import open_level
from napari_connectome.jobs.spec import JobSpec
from napari_connectome.progress import ProgressCallback


def job_image(spec: JobSpec, grid: BlockGrid) -> Any:
    """The job's input EM over its ROI: what the output's level 0 covers voxel for voxel."""
    from napari_connectome.graph.sources import as_source
    from napari_connectome.volumes import open_volume

    return as_source(open_volume(spec.input), "image").region(grid.roi_start, grid.roi_stop)


def region_graph_phase(
    spec: JobSpec,
    grid: BlockGrid,
    layout: JobLayout,
    client: Any,
    log: Any,
    progress: ProgressCallback,
    *,
    output_changed: bool,
) -> dict | None:
    """Compute (or finish) ``OUTPUT/region_graph``; returns its summary, None when it was already
    complete for this output."""
    from napari_connectome.graph import RegionGraph, compute_region_graph, is_complete
    from napari_connectome.graph.compute import StalePass

    dest = layout.region_graph
    if is_complete(dest) and not output_changed:
        return None
    log.write(event="phase", phase="region_graph")
    labels = open_level(layout.root, 0, mode="r")
    image = job_image(spec, grid)
    kwargs = {"image": image, "client": client, "progress": progress}
    try:
        compute_region_graph(labels, dest, overwrite=output_changed, **kwargs)
    except StalePass:  # an unfinished pass by another version of this code: start afresh
        compute_region_graph(labels, dest, overwrite=True, **kwargs)
    meta = RegionGraph.open(dest).meta
    summary = {k: meta[k] for k in ("n_fragments", "n_edges", "fingerprint", "seconds")}
    log.write(event="region_graph", path=dest.name, **summary)
    return summary
