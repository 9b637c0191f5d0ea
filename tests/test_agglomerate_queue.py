"""The proofreading queue over an agglomerate output of a FIB-25 crop: ranking, decisions as
ordinary edits through a proofreading session (undo works), progress and expected gain."""

from __future__ import annotations

import numpy as np
import pytest

from napari_connectome.agglomerate import agglomerate
from napari_connectome.agglomerate.queue import GAIN_WEIGHT, ProofreadQueue, apply_agglomeration
from napari_connectome.proofread.reference import create_project
from napari_connectome.proofread.session import ProofreadSession
from napari_connectome.volumes import open_volume
from tests.test_agglomerate import write_crop


@pytest.fixture(scope="module")
def crop(google_ffn_dir, fib25_h5, tmp_path_factory):
    return write_crop(tmp_path_factory.mktemp("crop") / "crop.h5", google_ffn_dir, fib25_h5)


@pytest.fixture(scope="module")
def agglomerated(crop, tmp_path_factory):
    dest = tmp_path_factory.mktemp("q") / "agg.ome.zarr"
    agglomerate(open_volume(f"{crop}:seg"), open_volume(f"{crop}:raw"), dest, threshold=0.4)
    return dest


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_queue_ranks_decisions_near_the_threshold_and_edits_through_the_session(
    agglomerated,
    crop,
    tmp_path,
):
    near = ProofreadQueue(agglomerated, band=0.15)
    assert all(abs(it.affinity - 0.4) < 0.15 for it in near.items)
    queue = ProofreadQueue(agglomerated)  # every decision, not only those near the threshold
    assert len(queue.items) > len(near.items) > 5
    rank = [it.p_wrong * it.gain**GAIN_WEIGHT for it in queue.items]
    assert rank == sorted(rank, reverse=True)
    assert {it.kind for it in queue.items} == {"merged", "apart"}
    project = create_project(
        tmp_path / "p",
        str(agglomerated / "supervoxels"),
        image=f"{crop}:raw",
        region_graph=agglomerated / "region_graph",
    )
    with ProofreadSession.open(project) as session:
        n = apply_agglomeration(session, agglomerated)
        assert n > 0
        assert same_partition(session.labels(), np.asarray(open_volume(str(agglomerated)).data))
        gain = queue.expected_gain()
        first_apart = next(i for i, it in enumerate(queue.items) if it.kind == "apart")
        item = queue.items[first_apart]
        pa, pb = queue.sides(session, item)
        assert session.segment_at(pa) != session.segment_at(pb)
        op = queue.decide(session, first_apart, "reject")
        assert op is not None
        assert session.segment_at(pa) == session.segment_at(pb)
        assert queue.done == 1
        assert queue.left == len(queue.items) - 1
        assert queue.expected_gain() == pytest.approx(gain - item.p_wrong * item.gain)
        session.undo()  # the decision was an ordinary edit
        assert session.segment_at(pa) != session.segment_at(pb)
        first_merged = next(i for i, it in enumerate(queue.items) if it.kind == "merged")
        pa, pb = queue.sides(session, queue.items[first_merged])
        assert session.segment_at(pa) == session.segment_at(pb)
        queue.decide(session, first_merged, "reject")
        assert session.segment_at(pa) != session.segment_at(pb)
        assert queue.decide(session, 0, "accept") is None or 0 in (first_merged, first_apart)
        queue.decide(session, 1, "skip")
        assert queue.next_index(0) in (1, *range(2, len(queue.items)))
