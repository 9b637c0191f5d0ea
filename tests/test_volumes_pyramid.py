"""Pyramid rules on hand-checked examples: which axes halve, and what a coarse voxel holds."""

from __future__ import annotations

import numpy as np

from napari_connectome.volumes.pyramid import downsample_mean, downsample_mode, plan_levels


def test_mean_rounds_and_repeats_the_edge_at_odd_borders():
    data = np.array([[0, 1, 250], [3, 4, 251]], dtype=np.uint8)  # 2 x 3
    out = downsample_mean(data, (2, 2))
    # block 1: (0+1+3+4)/4 = 2; block 2 (edge repeated): (250+250+251+251)/4 = 250.5 -> 251
    np.testing.assert_array_equal(out, [[2, 251]])
    assert out.dtype == np.uint8


def test_mean_of_floats_and_a_channel_axis_left_alone():
    data = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    out = downsample_mean(data, (1, 2, 2))
    np.testing.assert_allclose(out[1], [[18.5, 20.5], [26.5, 28.5]])


def test_mode_keeps_the_majority_and_never_invents_an_id():
    data = np.zeros((2, 2, 4), dtype=np.uint64)
    data[:, :, :2] = [[[7, 7], [7, 9]], [[9, 7], [7, 2**63]]]  # 7 wins 5 of 8
    data[:, :, 2:] = [[[1, 2], [3, 4]], [[5, 6], [2**63, 2**63]]]  # 2**63 wins 2 of 8
    np.testing.assert_array_equal(downsample_mode(data, (2, 2, 2)), [[[7, 2**63]]])


def test_mode_ties_go_to_the_first_voxel():
    data = np.array([[4, 5], [5, 4]], dtype=np.uint32)
    np.testing.assert_array_equal(downsample_mode(data, (2, 2)), [[4]])


def test_anisotropic_volume_halves_xy_until_z_is_comparable():
    plan = plan_levels((100, 4096, 4096), (40.0, 8.0, 8.0), "zyx", (64, 64, 64), levels=5)
    sizes = [size for _, size, _ in plan]
    assert sizes == [(40, 8, 8), (40, 16, 16), (40, 32, 32), (80, 64, 64), (160, 128, 128)]
    shapes = [shape for shape, _, _ in plan]
    assert shapes[3] == (50, 512, 512)


def test_default_levels_stop_when_one_chunk_holds_the_volume():
    plan = plan_levels((300, 300, 300), (10.0, 10.0, 10.0), "zyx", (64, 64, 64), levels=None)
    assert [shape for shape, _, _ in plan][-1] == (38, 38, 38)
    assert len(plan) == 4
