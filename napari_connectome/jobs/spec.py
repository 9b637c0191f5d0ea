"""The job spec: one YAML file says what to segment, how, where the result goes and where it runs.

Validated with pydantic so a typo or a wrong value is reported as one line naming the field, before
anything is created or submitted. The same file travels to the cluster, where ``run-job`` reads it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from napari_connectome.errors import UserInputError

Triple = tuple[int, int, int]

# Limits on what a spec can ask for: beyond them a value is a typo, not a plan (the reasons are in
# the messages). docs/scaling.md: one Dask scheduler per job handles ~1e4-1e5 blocks.
MIN_BLOCK = 4  # voxels per axis
MAX_BLOCK_VOXELS = 1024**3  # one block = one uint64 output chunk: 8 GiB of labels at this size
MAX_BLOCKS = 1_000_000
MAX_WORKERS = 4096  # per node
MAX_SPEC_BYTES = 1 << 20  # a job spec is a few hundred bytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@cache
def inference_overrides_model() -> type[BaseModel]:
    """A pydantic model of FFN inference options, generated from the
    :class:`~napari_connectome.ffn.options.InferenceOptions` dataclass (the one definition of
    them), every field optional: a job's ``segmenter.inference`` overrides the model's own
    recommended options. Unknown fields are refused (a typo fails at ``--check``/``submit``, not
    on a worker after the output was created); values are checked by the dataclass itself."""
    import dataclasses
    import typing

    from pydantic import create_model

    from napari_connectome.ffn.options import InferenceOptions

    hints = typing.get_type_hints(InferenceOptions)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(InferenceOptions):
        hint = hints[f.name]
        if hint == tuple[int, int, int]:
            hint = hint | int  # one number for all three axes, as InferenceOptions accepts
        fields[f.name] = (hint | None, None)

    def check_values(self):
        InferenceOptions(
            **self.model_dump(exclude_unset=True)
        )  # raises UserInputError (ValueError)
        return self

    return create_model(
        "InferenceOverrides",
        __config__=ConfigDict(extra="forbid"),
        __doc__="FFN inference options a job sets (the rest: the model's own).",
        __validators__={"check_values": model_validator(mode="after")(check_values)},
        **fields,
    )


def inference_option_names() -> list[str]:
    return list(inference_overrides_model().model_fields)


class ROI(_Strict):
    """Region of the input to segment, in voxels (z, y, x), start inclusive, stop exclusive."""

    start: Triple
    stop: Triple

    @model_validator(mode="after")
    def _ordered(self) -> ROI:
        if any(a < 0 for a in self.start) or any(b <= a for a, b in zip(self.start, self.stop)):
            raise ValueError(
                f"roi must satisfy 0 <= start < stop per axis, got {self.start}..{self.stop}"
            )
        return self


class OversegmentSpec(_Strict):
    """``segmenter.oversegment``: each block is segmented with the seed policy forward and
    reversed and written as their split consensus (napari_connectome.ffn.consensus), the
    supervoxels an ``agglomerate:`` section refines. ``oversegment: true`` takes the defaults."""

    # consensus pieces smaller than this (voxels) become 0; = ffn.consensus.DEFAULT_MIN_SIZE (a
    # test checks), written out so that reading a spec does not import the ffn package
    min_size: int = Field(1000, ge=0)
    unmatched: Literal["drop", "keep", "first"] = "drop"  # voxels only one run segmented


class SegmenterSpec(_Strict):
    """How one block is segmented.

    ``ffn``: flood-filling network (``model`` = a model folder, or ``default`` for the shipped one;
    ``inference`` = FFN inference options). ``watershed``: seeded watershed of the distance
    transform of ``image >= threshold`` (deterministic, no model; for tests and
    bright-cell/dark-membrane data). ``plugin``: ``factory`` = ``"package.module:function"``
    returning a block segmenter (your own code).
    """

    kind: Literal["ffn", "watershed", "plugin"] = "ffn"
    model: str = "default"
    # InferenceOverrides (see inference_overrides_model): a model generated at import time would
    # import the ffn package with the spec; validated in _typed_inference instead
    inference: Any = Field(default_factory=dict, validate_default=True)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    # auto: bf16 where the worker's CPU or GPU has native bf16, fp32 otherwise (ffn/precision.py)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch: int = Field(1, ge=1)  # FFN: field-of-view predictions per forward pass
    threshold: float = 128.0
    seed_distance: float = 2.0
    factory: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    oversegment: OversegmentSpec | None = None  # FFN: consensus of forward and reverse seed order

    @field_validator("oversegment", mode="before")
    @classmethod
    def _true_is_defaults(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v

    @model_validator(mode="after")
    def _oversegment_needs_ffn_seeds(self) -> SegmenterSpec:
        if self.oversegment is None:
            return self
        if self.kind != "ffn":
            raise ValueError("segmenter.oversegment needs kind: ffn (it runs the FFN twice)")
        chosen = self.inference.model_dump(exclude_unset=True)
        if chosen.get("seed_order") is not None:
            raise ValueError(
                "segmenter.oversegment runs both seed orders itself; leave out "
                "segmenter.inference.seed_order"
            )
        if chosen.get("seed_policy") == "points":
            raise ValueError("segmenter.oversegment needs a seed policy (peaks or grid)")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_oversegment(self, handler: Any) -> dict[str, Any]:
        # a spec without oversegment keeps the fingerprint it had before the key existed
        data = handler(self)
        if self.oversegment is None:
            data.pop("oversegment", None)
        return data

    @field_validator("inference", mode="before")
    @classmethod
    def _typed_inference(cls, v: Any) -> Any:
        model = inference_overrides_model()
        if isinstance(v, model):
            return v
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise ValueError(f"inference must be a mapping of FFN options, got {type(v).__name__}")
        return model.model_validate(v)

    @field_serializer("inference")
    def _only_set_options(self, v: Any) -> dict[str, Any]:
        # only what the spec sets: the model's own options fill the rest, and the fingerprint of
        # a spec without inference options stays what it was before they were typed
        return v.model_dump(mode="json", exclude_unset=True)

    def inference_options(self) -> dict[str, Any]:
        """The inference options this spec sets, as keyword arguments."""
        return self.inference.model_dump(exclude_unset=True)

    @model_validator(mode="after")
    def _plugin_needs_factory(self) -> SegmenterSpec:
        if self.kind == "plugin" and not (self.factory and ":" in self.factory):
            raise ValueError("segmenter.kind 'plugin' needs factory: 'package.module:function'")
        return self


class MatchSpec(_Strict):
    """When two segments of face-neighbouring blocks are the same object.

    Only the slab within ``slab`` voxels of the face between the two write regions is compared
    (both blocks have the most context there). Segments a and b join when they share at least
    ``min_voxels`` voxels there and, by ``rule``:

    - ``contained`` (default): the shared voxels are at least ``min_fraction`` of the smaller
      one's voxels in the slab. A neuron whose branches meet outside one block is several segments
      there and one in the neighbour; every branch joins it. A merge made by one block is kept.
    - ``mutual``: at least ``min_fraction`` of each one's voxels. With ``min_fraction > 0.5`` a
      segment joins at most one partner per face, so a disagreement between blocks never fuses
      two neurons, at the price of cutting branched neurons at faces.

    ``fill_holes``: a voxel its own block left unlabelled (FFN dropped or never reached it) takes
    the final id a face neighbour gave it while segmenting it as context.
    """

    rule: Literal["contained", "mutual"] = "contained"
    min_fraction: float = Field(0.7, gt=0.0, le=1.0)
    min_voxels: int = Field(10, ge=1)
    slab: int = Field(8, ge=1)
    fill_holes: bool = True


class SSHSpec(_Strict):
    """How to reach the login node. Host keys are always verified against ``known_hosts``."""

    host: str
    port: int = 22
    user: str | None = None
    key: str | None = None  # private key file; None = use the SSH agent / default keys
    known_hosts: str | None = None  # None = ~/.ssh/known_hosts
    jump_host: SSHSpec | None = None
    connect_timeout_s: float = 20.0


class Resources(_Strict):
    """What the scheduler allocates and how the job's environment is prepared on the cluster."""

    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_node: int | None = Field(None, ge=1)
    memory: str | None = None  # e.g. "64G"
    partition: str | None = None  # Slurm partition
    queue: str | None = None  # PBS queue
    account: str | None = None
    walltime: str = "01:00:00"
    filesystems: str | None = None  # PBS -l filesystems=... (ALCF)
    setup: list[str] = Field(
        default_factory=list
    )  # shell lines run before the job (module load ...)
    python: str = "python3"  # Python on the cluster that has napari-connectome installed
    submit_env: dict[str, str] = Field(
        default_factory=dict
    )  # env for sbatch/qsub/squeue (e.g. SLURM_CONF)
    extra_args: list[str] = Field(
        default_factory=list
    )  # passed verbatim (as argv) to sbatch / qsub


