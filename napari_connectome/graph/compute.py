"""The whole-volume pass: fragment statistics, contact graph and chunk digests, block by block.

Blocks are whole multiples of the stored chunks and are read without overlap. Each block task
reads its own voxels, computes its fragments' counts and boxes, the contacts inside it and the
digest of each of its chunks, and saves them with its six border planes under ``DEST/blocks/``.
Faces between neighbouring blocks are counted when the results are reduced, from one block's last
plane and its neighbour's first, so no block decodes a neighbour's chunks. The reduction is a tree
of merges on the workers; the last one writes the final columns. A killed pass reruns only the
blocks whose file is missing; ``region_graph.json`` is written last.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.graph import kernels
from napari_connectome.graph.layout import (
    ADJACENCY,
    BLOCKS,
    CHUNKS,
    EDGES,
    FORMAT,
    FORMAT_VERSION,
    FRAGMENTS,
    META,
    PASS,
    ROW_CHUNK,
    atomic_write_bytes,
    block_file,
    is_complete,
    read_json,
    write_json,
)
from napari_connectome.graph.sources import VoxelSource, as_source
from napari_connectome.progress import ProgressCallback, no_progress

Triple = tuple[int, int, int]
DEFAULT_BLOCK_VOXELS = 256**3
IN_PROCESS_MAX_VOXELS = 2**25  # below this (~320^3) starting a cluster costs more than it saves
FAN_IN = 8  # partial results per merge task


class StalePass(UserInputError):
    """The folder holds an unfinished pass that computes something else."""


@dataclass(frozen=True)
class PassPlan:
    """What a pass computes; saved as ``pass.json`` so a resume never mixes two passes."""

    shape: Triple
    dtype: str
    chunks: Triple
    block_shape: Triple
    source: str
    image: str | None
    image_dtype: str | None
    format_version: int = FORMAT_VERSION

    @property
    def block_grid(self) -> Triple:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block_shape))

    @property
    def chunk_grid(self) -> Triple:
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunks))

    def block_slices(self, index: Sequence[int]) -> tuple[slice, ...]:
        return tuple(
            slice(i * b, min((i + 1) * b, s))
            for i, b, s in zip(index, self.block_shape, self.shape)
        )

    def block_chunks(self, index: Sequence[int]) -> list[Triple]:
        """Grid indices of the stored chunks inside a block, in C order."""
        per = [b // c for b, c in zip(self.block_shape, self.chunks)]
        ranges = [range(i * p, min((i + 1) * p, g)) for i, p, g in zip(index, per, self.chunk_grid)]
        return list(itertools.product(*ranges))

    def as_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def default_block_shape(shape: Sequence[int], chunks: Sequence[int]) -> Triple:
    """Whole chunks, doubled axis by axis up to about 256^3 voxels (or one chunk if larger)."""
    block = [int(c) for c in chunks]
    grew = True
    while grew:
        grew = False
        for ax in range(3):
            if block[ax] < shape[ax] and math.prod(block) * 2 <= DEFAULT_BLOCK_VOXELS:
                block[ax] *= 2
                grew = True
    return tuple(min(b, math.ceil(s / c) * c) for b, s, c in zip(block, shape, chunks))


def check_block_shape(block_shape: Sequence[int], shape: Triple, chunks: Triple) -> Triple:
    if len(block_shape) != 3 or any(int(b) < 1 for b in block_shape):
        raise UserInputError(f"block_shape must be 3 positive sizes (z, y, x), got {block_shape}")
    out = []
    for ax, (b, s, c) in enumerate(zip(block_shape, shape, chunks)):
        b = int(b)
        if b >= s:
            b = math.ceil(s / c) * c
        elif b % c:
            raise UserInputError(
                f"block_shape {list(block_shape)} is not a whole number of stored chunks "
                f"{list(chunks)} along axis {'zyx'[ax]}: use a multiple of {c} (e.g. "
                f"{max(c, b // c * c)})"
            )
        out.append(b)
    return tuple(out)


# ---- work done on the workers --------------------------------------------------------------


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz (np.load reads it) deflated at level 1: label planes shrink ~10x at a fraction
    of the cost of numpy's default level."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _chunk_slices(plan: PassPlan, c: Triple) -> tuple[slice, ...]:
    return tuple(slice(i * n, min((i + 1) * n, s)) for i, n, s in zip(c, plan.chunks, plan.shape))


def _local(region: tuple[slice, ...], block: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(r.start - b.start, r.stop - b.start) for r, b in zip(region, block))


def block_task(
    labels: Any,
    image: Any,
    plan: PassPlan,
    index: Triple,
    stored: tuple[Triple, ...] | None,
    dest: str,
) -> dict:
    """Read one block, compute its partial result and save it; returns a small summary."""
    t0 = time.perf_counter()
    sl = plan.block_slices(index)
    chunks = plan.block_chunks(index)
    stored_set = None if stored is None else set(stored)
    if stored_set is None or len(stored_set) == len(chunks):
        block = labels.read(sl)
    else:  # read the stored chunks one by one: an absent one is not even looked up
        block = np.zeros(tuple(s.stop - s.start for s in sl), np.dtype(plan.dtype))
        for c in stored_set:
            csl = _chunk_slices(plan, c)
            block[_local(csl, sl)] = labels.read(csl)
    if block.dtype.kind == "i" and block.size and int(block.min()) < 0:
        raise UserInputError(
            f"{plan.source} holds negative ids in the block at {[s.start for s in sl]}: "
            "fragment ids must be 0 (background) or positive"
        )
    digest = np.zeros((len(chunks), kernels.DIGEST_BYTES), np.uint8)
    present = np.zeros(len(chunks), bool)
    for i, c in enumerate(chunks):
        if stored_set is not None and c not in stored_set:
            continue  # never stored: absent without a look
        d = kernels.chunk_digest_of(block[_local(_chunk_slices(plan, c), sl)])
        if d is not None:
            digest[i] = np.frombuffer(d, np.uint8)
            present[i] = True
    lab = block.astype(np.uint64, copy=False)
    img = image.read(sl) if image is not None else None
    scale = kernels.image_scale(np.dtype(plan.image_dtype)) if plan.image_dtype else 1.0
    stats, edges = kernels.block_stats_and_edges(lab, [s.start for s in sl], img, scale)
    arrays = {**stats, **edges, "digest": digest, "present": present}
    for ax in range(3):
        arrays[f"first{ax}"] = np.take(lab, 0, axis=ax)
        arrays[f"last{ax}"] = np.take(lab, -1, axis=ax)
        if img is not None:
            arrays[f"img_first{ax}"] = np.take(img, 0, axis=ax)
            arrays[f"img_last{ax}"] = np.take(img, -1, axis=ax)
    _save_npz(block_file(Path(dest), index), arrays)
    return {
        "block": list(index),
        "fragments": len(stats["id"]),
        "edges": len(edges["u"]),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _load(dest: Path, index: Triple, keys: Iterable[str]) -> dict[str, np.ndarray]:
    with np.load(block_file(dest, index), allow_pickle=False) as z:
        return {k: z[k] for k in keys}


def gather_task(
    dest: str, plan: PassPlan, items: list[tuple[Triple, tuple[int, ...]]], *_blocks: Any
) -> dict[str, np.ndarray]:
    """Merge a group of blocks' results, adding the faces between each block and its high-side
    neighbours along ``axes`` (only neighbours with a file: the others hold only background).
    ``_blocks``: the summaries of the block tasks it reads, so it runs after them."""
    root = Path(dest)
    scale = kernels.image_scale(np.dtype(plan.image_dtype)) if plan.image_dtype else 1.0
    with_img = plan.image is not None
    parts = []
    for index, axes in items:
        with np.load(block_file(root, index), allow_pickle=False) as z:
            parts.append({k: z[k] for k in (*kernels.STAT_KEYS, *kernels.EDGE_KEYS)})
            for ax in axes:
                nb = _high_neighbour(index, ax)
                keys = [f"first{ax}"] + ([f"img_first{ax}"] if with_img else [])
                other = _load(root, nb, keys)
                faces = kernels.plane_edges(
                    z[f"last{ax}"],
                    other[f"first{ax}"],
                    z[f"img_last{ax}"] if with_img else None,
                    other.get(f"img_first{ax}"),
                    scale,
                )
                parts.append({**faces, **kernels.empty_stats()})
    return kernels.merge_parts(parts)


def merge_task(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return kernels.merge_parts(parts)


def write_columns_task(dest: str, result: dict[str, np.ndarray]) -> tuple[int, int]:
    """Write the final per-fragment, per-edge and adjacency columns (zarr v3)."""
    import zarr

    root = Path(dest)
    indptr, edge = kernels.adjacency(result["id"], result["u"], result["v"])
    groups = {
        FRAGMENTS: {k: result[k] for k in kernels.STAT_KEYS},
        EDGES: {k: result[k] for k in kernels.EDGE_KEYS},
        ADJACENCY: {"indptr": indptr, "edge": edge},
    }
    for name, arrays in groups.items():
        if (root / name).exists():
            shutil.rmtree(root / name)  # a resumed reduction rewrites what a killed one began
        group = zarr.open_group(str(root / name), mode="w", zarr_format=3)
        for key, data in arrays.items():
            group.create_array(key, data=data, chunks=(ROW_CHUNK, *data.shape[1:]), write_data=True)
    return len(result["id"]), len(result["u"])


def _high_neighbour(index: Triple, ax: int) -> Triple:
    return tuple(i + (a == ax) for a, i in enumerate(index))


# ---- where tasks run ----------------------------------------------------------------------


class _Lazy:
    """A task of the in-process runner: run when its value is first needed."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.fn, self.args, self.done, self.out = fn, args, False, None

    def value(self) -> Any:
        if not self.done:
            self.out = self.fn(*(a.value() if isinstance(a, _Lazy) else a for a in self.args))
            self.done = True
        return self.out


