"""Proofreading core, driven the way a user (or the GUI) drives it: create, click, edit, undo,
reopen."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_connectome.proofread import EditRefused, ProofreadSession


def cube_fragments(shape=(16, 32, 32), size=8) -> np.ndarray:
    """Fragments are 8^3 cubes numbered 1..N in C order."""
    grid = [s // size for s in shape]
    ids = np.arange(1, np.prod(grid) + 1, dtype=np.uint64).reshape(grid)
    return np.kron(ids, np.ones((size,) * 3, dtype=np.uint64)).astype(np.uint64)


def membrane_image(shape=(16, 32, 32), x=16) -> np.ndarray:
    """Bright cytoplasm with a dark membrane between x = x-1 and x."""
    img = np.full(shape, 200, np.uint8)
    img[:, :, x - 1 : x + 1] = 15
    return img


@pytest.fixture
def session(tmp_path):
    s = ProofreadSession.create(
        tmp_path / "proj", cube_fragments(), image=membrane_image(), chunks=8
    )
    yield s
    s.close()


def test_click_selects_segment_and_background_is_refused(session):
    assert session.segment_at((0, 0, 0)) == 1
    assert session.segment_at((15, 31, 31)) == 32
    frag = np.asarray(session.fragments)
    frag_bg = frag.copy()
    with EditRefused.__mro__[0] and pytest.raises(EditRefused, match="outside"):
        session.segment_at((99, 0, 0))
    assert (np.asarray(session.fragments) == frag_bg).all()


def test_merge_shows_in_labels_without_rewriting_fragments_and_undo_redo(session):
    before = np.asarray(session.fragments).copy()
    session.merge([1, 2, 3])
    lab = session.labels()
    assert set(np.unique(lab[session.fragments[:] <= 3])) == {1}
    assert (np.asarray(session.fragments) == before).all()  # a merge never writes the volume
    assert session.segment_info(1).size == 3 * 512
    session.undo()
    assert (session.labels() == before).all()
    session.redo()
    assert session.segment_info(1).size == 3 * 512
    assert [h.description for h in session.history()] == ["merge 2, 3 into 1"]


def test_split_cuts_along_the_dark_membrane(session):
    # one segment = the whole volume; seeds left and right of the membrane at x = 16
    session.merge(list(range(1, 33)))
    before = np.asarray(session.fragments).copy()
    plan = session.preview_split(1, [(4, 4, 4), (12, 20, 2)], [(4, 4, 28)])
    assert plan.method == "mincut"
    assert plan.voxels_a == plan.voxels_b == 16 * 32 * 16
    assert session.labels()[4, 4, 28] == 1  # preview changed nothing
    session.commit_split(plan)
    lab = session.labels()
    new = int(lab[4, 4, 28])
    assert new != 1
    assert (lab[:, :, :16] == 1).all()
    assert (lab[:, :, 16:] == new).all()
    assert (np.asarray(session.fragments) == before).all()
    session.undo()
    assert (session.labels() == 1).all()


@pytest.mark.parametrize(
    ("voxel_size_nm", "middle_side"), [((10, 10, 10), "b"), ((40, 10, 10), "a")]
)
def test_watershed_split_cuts_the_neck_thinnest_in_nm(tmp_path, voxel_size_nm, middle_side):
    """Three chambers in one supervoxel, joined by a neck two sections thick and one three
    voxels wide. In 10 nm voxels the two sections (20 nm) are the thinner neck; in 40 nm
    sections they are 80 nm, and the cut moves to the 30 nm neck."""
    frags = np.zeros((14, 14, 32), np.uint64)
    frags[1:13, 1:13, 1:31] = 1
    frags[:, :, 10:12] = 0
    frags[6:8, 1:13, 10:12] = 1  # thin in z
    frags[:, :, 20:22] = 0
    frags[1:13, 6:9, 20:22] = 1  # thin in y
    with ProofreadSession.create(
        tmp_path / "p", frags, voxel_size_nm=voxel_size_nm, chunks=16
    ) as s:
        plan = s.preview_split(1, [(6, 6, 3)], [(6, 6, 28)])
        assert plan.method == "watershed"
        s.commit_split(plan)
        lab = s.labels()
        side = {int(lab[6, 6, 3]): "a", int(lab[6, 6, 28]): "b"}
        assert side[int(lab[6, 6, 15])] == middle_side


def test_watershed_split_writes_new_ids_only_where_needed_and_undo_restores(tmp_path):
    frags = np.ones((16, 32, 32), np.uint64)  # one coarse fragment spanning two cells
    frags[:, :, :4] = 2
    with ProofreadSession.create(tmp_path / "p", frags, image=membrane_image(), chunks=16) as s:
        initial_edges = edge_set(s)
        plan = s.preview_split(1, [(8, 16, 8)], [(8, 16, 24)])
        assert plan.method == "watershed"
        s.commit_split(plan)
        after = np.asarray(s.fragments)
        changed = after != frags
        assert changed.any()
        assert (frags[changed] == 1).all()
        assert (changed[:, :, 17:]).all()
        assert not changed[:, :, :15].any()
        lab = s.labels()
        assert lab[8, 16, 8] == 1
        assert lab[8, 16, 24] not in (0, 1)
        assert (lab[:, :, :4] == 2).all()
        info = s.segment_info(int(lab[8, 16, 24]))
        assert info.size == int(changed.sum())
        # the supervoxel graph was updated locally, exactly as a fresh import of the cut volume
        with ProofreadSession.create(tmp_path / "fresh", after, image=membrane_image()) as fresh:
            assert edge_set(s) == edge_set(fresh)
        s.undo()
        assert (np.asarray(s.fragments) == frags).all()  # inverse restores the voxels bit for bit
        assert edge_set(s) == initial_edges
        assert s.segment_info(1).size == int((frags == 1).sum())
        s.redo()
        assert (np.asarray(s.fragments) == after).all()
    with ProofreadSession.open(
        tmp_path / "p"
    ) as s:  # fingerprint survives the patch; state replayed
        assert (np.asarray(s.fragments) == after).all()
        s.undo()
        assert (np.asarray(s.fragments) == frags).all()


def edge_set(session):
    e = session.graph.edges_of(session.table, session.table.frag_ids)
    return {
        (int(u), int(v), int(a), round(float(w), 3))
        for u, v, a, w in zip(e["u"], e["v"], e["area"], e["weight"])
    }


def test_delete_lock_done_new_segment_and_their_inverses(session):
    session.delete(5)
    assert not (session.labels() == 5).any()
    with pytest.raises(EditRefused, match="background"):
        session.segment_at(np.argwhere(np.asarray(session.fragments) == 5)[0])
    session.undo()
    assert session.segment_at(np.argwhere(np.asarray(session.fragments) == 5)[0]) == 5

    session.lock(7)
    edits = (
        lambda: session.merge([7, 8]),
        lambda: session.merge([8, 7]),
        lambda: session.delete(7),
        lambda: session.split(7, [(0, 8, 24)], [(7, 15, 31)]),
    )
    for edit in edits:
        with pytest.raises(EditRefused, match="locked"):
            edit()
    assert session.segment_info(7).locked
    session.undo()
    assert not session.segment_info(7).locked
    session.mark_done(7)
    assert session.segment_info(7).done
    session.undo()
    assert not session.segment_info(7).done

    new = session.new_segment()
    assert new == 33
    assert session.segment_info(new).size == 0
    session.merge([new, 9])
    assert session.segment_at(np.argwhere(np.asarray(session.fragments) == 9)[0]) == new
    session.undo()
    session.undo()
    with pytest.raises(EditRefused, match="does not exist"):
        session.segment_info(new)


def test_bad_edits_are_refused_and_change_nothing(session):
    session.merge([1, 2])
    n = len(session.history())
    with pytest.raises(EditRefused, match="itself"):
        session.merge([3, 3])
    with pytest.raises(EditRefused, match="each side"):
        session.split(1, [(0, 0, 0)], [])
    with pytest.raises(EditRefused, match="segments 1 and"):
        session.split(1, [(0, 0, 0)], [(15, 31, 31)])
    with pytest.raises(EditRefused, match="does not exist"):
        session.delete(999)
    with pytest.raises(EditRefused, match="nothing to redo"):
        session.redo()
    assert len(session.history()) == n


def test_reopen_restores_state_undo_and_redo_stacks(tmp_path):
    with ProofreadSession.create(
        tmp_path / "p", cube_fragments(), image=membrane_image(), chunks=8
    ) as s:
        s.merge([1, 2])
        s.merge([1, 3, 4])
        s.lock(1)
        s.undo()
        s.undo()  # merge 1,3,4 is now on the redo stack
        labels, undo, redo = s.labels(), list(s.undo_stack), list(s.redo_stack)
        table = s.segment_table()
    with ProofreadSession.open(tmp_path / "p") as s:
        assert (s.labels() == labels).all()
        assert (s.undo_stack, s.redo_stack) == (undo, redo)
        assert s.segment_table() == table
        cols = s.segment_columns()  # the widget's view of the same table
        assert cols["id"].tolist() == [i.id for i in table]
        assert cols["size"].tolist() == [i.size for i in table]
        assert cols["last_op"].tolist() == [i.last_op for i in table]
        s.redo()
        assert s.segment_info(1).size == 4 * 512


def test_second_session_is_refused_until_the_first_closes(tmp_path):
    s = ProofreadSession.create(tmp_path / "p", cube_fragments(), chunks=8)
    with pytest.raises(EditRefused, match="another session"):
        ProofreadSession.open(tmp_path / "p")
    s.close()
    ProofreadSession.open(tmp_path / "p").close()


def test_read_only_project_refuses_edits(tmp_path):
    with ProofreadSession.create(tmp_path / "p", cube_fragments(), chunks=8) as s:
        s.merge([1, 2])
    with ProofreadSession.open(tmp_path / "p", read_only=True) as s:
        assert s.segment_info(1).size == 1024
        with pytest.raises(EditRefused, match="read-only"):
            s.merge([1, 3])


def test_log_from_another_volume_is_refused(tmp_path):
    with ProofreadSession.create(tmp_path / "a", cube_fragments(), chunks=8) as s:
        s.merge([1, 2])
    other = cube_fragments()
    other[0, 0, 0] = 7
    ProofreadSession.create(tmp_path / "b", other, chunks=8).close()
    shutil.copy(tmp_path / "a" / "edits.sqlite", tmp_path / "b" / "edits.sqlite")
    with pytest.raises(EditRefused, match="different fragment volume"):
        ProofreadSession.open(tmp_path / "b")


def test_create_refuses_existing_folder_and_bad_input(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(EditRefused.__mro__[1], match="already exists"):
        ProofreadSession.create(tmp_path / "taken", cube_fragments())
    with pytest.raises(EditRefused.__mro__[1], match="3D"):
        ProofreadSession.create(tmp_path / "new", np.zeros((4, 4), np.uint32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from napari_connectome.proofread import ProofreadSession
    s = ProofreadSession.open(sys.argv[1])
    i = 0
    while True:
        seg = 2 + (i % 30)
        if i % 5 == 4:
            s.undo()
        elif i % 7 == 6:
            s.redo() if s.redo_stack else s.mark_done(seg)
        else:
            s.merge([1, seg]) if s.segment_info(seg).size and seg != 1 else s.lock(seg)
        i += 1
        print(i, flush=True)
    """
)


