"""Tiled benchmark volumes and their region graphs, composed from one tile (for
bench_proofread_scale.py).

A tiled volume (volumes/read_tiled.py) is one FIB-25 tile repeated with id offsets. Its region
graph is composed, not computed over every voxel, from what is honest to share between copies:

* the tile's own fragment table and internal contacts, computed by the library's blockwise pass
  (``compute_region_graph``) on the tile with its EM: repeated with id and box offsets;
* the contacts across the faces between two copies, one computation per axis with the library's
  face kernel (``graph.kernels.plane_edges`` on the tile's last plane and its first, with the EM
  planes as boundary evidence): repeated for every pair of neighbouring copies;
* the digest of every level-0 chunk of the virtual volume (``graph.kernels.chunk_digest_of`` of
  the decoded voxels with their offsets): one hash per chunk over the whole volume, the expensive
  part, computed in a pool of processes.

The store is written in graph/layout's format (the library's ``write_columns_task`` writes the
columns and the adjacency index), so ``RegionGraph.open`` reads it and ``create_project`` reuses it
as a job's ``OUTPUT/region_graph``. At 10^9 voxels the benchmark also runs the real pass over every
voxel and checks that it equals the composed store.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
H5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
GOOGLE = DATA / "google-ffn-fib25" / "sample-training2.npz"
TILE = 256  # FIB-25 is 250^3: padded (reflected) to a whole number of 128^3 chunks
CHUNK = 128
LEVELS = 3  # 256, 128, 64 per tile
COMPOSE_VERSION = 1


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the tile ---------------------------------------------------------------------------------


def tile_arrays(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, EM) of one tile: FIB-25 training_sample2 reflected at its high faces to 256^3.

    ``ffn``: Google's published FFN segmentation of it (254 segments, 89% of voxels segmented),
    the output a segmentation job gives; ``fragments``: the ground truth's own supervoxels
    (21,316, dense)."""
    import h5py

    pad = [(0, TILE - 250)] * 3
    with h5py.File(H5, "r") as f:
        raw = f["raw"][:]
        labels = f["fragments"][:].astype(np.uint16) if kind == "fragments" else None
    if kind == "ffn":
        with np.load(GOOGLE, allow_pickle=False) as z:
            labels = z["segmentation"]
    elif kind != "fragments":
        raise ValueError(f"unknown tile kind {kind!r}")
    return np.pad(labels, pad, mode="reflect"), np.pad(raw, pad, mode="reflect")


def ensure_tile(root: Path, kind: str) -> tuple[Path, Path, Path]:
    """The tile's OME-Zarr labels and EM (3 levels, 128^3 chunks) and its region graph."""
    from napari_connectome.graph import compute_region_graph, is_complete
    from napari_connectome.volumes import open_volume, write_ome_zarr

    tiles = root / "tiles"
    tiles.mkdir(parents=True, exist_ok=True)
    seg, em, graph = (
        tiles / f"{kind}.ome.zarr",
        tiles / "em.ome.zarr",
        tiles / f"{kind}.region_graph",
    )
    if not (seg / "zarr.json").is_file() or not (em / "zarr.json").is_file():
        labels, raw = tile_arrays(kind)
        if not (seg / "zarr.json").is_file():
            write_ome_zarr(labels, seg, labels=True, chunks=CHUNK, levels=LEVELS,
                           voxel_size_nm=(10, 10, 10), name=kind)  # fmt: skip
        if not (em / "zarr.json").is_file():
            write_ome_zarr(raw, em, chunks=CHUNK, levels=LEVELS, voxel_size_nm=(10, 10, 10),
                           name="em")  # fmt: skip
    if not is_complete(graph):
        if graph.exists():
            shutil.rmtree(graph)
        compute_region_graph(open_volume(seg), graph, image=open_volume(em))
    return seg, em, graph


def read_graph(path: Path) -> dict[str, np.ndarray]:
    """Every column of a region graph store (small stores only: the tile's, or for checks)."""
    import zarr

    out = {}
    for group, keys in (("fragments", ("id", "count", "lo", "hi")),
                        ("edges", ("u", "v", "area", "weight")),
                        ("adjacency", ("indptr", "edge")), ("chunks", ("digest", "present"))):  # fmt: skip
        for k in keys:
            out[f"{group}/{k}"] = np.asarray(zarr.open_array(str(path / group / k), mode="r")[...])
    out["meta"] = json.loads((path / "region_graph.json").read_text())
    return out


