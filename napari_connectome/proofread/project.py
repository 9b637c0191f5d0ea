"""Project folders of format 1 (napari-connectome 0.1): a copy of the fragments in the project.

Projects are now made by reference (``reference.py``, format 2). Format-1 projects still open and
edit as before: their fragment copy is written in place by a watershed split. Layout::

    PROJECT/project.json        voxel size, format version, fingerprint
    PROJECT/fragments.zarr      uint64 fragment ids (only a watershed split ever writes here, and
    its undo restores)
    PROJECT/image.zarr          optional EM image, the boundary evidence for splits
    PROJECT/initial_table.npz   fragment ids, voxel counts, bounding boxes at creation
    PROJECT/initial_graph.npz   supervoxel adjacency with boundary evidence at creation (graph.py)
    PROJECT/edits.sqlite        the durable edit log (see log.py)

``create_v1_project`` still writes this format, so that tests prove old projects open.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.progress import ProgressCallback, no_progress
from napari_connectome.proofread.graph import FragmentGraph, reduce_edges, region_edges
from napari_connectome.proofread.table import FragmentTable

FORMAT_VERSION = 1
FRAGMENTS = "fragments.zarr"
IMAGE = "image.zarr"
TABLE = "initial_table.npz"
GRAPH = "initial_graph.npz"
EDGE_KEYS = ("u", "v", "area", "weight")
LOG = "edits.sqlite"
PROJECT_JSON = "project.json"


def _chunk_slices(shape: Sequence[int], chunks: Sequence[int]):
    ranges = [range(0, s, c) for s, c in zip(shape, chunks)]
    for corner in itertools.product(*ranges):
        yield tuple(slice(o, min(o + c, s)) for o, c, s in zip(corner, chunks, shape))


def _block_stats(block: np.ndarray, offset: Sequence[int]):
    """Ids, counts and bounding boxes (global coordinates) of the nonzero labels in one block."""
    import fastremap
    from scipy import ndimage

    ren, mapping = fastremap.renumber(block, start=1, preserve_zero=True, in_place=False)
    inv = {v: k for k, v in mapping.items() if k != 0}
    n = int(ren.max()) if ren.size else 0
    if n == 0:
        z = np.zeros((0, 3), np.int64)
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), z, z
    counts = np.bincount(ren.ravel(), minlength=n + 1)[1:]
    objs = ndimage.find_objects(ren)
    ids = np.array([inv[i + 1] for i in range(n)], dtype=np.uint64)
    off = np.asarray(offset, np.int64)
    lo = np.array([[s.start for s in o] for o in objs], np.int64) + off
    hi = np.array([[s.stop for s in o] for o in objs], np.int64) + off
    return ids, counts.astype(np.int64), lo, hi


def _reduce_stats(ids, counts, lo, hi) -> dict[str, np.ndarray]:
    if len(ids) == 0:
        z = np.zeros((0, 3), np.int64)
        return {
            "frag_ids": np.zeros(0, np.uint64),
            "counts": np.zeros(0, np.int64),
            "lo": z,
            "hi": z,
        }
    uniq, inv = np.unique(ids, return_inverse=True)
    c = np.bincount(inv, weights=counts, minlength=len(uniq)).astype(np.int64)
    glo = np.full((len(uniq), 3), np.iinfo(np.int64).max, np.int64)
    ghi = np.zeros((len(uniq), 3), np.int64)
    np.minimum.at(glo, inv, lo)
    np.maximum.at(ghi, inv, hi)
    return {"frag_ids": uniq, "counts": c, "lo": glo, "hi": ghi}


def sample_chunk_slices(
    shape: Sequence[int], chunks: Sequence[int], n: int = 9
) -> list[tuple[slice, ...]]:
    """A fixed, spread-out set of chunks (corners and centre of the chunk grid) to fingerprint."""
    grid = [max(1, -(-s // c)) for s, c in zip(shape, chunks)]
    picks = {
        tuple(g - 1 if b else 0 for g, b in zip(grid, bits))
        for bits in itertools.product((0, 1), repeat=3)
    }
    picks.add(tuple(g // 2 for g in grid))
    out = []
    for idx in sorted(picks)[:n]:
        out.append(tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape)))
    return out


def fingerprint(
    fragments: Any, patches: Sequence[tuple[Sequence[int], np.ndarray, int]] = ()
) -> str:
    """Shape, dtype, chunking and a hash of sample chunks, as they were before any watershed patch.

    ``patches`` are (lo, mask, original value) of every voxel patch in the log, oldest first;
    reverting them newest first on the sampled chunks recovers the original voxels, so a split
    never breaks the fingerprint.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(fragments.shape), str(fragments.dtype), tuple(fragments.chunks))).encode())
    for sl in sample_chunk_slices(fragments.shape, fragments.chunks):
        block = np.asarray(fragments[sl]).astype(np.uint64)
        for lo, mask, old in reversed(patches):
            pz = tuple(slice(a, a + m) for a, m in zip(lo, mask.shape))
            inter = [slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(sl, pz)]
            if any(s.start >= s.stop for s in inter):
                continue
            bsl = tuple(slice(s.start - a.start, s.stop - a.start) for s, a in zip(inter, sl))
            msl = tuple(slice(s.start - p.start, s.stop - p.start) for s, p in zip(inter, pz))
            sub = block[bsl]
            sub[mask[msl]] = old
        h.update(np.ascontiguousarray(block).tobytes())
    return h.hexdigest()