def test_session_killed_mid_edit_reopens_with_everything(tmp_path):
    ProofreadSession.create(
        tmp_path / "p", cube_fragments(), image=membrane_image(), chunks=8
    ).close()
    with ProofreadSession.open(
        tmp_path / "p"
    ) as s:  # a watershed split first, so patches are replayed too
        s.split(1, [(1, 1, 1)], [(6, 6, 6)])
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "p")], stdout=subprocess.PIPE, text=True
    )
    for _ in range(25):
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ProofreadSession.open(tmp_path / "p") as s:
        assert sum(1 for _ in s.log.rows()) >= 26  # nothing acknowledged was lost
        labels, table, stacks = s.labels(), s.segment_table(), (s.undo_stack, s.redo_stack)
        frags = np.asarray(s.fragments).copy()
    with ProofreadSession.open(tmp_path / "p", read_only=True) as s:  # what `proofread export` sees
        assert (s.labels() == labels).all()
    # replaying the same log a second time gives the identical state: the state is the log
    with ProofreadSession.open(tmp_path / "p") as s:
        assert (s.labels() == labels).all()
        assert s.segment_table() == table
        assert (s.undo_stack, s.redo_stack) == stacks
        assert (np.asarray(s.fragments) == frags).all()


def test_export_equals_table_applied_and_never_overwrites(tmp_path):
    import zarr

    frags = cube_fragments()
    with ProofreadSession.create(tmp_path / "p", frags, chunks=8, voxel_size_nm=(10, 10, 10)) as s:
        s.merge([1, 2, 3])
        s.split(5, [(1, 1, 33 - 1 - 31)], [(6, 6, 6)]) if False else None
        s.delete(4)
        dest = s.export(tmp_path / "out.ome.zarr")
        out = zarr.open_group(dest, mode="r")
        got = np.asarray(out["0"])
        assert (got == s.table.apply(frags)).all()
        assert got[frags == 2].max() == 1
        assert (got[frags == 4] == 0).all()
        assert out.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "0"
        with pytest.raises(EditRefused.__mro__[1], match="already exists"):
            s.export(tmp_path / "out.ome.zarr")
        with pytest.raises(EditRefused.__mro__[1], match="inside"):
            s.export(tmp_path / "p" / "x.zarr")


def unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct (a, b) voxel pairs, via one 1D key (faster than np.unique(axis=0))."""
    a, b = a.ravel().astype(np.uint64), b.ravel().astype(np.uint64)
    base = np.uint64(int(b.max()) + 1)
    key = np.unique(a * base + b)
    return np.stack([key // base, key % base], 1)


@pytest.mark.realdata
def test_fib25_fragments_merged_by_body_table_reproduce_labels(tmp_path, fib25_h5):
    import h5py

    with h5py.File(fib25_h5, "r") as f:
        s = ProofreadSession.create(tmp_path / "fib", f["fragments"], voxel_size_nm=(10, 10, 10))
        fa, la = f["fragments"][:], f["labels"][:]
    with s:
        assert len(s.table.frag_ids) == len(np.unique(fa[fa > 0])) > 21000
        bodies: dict[int, list[int]] = {}
        for frag, body in unique_pairs(fa, la).tolist():
            if frag:
                bodies.setdefault(body, []).append(frag)
        for body, members in bodies.items():
            if len(members) > 1:
                s.merge(members)
            if body == 0:
                s.delete(members[0])
        seg = s.labels()
        # one-to-one relabelling: every body is exactly one segment and vice versa
        assert len(unique_pairs(seg, la)) == len(np.unique(la)) == len(np.unique(seg))
        assert ((seg == 0) == (la == 0)).all()


def test_segment_index_agrees_with_a_full_scan_through_edits_undo_and_splits(tmp_path):
    """rows_of / exists use an index (segment size + edits, not the volume); it must always
    name exactly the rows a full scan of the table finds."""
    rng = np.random.default_rng(7)
    with ProofreadSession.create(
        tmp_path / "p", cube_fragments(), image=membrane_image(), chunks=8
    ) as s:
        for step in range(60):
            segs = [int(x) for x in s.segment_ids()]
            r = rng.random()
            if r < 0.5 and len(segs) > 2:
                a, b = rng.choice(segs, 2, replace=False)
                s.merge([int(a), int(b)])
            elif r < 0.7 and s.undo_stack:
                s.undo()
            elif r < 0.8 and s.redo_stack:
                s.redo()
            elif r < 0.9:
                s.delete(int(rng.choice(segs)))
            elif step % 3 == 0:
                with contextlib.suppress(EditRefused):  # segment 1 may be merged away or locked
                    s.split(1, [(1, 1, 1)], [(6, 6, 6)])
            t = s.table
            for seg in [*np.unique(t.seg).tolist(), 10**6]:
                np.testing.assert_array_equal(t.rows_of(seg), np.flatnonzero(t.seg == seg))
                assert t.exists(seg) == (seg in t.empty_segments or bool((t.seg == seg).any()))