class BackendSpec(_Strict):
    """Where blocks run. ``local``: a Dask LocalCluster on 127.0.0.1 with ``workers`` processes;
    ``dask``: an existing scheduler at ``scheduler``; ``slurm`` / ``pbs``: a batch job (over
    ``ssh`` or, without it, on this machine) that runs ``napari-connectome run-job`` inside the
    allocation."""

    kind: Literal["local", "dask", "slurm", "pbs"] = "local"
    # per node; default: one per GPU, else one per 2 cores. No node has more than MAX_WORKERS cores
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    scheduler: str | None = None
    # slurm/pbs: how workers start inside the allocation. "local": a LocalCluster on the first node
    # only; "srun" / "mpiexec": workers on every node (default when nodes > 1)
    launch: Literal["auto", "local", "srun", "mpiexec"] = "auto"
    resources: Resources = Field(default_factory=Resources)
    ssh: SSHSpec | None = None

    @field_validator("workers", "threads_per_worker")
    @classmethod
    def _at_most(cls, v: int | None, info) -> int | None:
        if v is not None and v > MAX_WORKERS:
            raise ValueError(
                f"{info.field_name} {v} per node is more than any node has cores (each worker is a "
                f"process, each thread runs blocks); use at most {MAX_WORKERS}"
            )
        return v

    @model_validator(mode="after")
    def _needs(self) -> BackendSpec:
        if self.kind == "dask" and not self.scheduler:
            raise ValueError("backend.kind 'dask' needs backend.scheduler: tcp://host:port")
        if self.kind in ("local", "dask") and self.ssh is not None:
            raise ValueError(f"backend.ssh is only used by slurm/pbs backends, not {self.kind!r}")
        return self


