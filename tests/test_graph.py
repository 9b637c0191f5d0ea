"""The whole-volume region graph pass: blockwise on Dask equals one serial pass, absent chunks cost
nothing, a killed pass resumes, bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from scipy import ndimage
from zarr.storage import LocalStore, WrapperStore

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.graph import RegionGraph, chunk_digest_of, compute_region_graph


def serial_reference(labels: np.ndarray, image: np.ndarray | None) -> dict[str, np.ndarray]:
    """The definition, over the whole volume at once: ids, counts, boxes; every face between two
    different nonzero voxels, its area and squared mean brightness (float32, as the serial pass)."""
    ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = ids != 0
    objs = ndimage.find_objects(inv.reshape(labels.shape) + 1)
    lo = np.array([[s.start for s in o] for o in objs], np.int64)[keep]
    hi = np.array([[s.stop for s in o] for o in objs], np.int64)[keep]
    us, vs, ws = [], [], []
    scale = 1.0 / 255 if image is not None else 1.0
    for ax in range(3):
        a = np.moveaxis(labels, ax, 0)
        sel = (a[:-1] != a[1:]) & (a[:-1] != 0) & (a[1:] != 0)
        u, v = a[:-1][sel], a[1:][sel]
        us.append(np.minimum(u, v))
        vs.append(np.maximum(u, v))
        if image is None:
            ws.append(np.ones(len(u)))
        else:
            m = np.moveaxis(image, ax, 0)
            w = (m[:-1][sel].astype(np.float32) + m[1:][sel]) * np.float32(0.5 * scale)
            ws.append((w * w).astype(np.float64))
    u, v, w = (np.concatenate(x) for x in (us, vs, ws))
    order = np.lexsort((v, u))
    u, v, w = u[order], v[order], w[order]
    start = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
    return {
        "id": ids[keep].astype(np.uint64),
        "count": counts[keep].astype(np.int64),
        "lo": lo,
        "hi": hi,
        "u": u[start].astype(np.uint64),
        "v": v[start].astype(np.uint64),
        "area": np.diff(np.r_[start, len(u)]).astype(np.int64),
        "weight": np.add.reduceat(w, start) if len(u) else np.zeros(0),
    }


def assert_graph_equals(g: RegionGraph, ref: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(g.fragment_ids, ref["id"])
    rows = np.arange(g.n_fragments)
    count, lo, hi = g.stats(rows)
    np.testing.assert_array_equal(count, ref["count"])
    np.testing.assert_array_equal(lo, ref["lo"])
    np.testing.assert_array_equal(hi, ref["hi"])
    e = g.edges_of(rows)
    for key in ("u", "v", "area"):
        np.testing.assert_array_equal(e[key], ref[key])
    # float sums in another order: equal to the last bits (exact for up to ~1000 faces per edge)
    np.testing.assert_allclose(e["weight"], ref["weight"], rtol=1e-12, atol=0)
    assert g.n_edges == len(ref["u"])


@pytest.fixture(scope="module")
def dask_client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def fib25_crop(fib25_h5, tmp_path_factory):
    """The FIB-25 fragments (real supervoxels) and EM, 128^3, as zarr v3 (32^3 chunks) and
    HDF5 (the same chunks)."""
    import h5py

    with h5py.File(fib25_h5, "r") as f:
        frag = f["fragments"][:128, :128, :128]
        raw = f["raw"][:128, :128, :128]
    root = tmp_path_factory.mktemp("fib25")
    z = zarr.create_array(root / "frag.zarr", data=frag, chunks=(32, 32, 32))
    with h5py.File(root / "crop.h5", "w") as f:
        f.create_dataset("fragments", data=frag, chunks=(32, 32, 32))
        f.create_dataset("raw", data=raw, chunks=(32, 32, 32))
    return frag, raw, z, root, serial_reference(frag, raw)


def test_blockwise_on_dask_equals_the_serial_pass_on_fib25(fib25_crop, tmp_path, dask_client):
    frag, raw, z, root, ref = fib25_crop
    dest = compute_region_graph(
        z, tmp_path / "rg", image=raw, block_shape=(64, 64, 64), client=dask_client
    )
    g = RegionGraph.open(dest)
    assert_graph_equals(g, ref)
    assert g.meta["blocks"] == 8
    assert g.meta["has_image"]
    assert g.meta["chunks"] == [32, 32, 32]
    assert g.n_fragments > 3000
    assert g.n_edges > 10000
    # while running, the pass keeps per-block files; a finished store holds only its columns
    assert not (dest / "blocks").exists()
    assert not (dest / "pass.json").exists()
    assert g.chunk_digest((1, 2, 3)) == chunk_digest_of(frag[32:64, 64:96, 96:128])

    # the same voxels from HDF5 (tasks reopen the file by name), read through open_volume:
    # the same graph and the same fingerprint (digests are of decoded voxels)
    from napari_connectome.volumes import open_volume

    vol = open_volume(f"{root / 'crop.h5'}:fragments")
    em = open_volume(f"{root / 'crop.h5'}:raw")
    g2 = RegionGraph.open(compute_region_graph(vol, tmp_path / "rg2", image=em, client=dask_client))
    assert g2.meta["block_shape"] == [128, 128, 128]  # default: whole chunks up to ~256^3
    assert g2.fingerprint == g.fingerprint
    assert_graph_equals(g2, ref)


def sparse_volume() -> np.ndarray:
    """Mostly background, with objects that cross block faces, edges and corners."""
    lab = np.zeros((64, 80, 96), np.uint32)
    lab[30:34, 30:34, 30:34] = 7  # across the faces of 8 blocks (32^3)
    lab[30:34, 30:32, 34:36] = 9
    lab[28:36, 34:36, 28:36] = 3
    lab[60:64, 70:80, 90:96] = 12  # in the last, partial chunk
    lab[0:2, 0:2, 0:2] = 4_000_000_000
    lab[2, 0:2, 0:2] = 5
    return lab


class CountingStore(WrapperStore):
    """A real local zarr store that records every key read through it."""

    def __init__(self, store, keys=None):
        super().__init__(store)
        self.keys = [] if keys is None else keys

    def _with_store(self, store):
        return type(self)(store, self.keys)

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        self.keys.extend(k for k, _ in key_ranges)
        return await super().get_partial_values(prototype, key_ranges)


def test_absent_chunks_are_never_read_and_the_graph_is_exact(tmp_path):
    lab = sparse_volume()
    zarr.create_array(tmp_path / "seg.zarr", data=lab, chunks=(16, 16, 16))  # empty: not stored
    store = CountingStore(LocalStore(tmp_path / "seg.zarr", read_only=True))
    arr = zarr.open_array(store=store, mode="r")
    stored = {
        tuple(int(i) for i in p.relative_to(tmp_path / "seg.zarr" / "c").parts)
        for p in (tmp_path / "seg.zarr" / "c").rglob("*")
        if p.is_file()
    }
    assert 0 < len(stored) < 20  # of 4 * 5 * 6 = 120 chunks
    store.keys.clear()
    dest = compute_region_graph(arr, tmp_path / "rg", block_shape=(32, 32, 32))

    chunk_reads = [k for k in store.keys if k.startswith("c/")]
    read = {tuple(int(i) for i in k.split("/")[1:]) for k in chunk_reads}
    assert read == stored  # only stored chunks were fetched ...
    assert len(chunk_reads) == len(stored)  # ... each once
    g = RegionGraph.open(dest)
    assert_graph_equals(g, serial_reference(lab.astype(np.uint64), None))
    assert g.meta["blocks"] == 2 * 3 * 3
    assert g.meta["blocks_empty"] == 18 - 8 - 1
    for c in np.ndindex(4, 5, 6):
        sl = tuple(slice(i * 16, (i + 1) * 16) for i in c)
        assert g.chunk_digest(c) == chunk_digest_of(lab[sl])
        assert (g.chunk_digest(c) is None) == (c not in stored)

    # the same voxels in memory (every chunk read and hashed) have the same fingerprint
    import dask.array as da

    g2 = RegionGraph.open(
        compute_region_graph(da.from_array(lab, chunks=16), tmp_path / "rg2", block_shape=(32,) * 3)
    )
    assert g2.fingerprint == g.fingerprint
    # one voxel changed: another fingerprint, and the changed chunk's digest differs
    lab[40, 40, 56] = 99  # in the centre chunk, one check_source samples
    g3 = RegionGraph.open(
        compute_region_graph(da.from_array(lab, chunks=16), tmp_path / "rg3", block_shape=(32,) * 3)
    )
    assert g3.fingerprint != g.fingerprint
    assert g3.chunk_digest((2, 2, 3)) != g.chunk_digest((2, 2, 3))
    with pytest.raises(UserInputError, match="changed since"):
        g.check_source(da.from_array(lab, chunks=16))
    g3.check_source(da.from_array(lab, chunks=16))


def test_a_sharded_zarr_digests_its_chunks_and_skips_absent_shards(tmp_path):
    lab = sparse_volume()
    zarr.create_array(tmp_path / "seg.zarr", data=lab, chunks=(16, 16, 16), shards=(32, 32, 32))
    store = CountingStore(LocalStore(tmp_path / "seg.zarr", read_only=True))
    arr = zarr.open_array(store=store, mode="r")
    stored = {
        p.relative_to(tmp_path / "seg.zarr").as_posix()
        for p in (tmp_path / "seg.zarr" / "c").rglob("*")
        if p.is_file()
    }
    store.keys.clear()
    with pytest.raises(UserInputError, match="multiple of 32"):
        compute_region_graph(arr, tmp_path / "bad", block_shape=(16, 32, 32))
    g = RegionGraph.open(compute_region_graph(arr, tmp_path / "rg", block_shape=(32, 32, 32)))
    assert {k for k in store.keys if k.startswith("c/")} == stored  # absent shards: no look-up
    assert g.meta["chunks"] == [16, 16, 16]  # the digest grid: chunks, as Volume.storage_chunks
    assert_graph_equals(g, serial_reference(lab.astype(np.uint64), None))
    for c in np.ndindex(4, 5, 6):
        sl = tuple(slice(i * 16, (i + 1) * 16) for i in c)
        assert g.chunk_digest(c) == chunk_digest_of(lab[sl])


def test_queries_read_only_the_rows_asked(tmp_path):
    lab = sparse_volume()
    g = RegionGraph.open(compute_region_graph(lab, tmp_path / "rg"))
    ref = serial_reference(lab.astype(np.uint64), None)
    rows = g.rows_of([7, 12, 123456])
    assert rows[-1] == -1
    assert (g.fragment_ids[rows[:2]] == [7, 12]).all()
    count, lo, hi = g.stats(rows[:2][::-1])  # any order, same order back
    assert list(count) == [4 * 10 * 6, 4**3]
    assert lo[1].tolist() == [30, 30, 30]
    assert hi[1].tolist() == [34, 34, 34]
    e = g.edges_of(rows[:1])
    touching = (ref["u"] == 7) | (ref["v"] == 7)
    np.testing.assert_array_equal(e["u"], ref["u"][touching])
    np.testing.assert_array_equal(e["v"], ref["v"][touching])
    np.testing.assert_array_equal(e["area"], ref["area"][touching])
    assert sorted(e["index"]) == list(np.flatnonzero(touching))
    assert len(g.edges_of([])["u"]) == 0
    assert len(g.stats([])[0]) == 0


def test_a_killed_pass_resumes_with_only_the_missing_blocks(tmp_path):
    import dask.array as da

    rng = np.random.default_rng(1)
    lab = np.repeat(rng.integers(0, 40, (16, 16, 16)), 4, axis=0).astype(np.uint16)  # 64x16x16
    lab = np.kron(lab, np.ones((1, 4, 4), np.uint16))  # 64 x 64 x 64, 4x4 columns
    img = rng.integers(0, 256, lab.shape).astype(np.uint8)
    lab = da.from_array(lab, chunks=16)  # the digest grid: 16^3 chunks
    full = RegionGraph.open(
        compute_region_graph(lab, tmp_path / "full", image=img, block_shape=(16, 32, 32))
    )

    calls = []

    def killer(done, total, message=""):
        calls.append(done)
        if len(calls) == 6:
            raise KeyboardInterrupt  # the user pressed Ctrl-C after 5 blocks

    with pytest.raises(KeyboardInterrupt):
        compute_region_graph(
            lab, tmp_path / "rg", image=img, block_shape=(16, 32, 32), progress=killer
        )
    assert not (tmp_path / "rg" / "region_graph.json").exists()
    with pytest.raises(UserInputError, match="unfinished"):
        RegionGraph.open(tmp_path / "rg")
    assert len(list((tmp_path / "rg" / "blocks").glob("*.npz"))) == 5
    # a different pass into the same folder is refused, the finished blocks stay
    with pytest.raises(UserInputError, match="another volume or with other blocks"):
        compute_region_graph(lab, tmp_path / "rg", block_shape=(32, 32, 32))
    seen = []
    compute_region_graph(
        lab,
        tmp_path / "rg",
        image=img,
        block_shape=(16, 32, 32),
        progress=lambda d, t, m="": seen.append((d, t)),
    )
    assert seen[0] == (5, 16)  # 5 of 16 blocks were already done
    g = RegionGraph.open(tmp_path / "rg")
    assert g.fingerprint == full.fingerprint
    for key in ("u", "v", "area", "weight"):
        rows = np.arange(g.n_fragments)
        np.testing.assert_array_equal(g.edges_of(rows)[key], full.edges_of(rows)[key])
    assert_graph_equals(g, serial_reference(lab.compute().astype(np.uint64), img))


def test_dask_array_and_scattered_numpy_sources_on_a_cluster(tmp_path, dask_client):
    import dask.array as da

    lab = sparse_volume()
    img = np.random.default_rng(0).integers(0, 256, lab.shape).astype(np.uint8)
    g = RegionGraph.open(
        compute_region_graph(
            da.from_array(lab, chunks=16)[:, :, :],  # sliced: read through dask in the worker
            tmp_path / "rg",
            image=img,  # numpy: scattered once
            block_shape=(32, 32, 32),
            client=dask_client,
        )
    )
    assert g.meta["chunks"] == [16, 16, 16]
    assert_graph_equals(g, serial_reference(lab.astype(np.uint64), img))


def test_bad_input_is_refused_and_nothing_is_destroyed(tmp_path):
    lab = sparse_volume()
    with pytest.raises(UserInputError, match="integer ids"):
        compute_region_graph(lab.astype(np.float32), tmp_path / "a")
    with pytest.raises(UserInputError, match="3D"):
        compute_region_graph(lab[0], tmp_path / "a")
    with pytest.raises(UserInputError, match="image shape"):
        compute_region_graph(lab, tmp_path / "a", image=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(UserInputError, match="multiple of 16"):
        compute_region_graph(
            zarr.array(lab, chunks=(16, 16, 16)), tmp_path / "a", block_shape=(24, 32, 32)
        )
    neg = lab.astype(np.int32)
    neg[5, 5, 5] = -3
    with pytest.raises(UserInputError, match="negative"):
        compute_region_graph(neg, tmp_path / "neg")
    assert not (tmp_path / "a").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="not a region graph folder"):
        compute_region_graph(lab, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"

    dest = compute_region_graph(lab, tmp_path / "rg")
    with pytest.raises(UserInputError, match="already holds a complete region graph"):
        compute_region_graph(lab, dest)
    compute_region_graph(lab, dest, overwrite=True)

    with pytest.raises(UserInputError, match="not a region graph"):
        RegionGraph.open(mine)
    meta = json.loads((dest / "region_graph.json").read_text())
    (dest / "region_graph.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(UserInputError, match="format version 99"):
        RegionGraph.open(dest)
    fresh = RegionGraph.open(compute_region_graph(lab, tmp_path / "fresh"))
    with pytest.raises(UserInputError, match="not the segmentation"):
        fresh.check_source(lab[:, :, :40])


def test_cli_graph(fib25_crop, tmp_path, capsys, dask_client):
    import dask

    root = fib25_crop[3]
    dest = tmp_path / "rg"
    argv = [
        "graph",
        f"{root / 'crop.h5'}:fragments",
        str(dest),
        "--image",
        f"{root / 'crop.h5'}:raw",
    ]
    address = dask_client.scheduler.address
    assert main([*argv, "--block-shape", "64", "64", "64", "--scheduler", address]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["blocks"] == 8
    assert out["n_fragments"] == RegionGraph.open(dest).n_fragments
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*argv, "--scheduler", "tcp://127.0.0.1:1", "--overwrite"]) == 2
    assert "cannot reach Dask scheduler" in capsys.readouterr().err
    assert RegionGraph.open(dest).meta["block_shape"] == [64, 64, 64]  # left as it was
    assert main([*argv, "--block-shape", "48", "64", "64"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
