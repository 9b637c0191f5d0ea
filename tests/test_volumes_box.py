"""The region type of blockwise code: ``Box`` and the one chunk-grid iteration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_connectome.volumes.box import Box, chunk_box, chunk_indices, grid_shape


def test_a_box_indexes_the_volume_and_arrays_that_cover_another_box():
    volume = np.arange(10 * 12 * 14).reshape(10, 12, 14)
    box = Box((2, 3, 4), (6, 9, 14))
    assert box.shape == (4, 6, 10)
    assert box.size == 240
    np.testing.assert_array_equal(volume[box.slices], volume[2:6, 3:9, 4:14])
    outer = Box((1, 0, 2), (8, 12, 14))
    crop = volume[outer.slices]
    np.testing.assert_array_equal(crop[box.slices_in(outer)], volume[box.slices])
    np.testing.assert_array_equal(crop[box.slices_in(outer.start)], volume[box.slices])
    assert Box.from_slices(box.slices) == box
    assert Box.from_shape((3, 4, 5), origin=(1, 1, 1)) == Box((1, 1, 1), (4, 5, 6))


def test_grow_stays_inside_the_volume_and_intersect_can_be_empty():
    box = Box((0, 5, 8), (4, 9, 10))
    assert box.grow(2) == Box((-2, 3, 6), (6, 11, 12))
    assert box.grow((2, 1, 3), within=(5, 20, 11)) == Box((0, 4, 5), (5, 10, 11))
    assert box.grow(1, within=Box((0, 5, 0), (3, 20, 20))) == Box((0, 5, 7), (3, 10, 11))
    assert box.intersect(Box((2, 0, 9), (10, 6, 20))) == Box((2, 5, 9), (4, 6, 10))
    apart = box.intersect(Box((5, 0, 0), (9, 9, 9)))
    assert apart.empty
    assert apart.size == 0
    assert np.zeros((10, 10, 10))[apart.slices].size == 0
    assert box.with_axis(1, 7, 8) == Box((0, 7, 8), (4, 8, 10))
    with pytest.raises(ValueError, match="axes"):
        Box((0, 0), (1, 1, 1))


def test_chunks_tile_a_shape_in_c_order_with_partial_last_chunks():
    shape, chunks = (5, 7, 3), (2, 3, 3)
    grid = grid_shape(shape, chunks)
    assert grid == (3, 3, 1)
    indices = list(chunk_indices(grid))
    assert indices == list(itertools.product(range(3), range(3), range(1)))
    covered = np.zeros(shape, int)
    for index in indices:
        covered[chunk_box(index, chunks, shape).slices] += 1
    assert (covered == 1).all()  # every voxel in exactly one chunk
    assert chunk_box((2, 2, 0), chunks, shape) == Box((4, 6, 0), (5, 7, 3))
    # a grid placed at an origin (a job's ROI inside its volume)
    assert chunk_box((1, 0, 0), (4, 4, 4), (6, 4, 4), origin=(10, 0, 2)) == Box(
        (14, 0, 2), (16, 4, 6)
    )
    assert list(chunk_indices(())) == [()]  # a 0-d array has one chunk


def test_job_blocks_read_their_write_region_plus_overlap_clipped_to_the_volume():
    from napari_connectome.jobs.grid import BlockGrid, seam_region

    grid = BlockGrid((2, 0, 0), (20, 16, 16), (8, 8, 16), (3, 3, 3), (22, 16, 16))
    assert grid.grid_shape == (3, 2, 1)
    blocks = list(grid)
    assert [b.flat for b in blocks] == list(range(6))
    last = grid.block((2, 1, 0))
    assert last.write == Box((18, 8, 0), (20, 16, 16))  # the ROI's end cuts the last block
    assert last.read == Box((15, 5, 0), (22, 16, 16))  # overlap, clipped to the volume
    assert last.output_slices(grid.roi_start) == (slice(16, 18), slice(8, 16), slice(0, 16))
    assert last.write_slices_in_read == (slice(3, 5), slice(3, 11), slice(0, 16))
    a, b = grid.block((0, 0, 0)), grid.block((1, 0, 0))
    seam = seam_region(a, b, 0, 2)
    assert seam == Box((8, 0, 0), (12, 8, 16))  # 2 either side of z=10, a's write region in y, x
