"""Seam counts: pair and change counts across planes, summed per axis into a report."""

from __future__ import annotations

import numpy as np

from napari_connectome.jobs.seams import SeamCounts, face_changes, plane_changes


def brute(labels: np.ndarray, axis: int) -> tuple[int, int]:
    pairs = changes = 0
    for idx in np.ndindex(labels.shape):
        nxt = list(idx)
        nxt[axis] += 1
        if nxt[axis] >= labels.shape[axis]:
            continue
        a, b = labels[idx], labels[tuple(nxt)]
        if a > 0 and b > 0:
            pairs += 1
            changes += int(a != b)
    return pairs, changes


def test_plane_and_face_counts_match_a_voxel_by_voxel_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(5, 6, 7))
    for axis in range(3):
        assert plane_changes(labels, axis) == brute(labels, axis)
    lower, upper = labels[2], labels[3]
    assert face_changes(lower, upper) == brute(labels[2:4], 0)


def test_report_compares_faces_with_the_planes_inside_blocks():
    total = SeamCounts()
    total.add({"face": [[100, 30], [0, 0], [50, 1]], "interior": [[1000, 10], [900, 9], [800, 16]]})
    total.add({"face": [[100, 10], [0, 0], [50, 1]], "interior": [[1000, 10], [900, 9], [800, 16]]})
    report = total.report()
    assert set(report) == {"z", "x"}  # no face along y: nothing to judge
    assert report["z"] == {
        "face_change": 0.2,
        "interior_change": 0.01,
        "ratio": 20.0,
        "face_pairs": 200,
    }
    assert report["x"]["ratio"] == 1.0


def test_a_block_counts_the_face_to_its_lower_neighbour_from_the_neighbours_own_labels():
    from napari_connectome.jobs.grid import BlockGrid
    from napari_connectome.jobs.seams import block_seam_counts

    rng = np.random.default_rng(1)
    volume = rng.integers(0, 3, size=(12, 5, 4))
    grid = BlockGrid((0, 0, 0), (12, 5, 4), (6, 5, 4), (2, 2, 2), (12, 5, 4))
    lower, upper = grid.block((0, 0, 0)), grid.block((1, 0, 0))

    def read(b):
        return volume[b.read.slices]

    identity = np.arange(3)
    final = volume[6:12]
    counts = block_seam_counts(final, upper, [(lower, read(lower), identity)])
    assert counts["face"][0] == list(face_changes(volume[5], volume[6]))
    assert counts["face"][1:] == [[0, 0], [0, 0]]  # no lower neighbour along y or x
    assert counts["interior"] == [list(plane_changes(final, ax)) for ax in range(3)]
    # an upper neighbour is not this block's face to count (it counts it itself)
    faces = block_seam_counts(volume[0:6], lower, [(upper, read(upper), identity)])["face"]
    assert faces[0] == [0, 0]
