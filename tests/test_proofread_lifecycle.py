"""Edits with a life cycle: a log row is written, then applied, or failed and undone. An edit that
fails leaves the project as it was, in the live session and after a reopen; old logs still open."""

from __future__ import annotations

import errno
import getpass
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.proofread import EditRefused, ProofreadSession
from napari_connectome.proofread import log as edit_log
from napari_connectome.proofread.operations import RollbackFailed
from napari_connectome.proofread.project import FRAGMENTS, LOG, create_v1_project
from napari_connectome.proofread.table import FragmentTable
from napari_connectome.settings import write_setting
from napari_connectome.testing.filesystems import fill, full_filesystem
from napari_connectome.testing.processes import ServiceUnavailable


def coarse_fragments(shape=(16, 32, 32)) -> np.ndarray:
    """One coarse fragment spanning two cells (a split must cut its voxels) beside a small one."""
    frags = np.ones(shape, np.uint64)
    frags[:, :, :4] = 2
    return frags


def membrane_image(shape=(16, 32, 32), x=16) -> np.ndarray:
    img = np.full(shape, 200, np.uint8)
    img[:, :, x - 1 : x + 1] = 15
    return img


def cells(shape=(16, 32, 32), size=8) -> np.ndarray:
    grid = [s // size for s in shape]
    ids = np.arange(1, np.prod(grid) + 1, dtype=np.uint64).reshape(grid)
    return np.kron(ids, np.ones((size,) * 3, dtype=np.uint64)).astype(np.uint64)


def make(path: Path, fragments: np.ndarray, **kw) -> Path:
    """A new project, closed again (its log lock released)."""
    with ProofreadSession.create(path, fragments, **kw) as s:
        return s.project


def state(s: ProofreadSession) -> dict:
    """Everything an edit may change, to compare before and after."""
    t = s.table
    return {
        "labels": s.labels().copy(),
        "fragments": np.asarray(s.fragments[...]).copy(),
        "table": [a.copy() for a in (t.frag_ids, t.seg, t.counts, t.lo, t.hi)],
        "empty": set(t.empty_segments),
        "status": {k: (v.locked, v.done, v.last_edit, v.last_op) for k, v in t.status.items()},
        "next_id": t.next_id(),
        "history": [(h.seq, h.description, h.applied) for h in s.history()],
        "undo": list(s.undo_stack),
        "redo": list(s.redo_stack),
        "segments": [(i.id, i.size, i.bbox_lo, i.bbox_hi) for i in s.segment_table()],
    }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in ("labels", "fragments"):
            assert np.array_equal(a[key], b[key]), key
        elif key == "table":
            assert all(np.array_equal(x, y) for x, y in zip(a[key], b[key], strict=True)), key
        else:
            assert a[key] == b[key], key


def row_statuses(s: ProofreadSession) -> list[tuple[str, str]]:
    """(kind, status) of every log row, read through the open session's own connection."""
    return [(r.kind, r.status) for r in s.log.rows()]


def statuses(project: Path) -> list[tuple[str, str]]:
    """The same, of a closed project."""
    db = sqlite3.connect(project / LOG)
    try:
        return db.execute("SELECT kind, status FROM ops ORDER BY seq").fetchall()
    finally:
        db.close()


def test_a_split_that_fails_half_way_is_undone_now_and_after_a_reopen(tmp_path, monkeypatch):
    """A by-reference project: the watershed patch is applied, then adding the new fragment
    raises (an injected MemoryError). Everything the split did is undone, the row is 'failed',
    the next edit works, and a reopen shows the project without the split."""
    p = make(tmp_path / "p", coarse_fragments(), image=membrane_image(),
                                chunks=16)  # fmt: skip
    with ProofreadSession.open(p) as s:
        s.merge([1, 2])
        s.undo()  # a redo stack the failed edit must leave alone
        before = state(s)
        plan = s.preview_split(1, [(8, 16, 8)], [(8, 16, 24)])
        assert plan.method == "watershed"
        applied = []
        s.listeners.append(lambda what, op: applied.append(what))

        def out_of_memory(self, *args):
            raise MemoryError("injected: no memory for the new fragment")

        with monkeypatch.context() as m:
            m.setattr(FragmentTable, "append_fragment", out_of_memory)
            with pytest.raises(MemoryError, match="injected") as err:
                s.commit_split(plan)
        assert "the project is as it was" in " ".join(err.value.__notes__)
        assert_same(state(s), before)
        assert len(s.overlay) == 0  # the voxel patch was taken back too
        assert applied == []  # nobody was told of an edit that did not happen
        assert row_statuses(s)[-1] == ("split", "failed")
        s.redo()  # the session goes on: the redo stack survived
        s.undo()
        expected = state(s)
    with ProofreadSession.open(p) as s:
        assert_same(state(s), expected)
        s.split(1, [(8, 16, 8)], [(8, 16, 24)])  # the same split now succeeds, with the same ids
        assert s.history()[-1].description == f"split 1 -> {plan.new_segment} (watershed)"
    assert [st for _, st in statuses(p)] == ["applied", "applied", "failed"] + ["applied"] * 3


def test_a_failed_roll_back_stops_edits_until_the_project_is_reopened(tmp_path, monkeypatch):
    """The split fails, and putting its voxel patch back fails too: the session cannot know its
    state, so it refuses edits; the row stays 'written' and the reopen rebuilds the project as it
    was before the split."""
    p = make(tmp_path / "p", coarse_fragments(), image=membrane_image(), chunks=16)
    with ProofreadSession.open(p) as s:
        before = state(s)
        plan = s.preview_split(1, [(8, 16, 8)], [(8, 16, 24)])

        def fail(*args):
            raise OSError(errno.EIO, "injected")

        with monkeypatch.context() as m:
            m.setattr(FragmentTable, "append_fragment", fail)
            m.setattr(ProofreadSession, "revert_patch", fail)
            with pytest.raises(RollbackFailed):
                s.commit_split(plan)
        with pytest.raises(EditRefused, match="open it again"):
            s.merge([1, 2])
        assert row_statuses(s)[-1] == ("split", "written")
    with ProofreadSession.open(p) as s:
        assert_same(state(s), before)
        assert row_statuses(s)[-1] == ("split", "failed")
        s.merge([1, 2])


def test_an_edit_whose_log_row_cannot_be_marked_applied_is_rolled_back(tmp_path, monkeypatch):
    p = make(tmp_path / "p", cells(), image=membrane_image(), chunks=8)
    real = edit_log.EditLog.set_status

    def disk_full_on_applied(self, seq, status, error=None):
        if status == edit_log.APPLIED:
            raise edit_log.not_written(
                self.path, sqlite3.OperationalError("database or disk is full")
            )
        real(self, seq, status, error)

    with ProofreadSession.open(p) as s:
        s.merge([1, 2])
        before = state(s)
        with monkeypatch.context() as m:
            m.setattr(edit_log.EditLog, "set_status", disk_full_on_applied)
            for edit in (lambda: s.merge([3, 4]), s.undo, lambda: s.delete(5), s.new_segment,
                         lambda: s.lock(6)):  # fmt: skip
                with pytest.raises(EditRefused, match="disk is full"):
                    edit()
                assert_same(state(s), before)
        s.undo()  # the stacks are intact
        s.redo()
        after = state(s)
    with ProofreadSession.open(p) as s:
        assert_same(state(s), after)


def test_an_undo_that_fails_leaves_the_edit_applied(tmp_path, monkeypatch):
    p = make(tmp_path / "p", cells(), image=membrane_image(), chunks=8)
    with ProofreadSession.open(p) as s:
        s.merge([1, 2, 3])
        before = state(s)
        calls = {"n": 0}
        real = FragmentTable.assign

        def fail_second(self, rows, segments):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.EIO, "injected I/O error")
            real(self, rows, segments)

        with monkeypatch.context() as m:
            m.setattr(FragmentTable, "assign", fail_second)
            s.merge([4, 5])  # first assign: applied
            before = state(s)
            with pytest.raises(OSError, match="injected"):
                s.undo()  # second assign fails: the merge stays
        assert_same(state(s), before)
    with ProofreadSession.open(p) as s:
        assert_same(state(s), before)
        s.undo()
        s.undo()
        assert (s.labels() == cells()).all()