def face_edges(labels: np.ndarray, image: np.ndarray, stride: int) -> list[dict[str, np.ndarray]]:
    """Per axis, the contacts across the face between a copy (its last plane) and its high-side
    neighbour (the first plane), with the library's kernel; ``u`` in the low copy's tile-local
    ids, ``v`` in the high copy's."""
    from napari_connectome.graph import kernels

    scale = kernels.image_scale(image.dtype)
    out = []
    for ax in range(3):
        a = np.take(labels, -1, axis=ax).astype(np.uint64)
        b = np.take(labels, 0, axis=ax).astype(np.uint64)
        b = np.where(b > 0, b + np.uint64(stride), 0)  # the neighbour's ids: all above a's
        e = kernels.plane_edges(
            a, b, np.take(image, -1, axis=ax), np.take(image, 0, axis=ax), scale
        )
        e["v"] = e["v"] - np.uint64(stride)
        out.append(e)
    return out


# ---- composition ------------------------------------------------------------------------------


def compose_tables(tile: dict[str, np.ndarray], faces, reps, stride: int) -> dict[str, np.ndarray]:
    """Fragment table and edges of the tiled volume, sorted as the real pass writes them."""
    T = math.prod(reps)
    pos = np.stack(np.unravel_index(np.arange(T), reps), axis=1).astype(np.int64)
    ids_l = tile["fragments/id"]
    n = len(ids_l)
    off = (np.arange(T, dtype=np.uint64) * np.uint64(stride))[:, None]
    result = {
        "id": (ids_l[None, :] + off).ravel(),
        "count": np.broadcast_to(tile["fragments/count"], (T, n)).ravel().copy(),
        "lo": (tile["fragments/lo"][None] + pos[:, None, :] * TILE).reshape(-1, 3),
        "hi": (tile["fragments/hi"][None] + pos[:, None, :] * TILE).reshape(-1, 3),
    }
    # per tile: internal edges (group 0) then those to the +x, +y, +z neighbours (groups 1-3);
    # sorting a tile's edges by (u, group, v) is sorting them by (u, v), so one sorted block per
    # pattern of present neighbours, repeated with offsets, is the whole sorted edge list
    delta = np.array([0, 1, reps[2], reps[1] * reps[2]], np.int64)
    groups = [
        {k: tile[f"edges/{k}"] for k in ("u", "v", "area", "weight")},
        faces[2],
        faces[1],
        faces[0],
    ]
    has = np.stack(
        [
            np.ones(T, bool),
            pos[:, 2] < reps[2] - 1,
            pos[:, 1] < reps[1] - 1,
            pos[:, 0] < reps[0] - 1,
        ],
        axis=1,
    )
    pattern = has[:, 1] * 1 + has[:, 2] * 2 + has[:, 3] * 4
    blocks = {}
    for p in np.unique(pattern):
        use = [0] + [g for g in (1, 2, 3) if p & (1 << (g - 1))]
        cat = {k: np.concatenate([groups[g][k] for g in use]) for k in ("u", "v", "area", "weight")}
        grp = np.concatenate([np.full(len(groups[g]["u"]), g) for g in use])
        order = np.lexsort((cat["v"], grp, cat["u"]))
        blocks[int(p)] = ({k: v[order] for k, v in cat.items()}, grp[order])
    sizes = np.array([len(blocks[int(p)][1]) for p in pattern], np.int64)
    start = np.r_[0, np.cumsum(sizes)[:-1]]
    E = int(sizes.sum())
    edges = {
        "u": np.empty(E, np.uint64),
        "v": np.empty(E, np.uint64),
        "area": np.empty(E, np.int64),
        "weight": np.empty(E, np.float64),
    }
    for p, (blk, grp) in blocks.items():
        tiles = np.flatnonzero(pattern == p)
        m = len(grp)
        idx = (start[tiles][:, None] + np.arange(m)[None, :]).ravel()
        t = tiles.astype(np.uint64)[:, None]
        edges["u"][idx] = (blk["u"][None, :] + t * np.uint64(stride)).ravel()
        vt = t + delta[grp].astype(np.uint64)[None, :]
        edges["v"][idx] = (blk["v"][None, :] + vt * np.uint64(stride)).ravel()
        edges["area"][idx] = np.broadcast_to(blk["area"], (len(tiles), m)).ravel()
        edges["weight"][idx] = np.broadcast_to(blk["weight"], (len(tiles), m)).ravel()
    u, v = edges["u"], edges["v"]
    ok = (u[1:] > u[:-1]) | ((u[1:] == u[:-1]) & (v[1:] > v[:-1]))
    if not (ok.all() and (u < v).all()):
        raise AssertionError("composed edges are not sorted and unique")
    return {**result, **edges}


