"""Which FFN model made a segmentation, as the segmentation itself records it.

Why: resegmenting an over-segmentation (the consensus of both seed orders) with the model that
made it helps (VI lower on all 11 held-out crops with fib25-small, on one of two with Google's
model; docs/benchmarks.md); resegmenting one pass of a
model with that model, or a segmentation with a weaker model, hurts, because those models' own
errors are merges. So ``agglomerate`` resegments by default only an over-segmentation that
``segment --oversegment`` (``SEG/ffn_counters.json``) or a job with ``oversegment``
(``SEG/_job/spec.yaml``) made, with the model it records, scoring every contact nearest the
threshold first (:data:`OWN_BAND`); any other model, or one pass, only the contacts near the
threshold (``DEFAULT_BAND``). The recorded folder is only read as a model (its ``config.json``
and safetensors weights: no code runs), and a zoo name is looked up in this machine's cache,
never downloaded behind the user's back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OWN_BAND = 1.0  # with SEG's own model: every contact, nearest the threshold first
MAX_REPORT_BYTES = 512 * 2**20  # a segment report larger than this is no report of ours


@dataclass(frozen=True)
class RecordedModel:
    """The model a segmentation records: ``name`` as recorded (a folder, a zoo or shipped name,
    or ``default``), ``record`` the file that says so, ``folder`` where it is on this machine
    (None: not here), ``oversegment`` whether SEG is its consensus of both seed orders."""

    name: str
    record: Path
    folder: Path | None
    oversegment: bool

    def describe(self) -> str:
        return f"{self.name} (recorded in {self.record})"


def recorded_model(source: Any) -> RecordedModel | None:
    """The FFN model that made the segmentation folder ``source`` (as the user gave it), or None
    when it records none (Google's published segmentation, a watershed job, an h5 file)."""
    if not isinstance(source, str | Path):
        return None
    root = Path(str(source)).expanduser()
    found = _from_segment_report(root) or _from_job_spec(root)
    if found is None:
        return None
    name, record, oversegment = found
    return RecordedModel(name, record, _find_here(name), oversegment)


def made_by(source: Any, model_folder: Any) -> RecordedModel | None:
    """What ``source`` records when ``model_folder`` is the model that made it, else None."""
    if model_folder is None:
        return None
    made = recorded_model(source)
    if made is None or made.folder is None:
        return None
    return made if made.folder == Path(model_folder).expanduser().resolve() else None


def band_for(own_oversegmentation: bool) -> float:
    """How far from the threshold contacts are resegmented when the user says nothing: all of
    them for an over-segmentation judged by the model that made it, else near the threshold."""
    from napari_connectome.agglomerate.run import DEFAULT_BAND

    return OWN_BAND if own_oversegmentation else DEFAULT_BAND


def _from_segment_report(root: Path) -> tuple[str, Path, bool] | None:
    from napari_connectome.ffn.segment_volume import COUNTERS_FILE

    report = root / COUNTERS_FILE
    try:
        if not report.is_file() or report.stat().st_size > MAX_REPORT_BYTES:
            return None
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("model_folder") or data.get("model")  # older reports: only "model"
    if not isinstance(name, str) or not name:
        return None
    return name, report, bool(data.get("oversegment"))


def _from_job_spec(root: Path) -> tuple[str, Path, bool] | None:
    from napari_connectome.errors import UserInputError
    from napari_connectome.jobs.layout import JobLayout
    from napari_connectome.jobs.spec import load_spec

    spec_file = root / JobLayout.JOB / JobLayout.SPEC
    if not spec_file.is_file():
        return None
    try:
        spec = load_spec(spec_file)
    except UserInputError:
        return None
    if spec.segmenter.kind != "ffn":
        return None
    return spec.segmenter.model, spec_file, spec.segmenter.oversegment is not None


def _find_here(name: str) -> Path | None:
    """The recorded model's folder on this machine: a shipped model, a zoo model already in the
    cache, or an absolute folder holding a model; None otherwise (nothing is downloaded)."""
    from napari_connectome.ffn import zoo
    from napari_connectome.ffn.checkpoint import is_model_dir

    if name == "default":
        shipped = zoo.shipped_models()
        name = str(shipped[0]) if shipped else "google-fib25"
    for shipped in zoo.shipped_models():
        if name == shipped.name:
            return shipped.resolve()
    if name in zoo.ZOO:
        cached = zoo.cache_dir() / "models" / name
        return cached.resolve() if is_model_dir(cached) else None
    path = Path(name).expanduser()
    if path.is_absolute() and is_model_dir(path):
        return path.resolve()
    return None