def test_a_full_disk_under_a_format_1_split_leaves_the_voxels_as_they_were(tmp_path):
    """A real ENOSPC: the project's own copy of the fragments (format 1) lies on a full tmpfs
    while the log can still be written. The split's voxel write fails; the live session and a
    reopen after space was freed both show the volume bit for bit as it was."""
    frags = coarse_fragments()
    p = tmp_path / "p"
    create_v1_project(p, frags, image=membrane_image(), chunks=16)
    saved = tmp_path / "saved"
    shutil.move(p / FRAGMENTS, saved)
    try:
        with full_filesystem(p / FRAGMENTS, size_bytes=1 << 20) as disk:
            shutil.copytree(saved, disk, dirs_exist_ok=True)
            with ProofreadSession.open(p) as s:
                before = state(s)
                plan = s.preview_split(1, [(8, 16, 8)], [(8, 16, 24)])
                assert plan.patches
                fill(disk)
                with pytest.raises(OSError) as err:
                    s.commit_split(plan)
                assert err.value.errno == errno.ENOSPC
                assert_same({k: v for k, v in state(s).items() if k != "fragments"},
                            {k: v for k, v in before.items() if k != "fragments"})  # fmt: skip
            (disk / ".filler").unlink()
            assert statuses(p)[-1][0] == "split"
            assert statuses(p)[-1][1] in ("failed", "written")  # written: repaired on open
            with ProofreadSession.open(p) as s:
                assert_same(state(s), before)
                assert np.array_equal(np.asarray(s.fragments[...]), frags)
                assert row_statuses(s)[-1] == ("split", "failed")
                s.commit_split(s.preview_split(1, [(8, 16, 8)], [(8, 16, 24)]))  # space again
                after = state(s)
            with ProofreadSession.open(p) as s:
                assert_same(state(s), after)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