_TILE0: dict[str, np.ndarray] = {}


def _digest_worker_init(seg: str) -> None:
    from napari_connectome.volumes import open_volume

    _TILE0["labels"] = np.asarray(open_volume(seg).data.compute(scheduler="synchronous"))


def _digest_tiles(args: tuple[list[int], int]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Digests of the 8 level-0 chunks of each of these copies (their voxels with the offset)."""
    from napari_connectome.graph.kernels import DIGEST_BYTES, chunk_digest_of

    tiles, stride = args
    lab = _TILE0["labels"]
    per = TILE // CHUNK
    digest = np.zeros((len(tiles), per, per, per, DIGEST_BYTES), np.uint8)
    present = np.zeros((len(tiles), per, per, per), bool)
    for i, t in enumerate(tiles):
        off = np.uint64(t * stride)
        for c in np.ndindex(per, per, per):
            part = lab[tuple(slice(k * CHUNK, (k + 1) * CHUNK) for k in c)]
            block = part.astype(np.uint64)
            np.add(block, off, out=block, where=part != 0)  # exactly what TiledArray makes
            d = chunk_digest_of(block)
            if d is not None:
                digest[(i, *c)] = np.frombuffer(d, np.uint8)
                present[(i, *c)] = True
    return tiles, digest, present


def chunk_digests(seg: Path, reps, stride: int, processes: int) -> tuple[np.ndarray, np.ndarray]:
    """Digest grid of the tiled volume's level-0 chunks (a pool of processes, by copy)."""
    from concurrent.futures import ProcessPoolExecutor

    from napari_connectome.graph.kernels import DIGEST_BYTES

    per = TILE // CHUNK
    T = math.prod(reps)
    grid = tuple(r * per for r in reps)
    digest = np.zeros((*grid, DIGEST_BYTES), np.uint8)
    present = np.zeros(grid, bool)
    batches = [list(range(i, min(i + 16, T))) for i in range(0, T, 16)]
    t0, done = time.perf_counter(), 0
    with ProcessPoolExecutor(
        processes, initializer=_digest_worker_init, initargs=(str(seg),)
    ) as ex:
        for tiles, dg, pr in ex.map(_digest_tiles, [(b, stride) for b in batches]):
            for i, t in enumerate(tiles):
                p = np.unravel_index(t, reps)
                sl = tuple(slice(k * per, (k + 1) * per) for k in p)
                digest[sl] = dg[i]
                present[sl] = pr[i]
            done += len(tiles)
            if done % 512 < 16 or done == T:
                rate = done / (time.perf_counter() - t0)
                log(f"chunk digests: {done}/{T} copies ({rate * per**3:.1f} chunks/s)")
    return digest, present


def write_store(dest: Path, result, digest, present, meta: dict) -> None:
    """Write the composed region graph in graph/layout's format, ``region_graph.json`` last."""
    import zarr

    from napari_connectome.graph.compute import fingerprint_of, write_columns_task
    from napari_connectome.graph.kernels import DIGEST_BYTES
    from napari_connectome.graph.layout import CHUNKS, META, write_json

    dest.mkdir(parents=True)
    n_frag, n_edges = write_columns_task(str(dest), result)
    group = zarr.open_group(str(dest / CHUNKS), mode="w", zarr_format=3)
    spatial = tuple(min(g, 64) for g in present.shape)
    group.create_array("digest", data=digest, chunks=(*spatial, DIGEST_BYTES))
    group.create_array("present", data=present, chunks=spatial)
    meta = {
        **meta,
        "n_fragments": int(n_frag),
        "n_edges": int(n_edges),
        "fingerprint": fingerprint_of(meta["shape"], meta["dtype"], meta["chunks"], digest),
        "complete": True,
    }
    write_json(dest / META, meta)


def tiled_name(kind: str, reps) -> str:
    return f"{kind}-{'x'.join(str(r) for r in reps)}"


def ensure_tiled(root: Path, kind: str, reps, processes: int = 2) -> tuple[Path, Path, dict]:
    """A tiled segmentation folder (``OUTPUT``, with ``OUTPUT/region_graph`` composed beside it,
    as a finished job leaves it) and its tiled EM; reused when already made."""
    from napari_connectome.graph import FORMAT, FORMAT_VERSION, is_complete

    reps = tuple(int(r) for r in reps)
    seg_tile, em_tile, tile_graph = ensure_tile(root, kind)
    tile = read_graph(tile_graph)
    stride = int(tile["fragments/id"].max()) + 1
    out = root / tiled_name(kind, reps)
    seg, em = out / "seg", out / "em"
    for folder, src, st in ((seg, seg_tile, stride), (em, em_tile, 0)):
        folder.mkdir(parents=True, exist_ok=True)
        desc = {"format": "napari-connectome-tiled", "tile": str(src), "reps": list(reps),
                "id_stride": st, "voxel_size_nm": [10, 10, 10]}  # fmt: skip
        if (
            not (folder / "tiled.json").is_file()
            or json.loads((folder / "tiled.json").read_text()) != desc
        ):
            (folder / "tiled.json").write_text(json.dumps(desc, indent=2) + "\n")
    recipe = {
        "version": COMPOSE_VERSION,
        "tile": str(seg_tile),
        "tile_fingerprint": tile["meta"]["fingerprint"],
        "image_tile": str(em_tile),
        "reps": list(reps),
        "id_stride": stride,
    }
    dest = seg / "region_graph"
    info = {"composed_s": None, "digest_s": None, "stride": stride, "reps": list(reps)}
    if is_complete(dest):
        old = json.loads((dest / "region_graph.json").read_text())
        if old.get("composed") == recipe:
            info["made_in_s"] = old.get("seconds")  # by an earlier run
            return seg, em, info
    shape = [TILE * r for r in reps]
    tmp = seg / ".region_graph.composing"
    if tmp.exists():
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    labels, raw = (np.asarray(a) for a in _tile_voxels(seg_tile, em_tile))
    faces = face_edges(labels, raw, stride)
    result = compose_tables(tile, faces, reps, stride)
    info["composed_s"] = round(time.perf_counter() - t0, 1)
    log(f"{tiled_name(kind, reps)}: {len(result['id'])} fragments, {len(result['u'])} edges "
        f"composed in {info['composed_s']} s; hashing {math.prod(reps) * 8} chunks")  # fmt: skip
    t1 = time.perf_counter()
    digest, present = chunk_digests(seg_tile, reps, stride, processes)
    info["digest_s"] = round(time.perf_counter() - t1, 1)
    info["made_in_s"] = round(time.perf_counter() - t0, 1)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "shape": shape,
        "dtype": "uint64",
        "chunks": [CHUNK] * 3,
        "block_shape": [TILE] * 3,
        "source": str(seg),
        "image": str(em),
        "has_image": True,
        "blocks": math.prod(reps),
        "blocks_empty": 0,
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "composed": recipe,
    }
    del labels, raw
    write_store(tmp, result, digest, present, meta)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    log(f"{tiled_name(kind, reps)}: region graph written ({time.perf_counter() - t0:.0f} s)")
    return seg, em, info