class AgglomerateSpec(_Strict):
    """The job's agglomeration phase (napari_connectome.agglomerate; docs/agglomeration.md)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # band: .nan is no number

    threshold: float = Field(0.65, ge=0.0, le=1.0)  # merge while the best affinity is >= this
    fill: bool = True  # give unsegmented voxels to supervoxels (seeded watershed on the EM)
    seed_distance: float = Field(12.0, gt=0)  # blobs farther from any segment: new supervoxels
    # FFN resegmentation with the segmenter's model; None: for an FFN over-segmentation
    # (segmenter.oversegment), not for one pass (whose errors are mostly merges: seg_model.py)
    resegment: bool | None = None
    # contacts resegmented, nearest the threshold first: within band of it; None: every contact
    # (1) for an over-segmentation, else 0.1 (agglomerate --band)
    band: float | None = Field(None, ge=0.0, le=1.0)
    max_reseg: int = Field(200, ge=0)
    claim: bool = True  # weigh the FFN claim the blocks stored (agglomerate --no-claim: false)
    claim_weight: float = Field(0.5, ge=0.0, le=1.0)  # agglomerate --claim-weight
    output: str | None = None  # default: OUTPUT with -agglomerated before its suffix


class JobSpec(_Strict):
    """A full-volume segmentation job."""

    name: str = "segmentation"
    input: str  # any source open_volume reads: file.h5:raw, store.zarr/array, ...
    output: str  # OME-Zarr folder to create (on the machine where the job runs)
    roi: ROI | None = None
    mask: str | None = (
        None  # optional volume (same shape as input): only voxels where it is > 0 are segmented
    )
    block_shape: Triple = (128, 128, 128)  # write region of one block = one chunk of the output
    overlap: Triple = (16, 16, 16)  # context added on every side of a block
    segmenter: SegmenterSpec = Field(default_factory=SegmenterSpec)
    match: MatchSpec = Field(default_factory=MatchSpec)
    pyramid_levels: int = Field(3, ge=1)
    # last phase: the output's region graph (fragment stats, contacts, digests) in
    # OUTPUT/region_graph, so the output opens for proofreading without another pass
    region_graph: bool = True
    # then, with this section, the output agglomerated beside it (jobs/agglomerate_phase.py)
    agglomerate: AgglomerateSpec | None = None
    backend: BackendSpec = Field(default_factory=BackendSpec)
    resume: bool = False
    overwrite: bool = False

    @field_validator("block_shape")
    @classmethod
    def _positive(cls, v: Triple) -> Triple:
        if any(s < 1 for s in v):
            raise ValueError(f"block_shape must be positive, got {v}")
        if any(s < MIN_BLOCK for s in v):
            raise ValueError(
                f"block_shape {list(v)} is too small: every block costs a task, two files and a "
                f"chunk, and faces are compared across the block; use at least {MIN_BLOCK} voxels "
                "per axis (typically 128-512)"
            )
        voxels = v[0] * v[1] * v[2]
        if voxels > MAX_BLOCK_VOXELS:
            raise ValueError(
                f"block_shape {list(v)} is {voxels:,} voxels per block: one block is one output "
                f"chunk and its uint64 labels alone take {voxels * 8 / 2**30:.0f} GiB of a "
                f"worker's memory; use at most {MAX_BLOCK_VOXELS:,} voxels (1024^3) per block "
                "(typically 128-512 per axis)"
            )
        return v

    @field_validator("input", "output", "mask")
    @classmethod
    def _a_path(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\0" in v):
            raise ValueError("must be a path: not empty, and without NUL characters")
        return v

    @field_validator("overlap")
    @classmethod
    def _non_negative(cls, v: Triple) -> Triple:
        if any(s < 0 for s in v):
            raise ValueError(f"overlap must be >= 0, got {v}")
        return v

    @field_validator("name")
    @classmethod
    def _simple_name(cls, v: str) -> str:
        if not v or len(v) > 64 or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("name must be 1-64 characters of letters, digits, '-', '_' or '.'")
        return v

    @model_validator(mode="after")
    def _resume_xor_overwrite(self) -> JobSpec:
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: pick one")
        return self

    def resegments(self) -> bool:
        """Whether the ``agglomerate:`` phase resegments (its ``resegment``, else the default:
        an FFN over-segmentation is resegmented)."""
        section = self.agglomerate
        if section is None:
            return False
        if section.resegment is not None:
            return section.resegment
        return self.segmenter.kind == "ffn" and self.segmenter.oversegment is not None

    def reseg_band(self) -> float:
        """The ``agglomerate:`` phase's band: as given, else every contact (OWN_BAND) for an
        over-segmentation, which its own model judges, else agglomerate's DEFAULT_BAND."""
        from napari_connectome.agglomerate.seg_model import band_for

        section = self.agglomerate
        if section is not None and section.band is not None:
            return section.band
        return band_for(self.segmenter.oversegment is not None)

    @model_validator(mode="after")
    def _resegment_needs_ffn(self) -> JobSpec:
        section = self.agglomerate
        if section is not None and section.resegment and self.segmenter.kind != "ffn":
            raise ValueError(
                "agglomerate.resegment runs the segmenter's FFN model, but segmenter.kind is "
                f"{self.segmenter.kind!r}: use kind: ffn, or resegment: false"
            )
        return self

    @model_validator(mode="after")
    def _blocks_cover_the_slab(self) -> JobSpec:
        slab = self.match.slab
        if any(b < slab for b in self.block_shape):
            raise ValueError(
                f"block_shape {list(self.block_shape)} is thinner than match.slab ({slab}): "
                "faces are compared within slab voxels on each side, which would reach past the "
                "neighbouring block; use larger blocks or a smaller slab"
            )
        return self

    RESULT_FIELDS: ClassVar[tuple[str, ...]] = (
        "input",
        "mask",
        "roi",
        "block_shape",
        "overlap",
        "segmenter",
        "match",
        "pyramid_levels",
    )

    def fingerprint(self) -> str:
        """Hash of everything that determines the result, so a resume never mixes two jobs."""
        payload = json.dumps(
            self.model_dump(mode="json", include=set(self.RESULT_FIELDS)), sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def differences(self, other: JobSpec) -> str:
        """The result fields where ``other`` (the job already in the output) differs, e.g.
        ``segmenter.precision: 'fp32' there, 'auto' here`` (what a refused resume must name)."""

        def flat(d: Any, prefix: str = "") -> dict[str, Any]:
            if isinstance(d, dict):
                out: dict[str, Any] = {}
                for k, v in d.items():
                    out |= flat(v, f"{prefix}{k}.")
                return out
            return {prefix.rstrip("."): d}

        mine = flat(self.model_dump(mode="json", include=set(self.RESULT_FIELDS)))
        theirs = flat(other.model_dump(mode="json", include=set(self.RESULT_FIELDS)))
        diff = [
            f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here"
            for k in sorted(set(mine) | set(theirs))
            if mine.get(k) != theirs.get(k)
        ]
        return "; ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def _format_errors(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see examples/jobs/)"
            if tuple(err["loc"][:2]) == ("segmenter", "inference"):
                msg = "unknown FFN inference option; valid: " + ", ".join(inference_option_names())
        elif loc == "segmenter.device" and err["type"] == "string_pattern_mismatch":
            msg = "device must be auto, cpu, cuda or cuda:N"
        parts.append(f"{loc}: {msg}" if err["loc"] else msg)
    return f"invalid job spec {where}: " + "; ".join(parts)


@cache
def _no_alias_loader() -> type:
    """A SafeLoader without aliases: a spec never needs them, and a few lines of nested aliases
    expand to gigabytes ("billion laughs") after every check passed."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise UserInputError(
                    f"uses a YAML alias (*{event.anchor}) at line {event.start_mark.line + 1}: "
                    "aliases are not allowed in job specs; write the value out"
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def _too_big(size: int, what: str) -> UserInputError:
    return UserInputError(
        f"{what} is {size:,} bytes; a job spec is a small YAML file "
        f"(at most {MAX_SPEC_BYTES:,} bytes)"
    )


def load_yaml_text(data: str | bytes, what: str) -> Any:
    """Parse YAML text that is (part of) a job spec, refusing binary files, non-UTF-8 text,
    oversized files and aliases with a message naming ``what`` (before anything is created)."""
    import yaml

    if len(data) > MAX_SPEC_BYTES:
        raise _too_big(len(data), what)
    if isinstance(data, bytes):
        if b"\x00" in data:
            raise UserInputError(f"{what} is a binary file, not YAML text")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserInputError(
                f"{what} is not UTF-8 text (byte {exc.start}): save it as UTF-8"
            ) from None
    try:
        return yaml.load(data, Loader=_no_alias_loader())  # a SafeLoader subclass
    except UserInputError as exc:
        raise UserInputError(f"{what} {exc}") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"{what} is not valid YAML: {exc}") from None
    except RecursionError:
        raise UserInputError(f"{what} is nested too deeply to be a job spec") from None


def parse_spec_text(data: str | bytes, where: str) -> JobSpec:
    """Validate a spec given as YAML text (a file's contents, or one read over SFTP)."""
    return parse_spec(load_yaml_text(data, f"job spec {where}"), where)


def parse_spec(data: Any, where: str = "") -> JobSpec:
    """Validate a spec given as a dict (already parsed YAML)."""
    if data is None:
        raise UserInputError(
            f"job spec {where} is empty: write a mapping of fields (input:, output:, ...; see "
            "examples/jobs/)"
        )
    if not isinstance(data, dict):
        raise UserInputError(
            f"invalid job spec {where}: expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(_format_errors(exc, where)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML job spec; every problem is a :class:`UserInputError`."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"job spec {path} not found: give the path of a YAML file (see examples/jobs/)"
        )
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise _too_big(size, f"job spec {path}")
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"cannot read job spec {path}: {exc.strerror or exc}") from None
    return parse_spec_text(data, str(path))