class _InProcess:
    """Runs tasks here, one after another (tiny volumes; no cluster to start)."""

    def put(self, obj: Any) -> Any:
        return obj

    def submit(self, fn: Callable, *args: Any, key: str | None = None) -> _Lazy:
        return _Lazy(fn, args)

    def as_completed(self, handles: list[_Lazy]) -> Iterable[Any]:
        for h in handles:
            yield h.value()

    def result(self, handle: _Lazy) -> Any:
        return handle.value()

    def cancel(self, handles: list[Any]) -> None:
        pass


class _OnDask:
    """Runs tasks on a dask.distributed client. Everything is submitted at once, merges depending
    on the blocks they read, so the reduction runs while later blocks are still computed; results
    stay on the workers until the next merge needs them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = uuid.uuid4().hex[:12]
        self._n = 0

    def put(self, obj: Any) -> Any:
        return self.client.scatter(obj, broadcast=False, hash=False)

    def submit(self, fn: Callable, *args: Any, key: str | None = None) -> Any:
        self._n += 1
        key = f"{key or f'region-graph-{fn.__name__}-{self._n}'}-{self.token}"
        # the driver keeps no other reference: a merged part is freed once its merge has run
        return self.client.submit(fn, *args, key=key, retries=2, pure=False)

    def as_completed(self, handles: list[Any]) -> Iterable[Any]:
        from dask.distributed import as_completed

        for fut in as_completed(handles):
            yield fut.result()

    def result(self, handle: Any) -> Any:
        return handle.result()

    def cancel(self, handles: list[Any]) -> None:
        self.client.cancel(handles)  # an interrupted pass stops handing out work


def local_client(workers: int | None = None) -> tuple[Any, Any]:
    """A LocalCluster of worker processes on 127.0.0.1 (no dashboard) and its client."""
    from dask.distributed import Client, LocalCluster

    n = workers or max(1, (os.cpu_count() or 2) // 2)
    cluster = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    return Client(cluster), cluster


# ---- the driver ---------------------------------------------------------------------------


_GRAPH_ENTRIES = frozenset({META, PASS, BLOCKS, FRAGMENTS, EDGES, ADJACENCY, CHUNKS})


def _only_graph_files(dest: Path) -> bool:
    """Whether ``dest`` holds nothing but what a pass writes (and its temporaries): only such a
    folder is ever deleted by ``overwrite``."""
    return all(
        name in _GRAPH_ENTRIES or name.startswith((f".{META}.", f".{PASS}."))
        for name in os.listdir(dest)
    )


def _refuse_over_inputs(dest: Path, labels: Any, image: Any) -> None:
    """DEST may sit in the segmentation's store (``seg.ome.zarr/region_graph``, where jobs keep
    it) but may not be, contain or lie deeper inside an input (the levels), nor be a link."""
    from napari_connectome.volumes.output_safety import refuse_overlap, source_location
    from napari_connectome.volumes.volume import Volume

    if dest.is_symlink():
        raise UserInputError(
            f"{dest} is a link: the region graph is written to a folder, never through a link; "
            "choose another folder"
        )
    texts = [
        v.source
        for v in (labels, image)
        if isinstance(v, Volume) and v.source and not str(v.source).startswith("ssh://")
    ]
    if texts and isinstance(labels, Volume) and labels.source == texts[0]:
        beside = Path(os.path.realpath(dest)).parent == source_location(texts[0])
        if beside:
            texts = texts[1:]  # a new folder beside the levels: the layout jobs use
    refuse_overlap(dest, texts)


def _prepare_dest(dest: Path, plan: PassPlan, overwrite: bool) -> None:
    """Accept a resumable pass of the same plan; refuse anything else unless overwrite, and
    never delete a folder that is not a region graph (or holds anything else besides)."""
    if dest.exists():
        ours = (dest / META).exists() or (dest / PASS).exists()
        if not ours and dest.is_dir() and any(dest.iterdir()):
            raise UserInputError(
                f"{dest} exists and is not a region graph folder: refusing to write into it; "
                "choose a new folder"
            )
        if not dest.is_dir():
            raise UserInputError(f"{dest} exists and is not a folder: choose a new folder")
        if ours and not _only_graph_files(dest):
            raise UserInputError(
                f"{dest} holds a region graph and other files napari-connectome did not write: "
                "refusing to write into it or replace it; move your files out, or choose a new "
                "folder"
            )
        if overwrite and ours:
            shutil.rmtree(dest)
        elif is_complete(dest):
            raise UserInputError(
                f"{dest} already holds a complete region graph: open it with "
                "RegionGraph.open, or pass overwrite (--overwrite) to compute it again"
            )
        elif (dest / PASS).exists():
            old = read_json(dest / PASS)
            if old != plan.as_json():
                raise StalePass(
                    f"{dest} holds an unfinished pass over another volume or with other blocks "
                    f"({old}): choose another folder or pass overwrite (--overwrite)"
                )
    elif not dest.parent.is_dir():
        raise UserInputError(f"folder {dest.parent} does not exist: create it first")
    dest.mkdir(exist_ok=True)
    (dest / BLOCKS).mkdir(exist_ok=True)
    write_json(dest / PASS, plan.as_json())


def fingerprint_of(plan_shape, dtype, chunks, digests: np.ndarray) -> str:
    """One hex string for a volume: its geometry and every chunk digest in grid order (absent
    chunks as 16 zero bytes)."""
    h = hashlib.blake2b(digest_size=16)
    head = {"shape": list(plan_shape), "dtype": str(np.dtype(dtype)), "chunks": list(chunks)}
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(np.ascontiguousarray(digests, np.uint8).tobytes())
    return h.hexdigest()


def _write_digests(dest: Path, plan: PassPlan, done: Iterable[Triple]) -> str:
    """Assemble the chunk digest grid from the block files, write it, return the fingerprint."""
    import zarr

    grid = plan.chunk_grid
    digest = np.zeros((*grid, kernels.DIGEST_BYTES), np.uint8)
    present = np.zeros(grid, bool)
    for index in done:
        part = _load(dest, index, ("digest", "present"))
        for i, c in enumerate(plan.block_chunks(index)):
            digest[c] = part["digest"][i]
            present[c] = part["present"][i]
    if (dest / CHUNKS).exists():
        shutil.rmtree(dest / CHUNKS)
    group = zarr.open_group(str(dest / CHUNKS), mode="w", zarr_format=3)
    spatial = tuple(min(g, 64) for g in grid)
    group.create_array("digest", data=digest, chunks=(*spatial, kernels.DIGEST_BYTES))
    group.create_array("present", data=present, chunks=spatial)
    return fingerprint_of(plan.shape, plan.dtype, plan.chunks, digest)


def compute_region_graph(
    labels: Any,
    dest: str | os.PathLike,
    *,
    image: Any | None = None,
    block_shape: Sequence[int] | None = None,
    client: Any | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
) -> Path:
    """Compute fragment statistics, the contact graph and chunk digests of ``labels`` into the
    folder ``dest`` (resuming an unfinished pass there); returns ``dest``.

    ``labels``: a Volume, zarr array, h5py dataset, dask or numpy array (3D integer ids, 0 =
    background). ``image``: optional same-shape EM, the boundary evidence of ``weight``.
    ``client``: a dask.distributed Client to run on; without one, a LocalCluster of ``workers``
    processes on 127.0.0.1 (or this process, for volumes under ~32 Mvoxels).
    """
    progress = progress or no_progress
    t0 = time.perf_counter()
    dest = Path(dest)
    cores = os.cpu_count() or 1
    if client is None and workers is not None and workers > cores:
        raise UserInputError(
            f"{workers} worker processes on a machine with {cores} cores would only compete for "
            f"them (each worker runs one block at a time): use at most {cores}, or a Dask "
            "scheduler (--scheduler) for more"
        )
    src = as_source(labels, "labels")
    if not np.issubdtype(src.dtype, np.integer):
        raise UserInputError(
            f"labels must hold integer ids, got dtype {src.dtype}: give a segmentation, not an "
            "image"
        )
    img_src: VoxelSource | None = None
    if image is not None:
        img_src = as_source(image, "image")
        if img_src.shape != src.shape:
            raise UserInputError(
                f"image shape {list(img_src.shape)} differs from labels shape {list(src.shape)}: "
                "give the EM volume the segmentation was made from"
            )
        if img_src.dtype.kind not in "uif":
            raise UserInputError(f"image must be numeric, got dtype {img_src.dtype}")
    bshape = (  # whole store keys (shards), so a block never shares one with another block
        default_block_shape(src.shape, src.store_unit)
        if block_shape is None
        else check_block_shape(block_shape, src.shape, src.store_unit)
    )
    plan = PassPlan(
        shape=src.shape,
        dtype=str(src.dtype),
        chunks=src.chunks,
        block_shape=bshape,
        source=src.text,
        image=img_src.text if img_src else None,
        image_dtype=str(img_src.dtype) if img_src else None,
    )
    _refuse_over_inputs(dest, labels, image)
    _prepare_dest(dest, plan, overwrite)

    stored = src.stored_chunks()
    blocks = list(np.ndindex(*plan.block_grid))
    todo: list[tuple[Triple, tuple[Triple, ...] | None]] = []
    empty: set[Triple] = set()
    have: set[Triple] = set()
    for b in blocks:
        in_block = None
        if stored is not None:
            in_block = tuple(c for c in plan.block_chunks(b) if c in stored)
            if not in_block:
                empty.add(b)  # every chunk absent: nothing to read, decode or hash
                continue
        if block_file(dest, b).is_file():
            have.add(b)
        else:
            todo.append((b, in_block))

    cluster = None
    if client is not None:
        runner: Any = _OnDask(client)
    elif math.prod(src.shape) <= IN_PROCESS_MAX_VOXELS or len(todo) <= 1:
        runner = _InProcess()
    else:
        client, cluster = local_client(workers)
        runner = _OnDask(client)
    try:
        # sent to the cluster once, not with every task (a numpy array, a dask graph)
        reader = runner.put(src.reader)
        img_reader = runner.put(img_src.reader) if img_src is not None else None
        n_done = len(empty) + len(have)
        total = len(blocks)
        progress(n_done, total, "region graph: blocks")
        tasks = {
            b: runner.submit(
                block_task,
                reader,
                img_reader,
                plan,
                b,
                in_block,
                str(dest),
                key=f"region-graph-block-{'_'.join(map(str, b))}",
            )
            for b, in_block in todo
        }
        done = sorted(have | set(tasks))
        done_set = set(done)
        items = [
            (b, tuple(ax for ax in range(3) if _high_neighbour(b, ax) in done_set)) for b in done
        ]
        level = []
        for i in range(0, len(items), FAN_IN):
            group = items[i : i + FAN_IN]
            reads = {b for b, _ in group} | {
                _high_neighbour(b, a) for b, axes in group for a in axes
            }
            deps = [tasks[b] for b in sorted(reads) if b in tasks]  # waits for those blocks only
            level.append(runner.submit(gather_task, str(dest), plan, group, *deps))
        level = level or [runner.submit(merge_task)]
        while len(level) > 1:
            level = [
                runner.submit(merge_task, *level[i : i + FAN_IN])
                for i in range(0, len(level), FAN_IN)
            ]
        final = runner.submit(write_columns_task, str(dest), level[0])
        try:
            for _ in runner.as_completed(list(tasks.values())):
                n_done += 1
                progress(n_done, total, "region graph: blocks")
            progress(total, total, "region graph: merging")
            n_frag, n_edges = runner.result(final)
        except BaseException:
            runner.cancel([*tasks.values(), *level, final])  # and what depends on them
            raise
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    fp = _write_digests(dest, plan, done)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": True,
        "shape": list(plan.shape),
        "dtype": plan.dtype,
        "chunks": list(plan.chunks),
        "block_shape": list(plan.block_shape),
        "n_fragments": int(n_frag),
        "n_edges": int(n_edges),
        "fingerprint": fp,
        "source": plan.source,
        "image": plan.image,
        "has_image": plan.image is not None,
        "blocks": len(blocks),
        "blocks_empty": len(empty),
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(dest / META, meta)
    shutil.rmtree(dest / BLOCKS, ignore_errors=True)
    (dest / PASS).unlink(missing_ok=True)
    progress(total, total, "region graph: done")
    return dest