def _tile_voxels(seg_tile: Path, em_tile: Path) -> tuple[np.ndarray, np.ndarray]:
    from napari_connectome.volumes import open_volume

    return (
        open_volume(seg_tile).data.compute(scheduler="synchronous"),
        open_volume(em_tile).data.compute(scheduler="synchronous"),
    )


def compare_stores(a: Path, b: Path) -> dict:
    """Column by column: the composed store against one the real pass computed."""
    ga, gb = read_graph(a), read_graph(b)
    out = {"equal": True, "differs": []}
    for key in ga:
        if key == "meta":
            continue
        x, y = ga[key], gb[key]
        same = x.shape == y.shape and np.array_equal(x, y)
        if not same:
            out["equal"] = False
            out["differs"].append(key)
    if ga["meta"]["fingerprint"] != gb["meta"]["fingerprint"]:
        out["equal"] = False
        out["differs"].append("fingerprint")
    if ga["edges/weight"].shape == gb["edges/weight"].shape:
        out["weight_max_abs_diff"] = float(np.abs(ga["edges/weight"] - gb["edges/weight"]).max())
    out["fragments"] = len(ga["fragments/id"])
    out["edges"] = len(ga["edges/u"])
    out["fingerprint"] = ga["meta"]["fingerprint"]
    return out
