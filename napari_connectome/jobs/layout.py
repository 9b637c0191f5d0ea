"""Where a job keeps its files, all inside the output folder the user chose.

```
OUT.ome.zarr/          the result (OME-Zarr 0.5 labels, level 0 chunk = one block's write region)
  progress.jsonl       one JSON line per finished block (what clients tail)
  region_graph/        fragment counts and boxes, contact graph, chunk digests of level 0
                       (napari_connectome.graph; computed by the job's last phase)
  _job/spec.yaml       the spec this output belongs to (a resume must match its fingerprint)
  _job/state.json      {"state": "running" | "done", ..., "seams": the seam check when done}
  _job/blocks/B.npz    a block's segmentation of its read region (local ids 1..n)
  _job/blocks/B.json   written last: the block is done (n segments, seconds)
  _job/faces/F.vN.npy  matched segment pairs of one face (N: the matching code's version)
  _job/lut.npy         fragment -> final id lookup table
  _job/relabel/B.done  the block's final ids are written (its seam counts, the table digest)
  _job/scheduler/      batch script and scheduler log (slurm/pbs)
  _job/driver.lock     who drives the job now: one driver per output (see driver_lock.py)
```
Every file is written to a temporary name and renamed, so a killed worker never leaves a half file
that a rerun would trust.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from napari_connectome.jobs.grid import Block
from napari_connectome.volumes.atomic import atomic_write_bytes


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True).encode())


class JobLayout:
    """The names of a job's files (the only place they are spelled), as paths under ``output``.

    ``JobLayout(output)`` gives paths on this machine; :meth:`on_cluster` the same names as POSIX
    paths on a login node (read and written over SFTP).
    """

    PROGRESS = "progress.jsonl"
    JOB = "_job"
    REGION_GRAPH = "region_graph"
    SPEC = "spec.yaml"
    STATE = "state.json"
    BLOCKS = "blocks"
    FACES = "faces"
    LUT = "lut.npy"
    RELABEL = "relabel"
    SCHEDULER = "scheduler"
    DRIVER_LOCK = "driver.lock"
    RUN_LOG = "run-job.log"  # a local/dask job's output (scheduler/)
    BATCH_SCRIPT = "job.sh"  # slurm/pbs (scheduler/)
    # what a start writes before the first block (besides the level arrays)
    START_FILES = frozenset({JOB, "zarr.json", PROGRESS})
    START_JOB_FILES = frozenset({SPEC, STATE, DRIVER_LOCK, SCHEDULER})

    def __init__(self, output: str | Path | PurePosixPath, path: type = Path):
        self.root = path(output)
        self.job = self.root / self.JOB
        self.spec = self.job / self.SPEC
        self.state = self.job / self.STATE
        self.blocks = self.job / self.BLOCKS
        self.faces = self.job / self.FACES
        self.lut = self.job / self.LUT
        self.relabel = self.job / self.RELABEL
        self.scheduler = self.job / self.SCHEDULER
        self.driver_lock = self.job / self.DRIVER_LOCK
        self.run_log = self.scheduler / self.RUN_LOG
        self.batch_script = self.scheduler / self.BATCH_SCRIPT
        self.progress = self.root / self.PROGRESS
        self.region_graph = self.root / self.REGION_GRAPH

    @classmethod
    def on_cluster(cls, output: str) -> JobLayout:
        """The same names as POSIX paths (``str()`` them for a transport)."""
        return cls(output, PurePosixPath)

    def block_json(self, block: Block) -> Path:
        return self.blocks / f"{block.name}.json"

    def block_npz(self, block: Block) -> Path:
        return self.blocks / f"{block.name}.npz"

    def face_npy(self, a: Block, axis: int) -> Path:
        from napari_connectome.jobs.reconcile import RECONCILE_VERSION

        return self.faces / f"{a.name}_{'zyx'[axis]}.v{RECONCILE_VERSION}.npy"

    def relabel_digest(self, block: Block) -> str | None:
        """The table digest a block was relabelled with (None: not relabelled, or by a version
        that did not record it)."""
        try:
            return json.loads(self.relabel_done(block).read_text() or "{}").get("lut")
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def relabel_done(self, block: Block) -> Path:
        return self.relabel / f"{block.name}.done"

    def read_block_info(self, block: Block) -> dict | None:
        try:
            return json.loads(self.block_json(block).read_text())
        except FileNotFoundError:
            return None

    def save_block(
        self, block: Block, labels: np.ndarray, info: dict, claim: np.ndarray | None = None
    ) -> None:
        """Labels (and the FFN claim of the read region, if any) first, then the JSON that marks
        the block done (both atomic)."""
        import io

        buf = io.BytesIO()
        arrays = {"labels": labels} if claim is None else {"labels": labels, "claim": claim}
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.block_npz(block), buf.getvalue())
        atomic_write_json(self.block_json(block), info)

    def load_block(self, block: Block) -> np.ndarray:
        with np.load(self.block_npz(block), allow_pickle=False) as f:
            return f["labels"]

    def load_block_claim(self, block: Block) -> np.ndarray | None:
        """The FFN claim of the block's read region (None: its segmenter gave none, or a version
        that did not keep it segmented the block)."""
        with np.load(self.block_npz(block), allow_pickle=False) as f:
            return f["claim"] if "claim" in f.files else None

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state.read_text())
        except FileNotFoundError:
            return None