def test_a_full_disk_under_the_log_refuses_the_edit_and_changes_nothing(tmp_path):
    p = make(tmp_path / "src", cells(), chunks=8)
    try:
        with full_filesystem(tmp_path / "disk", size_bytes=4 << 20) as disk:
            shutil.copytree(p, disk / "p")
            with ProofreadSession.open(disk / "p") as s:
                s.merge([1, 2])
                before = state(s)
                fill(disk)

                def edit_until_refused() -> None:
                    for _ in range(200):  # the WAL has some room left in its pages
                        s.merge([3, 4])
                        s.undo()

                with pytest.raises(EditRefused, match="cannot write to the edit log"):
                    edit_until_refused()
                edited = state(s)
            (disk / ".filler").unlink()
            with ProofreadSession.open(disk / "p") as s:
                assert_same(state(s), edited)
                assert state(s)["history"][0] == before["history"][0]
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ops (seq INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL,
                  target INTEGER, params TEXT NOT NULL, arrays BLOB);
"""


def test_a_log_of_the_first_format_opens_and_gains_statuses(tmp_path):
    """A log written before rows had a status (every row counted) reads the same, read-only
    too, and is migrated on the first writable open."""
    p = make(tmp_path / "p", coarse_fragments(), image=membrane_image(),
                                chunks=16)  # fmt: skip
    with ProofreadSession.open(p) as s:
        s.merge([1, 2])
        s.undo()
        s.split(1, [(8, 16, 8)], [(8, 16, 24)])
        s.lock(2)
        expected = state(s)
    db = sqlite3.connect(p / LOG)
    rows = db.execute("SELECT seq, time, kind, target, params, arrays FROM ops").fetchall()
    meta = db.execute("SELECT key, value FROM meta").fetchall()
    db.close()
    (p / LOG).unlink()
    old = sqlite3.connect(p / LOG)
    old.executescript(OLD_SCHEMA)
    old.executemany("INSERT INTO meta VALUES (?, ?)", meta)
    old.executemany("INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    with ProofreadSession.open(p, read_only=True) as s:
        assert_same(state(s), expected)
    with ProofreadSession.open(p) as s:
        assert_same(state(s), expected)
        s.unlock(2)
    assert [st for _, st in statuses(p)] == ["applied"] * 5


def test_every_row_names_its_user(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CONNECTOME_CONFIG_DIR", str(tmp_path / "config"))
    p = make(tmp_path / "p", cells(), chunks=8)
    with ProofreadSession.open(p, user="alice") as s:
        s.merge([1, 2])
    with ProofreadSession.open(p) as s:
        s.merge([3, 4])
        s.undo()
        assert [h.user for h in s.history()] == ["alice", getpass.getuser()]
        assert all(h.time > 0 for h in s.history())
    db = sqlite3.connect(p / LOG)
    users = [u for (u,) in db.execute("SELECT user FROM ops ORDER BY seq")]
    db.close()
    assert users == ["alice", getpass.getuser(), getpass.getuser()]
    write_setting("user", "Bob Lee")
    with ProofreadSession.open(p) as s:
        s.redo()
        assert s.history()[-1].user == getpass.getuser()  # who made the edit, not who redid it
    db = sqlite3.connect(p / LOG)
    assert db.execute("SELECT user FROM ops ORDER BY seq DESC LIMIT 1").fetchone() == ("Bob Lee",)
    db.close()
    (tmp_path / "config" / "settings.yaml").write_text("user: 7\n")
    with pytest.raises(UserInputError, match="must be a name"):
        ProofreadSession.open(p)
