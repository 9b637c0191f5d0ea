"""The proofreading queue panel in a real napari viewer: real key presses accept, reject, skip
and undo; a reject is an ordinary edit in the project's log; the view jumps to the contact."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connectome.agglomerate import agglomerate
from napari_connectome.volumes import open_volume
from tests.test_agglomerate import write_crop
from tests.test_gui_proofread import press

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def agglomerated(google_ffn_dir, fib25_h5, tmp_path_factory):
    crop = write_crop(tmp_path_factory.mktemp("crop") / "crop.h5", google_ffn_dir, fib25_h5)
    dest = tmp_path_factory.mktemp("q") / "agg.ome.zarr"
    agglomerate(open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw"), dest, threshold=0.4)
    return dest


def test_keys_accept_reject_skip_and_undo_through_the_project_log(
    make_napari_viewer, agglomerated, tmp_path, qtbot
):
    from qtpy.QtCore import Qt

    from napari_connectome.gui.proofread_queue import ProofreadQueueWidget

    viewer = make_napari_viewer(show=True)
    widget = ProofreadQueueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Proofreading queue")
    widget.open(agglomerated, tmp_path / "project")  # a worker builds the project
    qtbot.waitUntil(lambda: widget.queue is not None, timeout=120_000)
    queue, session = widget.queue, widget.session
    assert widget.index == 0
    assert {"queue: EM", "queue: segments", "queue: the two sides"} <= {
        layer.name for layer in viewer.layers
    }
    first = queue.items[0]
    scale = np.asarray(session.voxel_size_nm)
    assert np.allclose(viewer.dims.point, np.asarray(first.point) * scale)
    sides = viewer.layers["queue: the two sides"]
    assert set(np.unique(sides.data)) >= {1}
    assert sides.data.shape[0] <= 48  # a box around the contact, not the volume
    marker = viewer.layers["queue: contact"]
    assert np.array_equal(marker.data, [first.point])
    assert viewer.layers.selection.active.name == "queue: segments"  # not a paint tool
    # a merge to check: its two supervoxels in two colours, though they are one segment now
    merged = next(i for i, it in enumerate(queue.items) if it.kind == "merged")
    widget.show_item(merged)
    item = queue.items[merged]
    box = tuple(
        slice(int(t), int(t) + n)
        for t, n in zip(viewer.layers["queue: the two sides"].translate / scale, sides.data.shape)
    )
    frags = np.asarray(session.fragments[box])
    assert session.segment_at(queue.sides(session, item)[0]) == session.segment_at(
        queue.sides(session, item)[1]
    )
    assert (sides.data[frags == item.a] == 1).all()
    assert (sides.data[frags == item.b] == 2).all()
    assert np.array_equal(marker.data, [item.point])
    widget.show_item(0)
    assert f"left {len(queue.items)}" in widget.progress_label.text()

    # find an item the rule left apart, skipping the ones before it with K
    target = next(i for i, it in enumerate(queue.items) if it.kind == "apart")
    for _ in range(target):
        press(viewer, Qt.Key_K)
    assert widget.index == target
    pa, pb = queue.sides(session, queue.items[target])
    assert session.segment_at(pa) != session.segment_at(pb)
    n_edits = len(session.history())
    press(viewer, Qt.Key_N)  # reject: they are one neuron -> a merge edit in the log
    assert session.segment_at(pa) == session.segment_at(pb)
    assert len(session.history()) == n_edits + 1
    assert queue.done == 1
    assert f"done 1, left {len(queue.items) - 1}" in widget.progress_label.text()
    after = widget.index
    press(viewer, Qt.Key_Y)  # accept: no edit
    assert len(session.history()) == n_edits + 1
    assert queue.done == 2
    press(viewer, Qt.Key_U)  # undo the accept
    assert widget.index == after
    press(viewer, Qt.Key_U)  # undo the reject: the merge is undone in the log
    assert session.segment_at(pa) != session.segment_at(pb)
    assert queue.done == 0
    assert widget.index == target
    widget.close_session()


def test_a_merge_of_the_rule_is_split_by_n_and_the_split_undone_by_u(
    make_napari_viewer, agglomerated, tmp_path, qtbot
):
    from qtpy.QtCore import Qt

    from napari_connectome.gui.proofread_queue import ProofreadQueueWidget

    viewer = make_napari_viewer(show=True)
    widget = ProofreadQueueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Proofreading queue")
    widget.open(agglomerated, tmp_path / "project")  # a worker builds the project
    qtbot.waitUntil(lambda: widget.queue is not None, timeout=120_000)
    queue, session = widget.queue, widget.session
    # the panel says why the item is there and what the queue expects
    assert "chance the rule is wrong" in widget.item_label.text()
    assert "wrong decisions" in widget.progress_label.text()
    assert "mbit of VI" in widget.progress_label.text()
    target = next(i for i, it in enumerate(queue.items) if it.kind == "merged")
    for _ in range(target):
        press(viewer, Qt.Key_K)
    assert widget.index == target
    assert "merge to check" in widget.item_label.text()
    assert "merged at affinity" in widget.item_label.text()
    item = queue.items[target]
    pa, pb = queue.sides(session, item)
    assert session.segment_at(pa) == session.segment_at(pb)
    sides = viewer.layers["queue: the two sides"]
    n_edits = len(session.history())
    press(viewer, Qt.Key_N)  # reject: a false merge -> a min-cut split in the log
    assert session.segment_at(pa) != session.segment_at(pb)
    assert len(session.history()) == n_edits + 1
    assert "split" in widget.message.text()
    assert queue.decisions[target] == "rejected"
    press(viewer, Qt.Key_U)  # undo the split
    assert session.segment_at(pa) == session.segment_at(pb)
    assert widget.index == target
    assert {1, 2} <= set(np.unique(sides.data))  # one segment again: its two contact supervoxels
    assert set(np.unique(sides.data)) <= {0, 1, 2, 3}  # in two colours, the rest of it in a third
    press(viewer, Qt.Key_Y)  # accept: the merge stands, no edit
    assert session.segment_at(pa) == session.segment_at(pb)
    assert queue.decisions[target] == "accepted"
    widget.close_session()


def test_opening_runs_in_a_worker_with_progress_and_cancel_leaves_nothing(
    make_napari_viewer, agglomerated, tmp_path, qtbot
):
    from qtpy.QtCore import Qt

    from napari_connectome.gui.proofread_queue import ProofreadQueueWidget

    viewer = make_napari_viewer(show=True)
    widget = ProofreadQueueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Proofreading queue")
    qtbot.waitUntil(widget.isVisible)
    folder = tmp_path / "projects"
    folder.mkdir()
    widget.open(agglomerated, folder / "project")
    assert widget.worker is not None  # the Qt thread is free while it runs
    assert widget.cancel_button.isVisible()
    assert widget.progress.isVisible()
    assert not widget.open_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert "cancelled" in widget.message.text()
    assert widget.queue is None
    assert list(folder.iterdir()) == []  # no project, no hidden half-built one
    assert not widget.cancel_button.isVisible()
    # opened again without Cancel: the progress bar shows the steps, then the first item
    seen = []
    widget.reported.connect(lambda n, total, what: seen.append(what))
    widget.open(agglomerated, folder / "project")
    qtbot.waitUntil(lambda: widget.queue is not None, timeout=120_000)
    assert "applying the agglomeration" in seen
    assert [p.name for p in folder.iterdir()] == ["project"]
    assert widget.index == 0
    assert len(widget.session.history()) > 0  # the agglomeration, as merge edits in the log
    widget.close_session()


def test_the_calibration_field_ranks_the_queue_by_the_users_file_and_refuses_another(
    make_napari_viewer, agglomerated, tmp_path, qtbot
):
    import json

    from napari_connectome.agglomerate.calibrate import load_calibration, save_calibration
    from napari_connectome.agglomerate.queue import FEATURES, Calibration, ProofreadQueue
    from napari_connectome.gui.proofread_queue import ProofreadQueueWidget

    viewer = make_napari_viewer(show=True)
    widget = ProofreadQueueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Proofreading queue")
    # a file that is not a calibration: a clear message, no project written
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"mine": 1}))
    widget.calibration.setText(str(notes))
    widget.open(agglomerated, tmp_path / "p1", widget.calibration.text())
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.queue is None
    assert "not a queue calibration" in widget.message.text()
    assert not (tmp_path / "p1").exists()
    # the user's calibration: the queue ranks by it and the panel says which file
    mine = Calibration(0.5, tuple(-0.3 * (k + 1) for k in range(len(FEATURES))))
    path = save_calibration(mine, tmp_path / "lab.json", about={"fitted_on": []})
    widget.open(agglomerated, tmp_path / "p2", str(path))
    qtbot.waitUntil(lambda: widget.queue is not None, timeout=120_000)
    assert widget.queue.calibration == load_calibration(path)
    assert "(calibration lab.json)" in widget.progress_label.text()  # stays while deciding
    shipped = ProofreadQueue(agglomerated)
    assert [i.p_wrong for i in widget.queue.items] != [i.p_wrong for i in shipped.items]
    widget.close_session()


def test_a_project_of_another_agglomerate_output_is_refused_before_it_is_shown(
    make_napari_viewer, agglomerated, google_ffn_dir, fib25_h5, tmp_path, qtbot
):
    from napari_connectome.agglomerate.queue import build_queue_project, check_queue_project
    from napari_connectome.errors import UserInputError
    from napari_connectome.gui.proofread_queue import ProofreadQueueWidget

    # the same crop agglomerated at another threshold: same supervoxels, other merges
    other = tmp_path / "other.ome.zarr"
    crop = write_crop(tmp_path / "crop.h5", google_ffn_dir, fib25_h5)
    agglomerate(open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw"), other, threshold=0.8)
    project = build_queue_project(other, tmp_path / "project-of-other")
    with pytest.raises(UserInputError, match="not from"):
        check_queue_project(agglomerated, project)
    check_queue_project(other, project)  # its own output opens
    viewer = make_napari_viewer(show=True)
    widget = ProofreadQueueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Proofreading queue")
    n_log = len(list(project.rglob("*")))
    widget.open(agglomerated, project)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.queue is None
    assert widget.session is None
    assert "choose a new project folder" in widget.message.text()
    assert not any(b.isEnabled() for b in widget.buttons.values())
    assert len(list(project.rglob("*"))) == n_log
