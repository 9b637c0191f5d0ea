"""The job's phase after the region graph: agglomerate its own output (``agglomerate:`` in the
spec), on the job's own Dask workers.

The result is a new OME-Zarr beside the output (``agglomerate.output``, default
``OUTPUT`` with ``-agglomerated`` before its suffix): agglomerated labels, the supervoxels
(the job's output with its unsegmented voxels filled), their region graph and the scores
(napari_connectome.agglomerate). The job's block faces and its seam check go with it, so the
proofreading queue can lead to the places where matching across a face failed
(napari_connectome.agglomerate.seams). A resumed job whose output did not change keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_connectome.jobs.grid import BlockGrid
from napari_connectome.jobs.layout import JobLayout
from napari_connectome.jobs.spec import JobSpec
from napari_connectome.progress import ProgressCallback


def agglomerate_output(spec: JobSpec) -> Path:
    """Where a job's agglomeration goes."""
    if spec.agglomerate is not None and spec.agglomerate.output:
        return Path(spec.agglomerate.output)
    out = Path(spec.output)
    suffix = ".ome.zarr" if out.name.endswith(".ome.zarr") else out.suffix
    stem = out.name[: len(out.name) - len(suffix)] if suffix else out.name
    return out.with_name(f"{stem}-agglomerated{suffix}")


def agglomerate_phase(
    spec: JobSpec,
    grid: BlockGrid,
    layout: JobLayout,
    client: Any,
    log: Any,
    progress: ProgressCallback,
    *,
    output_changed: bool,
    seam_report: dict | None = None,
) -> dict | None:
    """Agglomerate the job's output; returns the summary, None when it is already there for
    this output (or the spec has no ``agglomerate:`` section)."""
    import json

    from napari_connectome.agglomerate import agglomerate
    from napari_connectome.agglomerate.seams import BlockSeams
    from napari_connectome.jobs.graph_phase import job_image
    from napari_connectome.volumes import open_volume

    section = spec.agglomerate
    if section is None:
        return None
    dest = agglomerate_output(spec)
    meta_file = dest / "agglomeration.json"
    made = meta_file.is_file() and _made_with(meta_file, spec)
    if made and not output_changed:
        return None
    log.write(event="phase", phase="agglomerate", path=str(dest))
    model, model_dir = None, None
    if spec.resegments():
        from napari_connectome.ffn import zoo
        from napari_connectome.ffn.checkpoint import load_model

        name = spec.segmenter.model
        model_dir = zoo.default_model() if name == "default" else zoo.get_model(name)
        model = load_model(model_dir)
    agglomerate(
        open_volume(str(layout.root)),
        job_image(spec, grid),
        dest,
        threshold=section.threshold,
        model=model,
        model_name=spec.segmenter.model if model else None,
        model_source=model_dir,  # the job's workers load it, as they do for their FFN blocks
        fill=section.fill,
        seed_distance=section.seed_distance,
        band=spec.reseg_band(),
        max_reseg=section.max_reseg,
        device=spec.segmenter.device,  # on the job's workers, as its FFN blocks
        precision=spec.segmenter.precision,
        claim=None if section.claim else False,
        claim_weight=section.claim_weight,
        seams=BlockSeams.of_grid(grid.roi_shape, grid.block_shape, seam_report),
        client=client,
        overwrite=meta_file.is_file(),
        progress=progress,
    )
    meta = json.loads(meta_file.read_text())
    keys = ("n_supervoxels", "n_edges", "n_merges", "n_segments", "n_resegmented")
    summary = {k: meta[k] for k in keys}
    log.write(event="agglomerate", path=str(dest), **summary)
    return summary


def _made_with(meta_file: Path, spec: Any) -> bool:
    """Whether the agglomeration there was made with the section's settings (a resume after
    the user changed its threshold, claim weight or resegmentation makes it again)."""
    import json

    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return False
    claim = meta.get("claim")
    section, segmenter = spec.agglomerate, spec.segmenter
    return (
        meta.get("threshold") == section.threshold
        and meta.get("fill") == ("watershed" if section.fill else "none")
        and meta.get("seed_distance") == section.seed_distance
        and (claim.get("weight") if isinstance(claim, dict) else None)
        in ((section.claim_weight, None) if section.claim else (None,))
        and (
            (meta.get("model"), meta.get("band"), meta.get("max_reseg"), meta.get("precision"))
            == (segmenter.model, spec.reseg_band(), section.max_reseg, segmenter.precision)
            if spec.resegments()
            else meta.get("model") is None
        )
    )