def _normalise_chunks(shape: Sequence[int], chunks: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(chunks, int):
        chunks = (chunks,) * len(shape)
    return tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape))


def create_v1_project(
    project: str | os.PathLike,
    fragments: Any,
    *,
    image: Any | None = None,
    voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0),
    chunks: int | Sequence[int] = 64,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Make a format-1 project (a copy of a 3D fragment array); returns its folder.

    ``fragments`` and ``image`` are anything with ``shape``/``dtype``/slicing (numpy, zarr, h5py,
    dask). The folder is built under a temporary name and renamed at the end, so a failure leaves
    nothing behind.
    """
    progress = progress or no_progress
    dest = Path(project)
    if len(getattr(fragments, "shape", ())) != 3:
        raise UserInputError(
            f"fragments must be a 3D (z, y, x) array, got shape {getattr(fragments, 'shape', None)}"
        )
    if not np.issubdtype(np.dtype(fragments.dtype), np.integer):
        raise UserInputError(f"fragments must hold integer ids, got dtype {fragments.dtype}")
    if image is not None and tuple(image.shape) != tuple(fragments.shape):
        raise UserInputError(
            f"image shape {tuple(image.shape)} differs from fragments shape "
            f"{tuple(fragments.shape)}"
        )
    if dest.exists() and not overwrite:
        raise UserInputError(
            f"{dest} already exists; choose a new project folder or pass overwrite"
        )
    if not dest.parent.is_dir():
        raise UserInputError(f"folder {dest.parent} does not exist")
    import zarr

    shape = tuple(int(s) for s in fragments.shape)
    ch = _normalise_chunks(shape, chunks)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        frag_z = zarr.create_array(
            tmp / FRAGMENTS, shape=shape, chunks=ch, dtype="uint64", fill_value=0
        )
        img_z = None
        if image is not None:
            img_z = zarr.create_array(
                tmp / IMAGE, shape=shape, chunks=ch, dtype=np.dtype(image.dtype), fill_value=0
            )
        slices = list(_chunk_slices(shape, ch))
        parts, edges = [], []
        for i, sl in enumerate(slices):
            # one voxel more on the high side, so contacts across chunk faces are seen once
            ext = tuple(slice(x.start, min(x.stop + 1, n)) for x, n in zip(sl, shape))
            core = tuple(x.stop - x.start for x in sl)
            core_sl = tuple(slice(0, c) for c in core)
            big = np.asarray(fragments[ext])
            if big.size and int(big.min()) < 0:
                raise UserInputError("fragment ids must not be negative")
            big = big.astype(np.uint64, copy=False)
            block = big[core_sl]
            frag_z[sl] = block
            parts.append(_block_stats(block, [x.start for x in sl]))
            img = None
            if img_z is not None:
                img = np.asarray(image[ext])
                img_z[sl] = img[core_sl]
            edges.append(region_edges(big, img, core))
            progress(i + 1, len(slices), "copying fragments")
        stats = _reduce_stats(*(np.concatenate(x) for x in zip(*parts)))
        np.savez(tmp / TABLE, **stats)
        graph = reduce_edges(*(np.concatenate([e[k] for e in edges]) for k in EDGE_KEYS))
        np.savez(tmp / GRAPH, **graph)
        meta = {
            "format_version": FORMAT_VERSION,
            "voxel_size_nm": [float(v) for v in voxel_size_nm],
            "shape": list(shape),
            "fingerprint": fingerprint(frag_z),
            "has_image": image is not None,
        }
        (tmp / PROJECT_JSON).write_text(json.dumps(meta, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_project_meta(project: Path) -> dict[str, Any]:
    p = Path(project) / PROJECT_JSON
    if not p.is_file():
        raise UserInputError(
            f"{project} is not a proofreading project (no {PROJECT_JSON}); "
            "create one with `napari-connectome proofread import`"
        )
    try:
        meta = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(
            f"{p} is damaged ({exc}); restore it from a backup or make the project again with "
            "`napari-connectome proofread import` (the edit log edits.sqlite can be kept)"
        ) from None
    if not isinstance(meta, dict) or meta.get("format_version") not in (1, 2):
        raise UserInputError(
            f"{p} is not a project description this version reads (format_version "
            f"{meta.get('format_version') if isinstance(meta, dict) else '?'}); "
            "update napari-connectome or make the project again"
        )
    if meta["format_version"] == 2:
        _check_reference_meta(meta, p)
    return meta


def _check_reference_meta(meta: dict[str, Any], path: Path) -> None:
    """The fields of a format-2 ``project.json`` have the types the project's writer gives them;
    a hand-edited or damaged one is a message, never a crash deep inside the session."""

    def source(entry: Any) -> bool:
        return isinstance(entry, dict) and isinstance(entry.get("source"), str)

    def numbers(v: Any, kind: type | tuple[type, ...]) -> bool:
        return isinstance(v, list) and len(v) == 3 and all(isinstance(x, kind) for x in v)

    graph = meta.get("region_graph")
    problems = [
        name
        for name, ok in (
            ("fragments", source(meta.get("fragments"))),
            ("image", meta.get("image") is None or source(meta.get("image"))),
            ("region_graph", isinstance(graph, dict) and isinstance(graph.get("path"), str)),
            ("voxel_size_nm", numbers(meta.get("voxel_size_nm"), (int, float))),
            ("shape", numbers(meta.get("shape"), int)),
            ("fingerprint", isinstance(meta.get("fingerprint"), str)),
        )
        if not ok
    ]
    texts = [e.get("source", "") for e in (meta.get("fragments"), meta.get("image")) if source(e)]
    if any("\0" in t for t in texts):
        problems.append("a source path with a NUL character")
    if problems:
        raise UserInputError(
            f"{path} is damaged or was edited by hand ({', '.join(problems)} not as a project "
            "writes it); restore it from a backup or make the project again with "
            "`napari-connectome proofread import` (the edit log edits.sqlite can be kept)"
        )


def _load_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except FileNotFoundError:
        raise UserInputError(
            f"{path} is missing: the project is incomplete; make it again with "
            "`napari-connectome proofread import`"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise UserInputError(
            f"{path} is damaged ({exc}); make the project again with "
            "`napari-connectome proofread import`"
        ) from None


def load_initial_table(project: Path) -> FragmentTable:
    z = _load_npz(Path(project) / TABLE, ("frag_ids", "counts", "lo", "hi"))
    ids = z["frag_ids"].astype(np.uint64)
    return FragmentTable(ids, ids.copy(), z["counts"].astype(np.int64), z["lo"], z["hi"])


def load_initial_graph(project: Path) -> FragmentGraph:
    return FragmentGraph.from_arrays(_load_npz(Path(project) / GRAPH, EDGE_KEYS))
