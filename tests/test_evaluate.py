"""Scoring segmentations against ground truth, from Python and from the command line."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_connectome.cli import main
from napari_connectome.errors import UserInputError
from napari_connectome.evaluate import evaluate_segmentation


def _two_bodies() -> np.ndarray:
    gt = np.zeros((8, 8, 8), np.uint64)
    gt[:, :, :4] = 7
    gt[:, :, 4:] = 9
    return gt


def test_a_perfect_segmentation_scores_zero():
    gt = _two_bodies()
    seg = np.where(gt == 7, 100, 200).astype(np.uint32)  # other ids, same partition
    scores = evaluate_segmentation(seg, gt)
    assert scores["vi"] == pytest.approx(0.0, abs=1e-12)
    assert scores["arand"] == pytest.approx(0.0, abs=1e-12)
    assert scores["n_voxels"] == 512


def test_a_split_counts_as_split_and_a_merge_as_merge():
    gt = _two_bodies()
    split = gt.copy()
    split[:4][gt[:4] == 7] = 8  # body 7 cut in two equal halves
    s = evaluate_segmentation(split, gt)
    assert s["vi_split"] == pytest.approx(0.5)  # half the voxels gain 1 bit of uncertainty
    assert s["vi_merge"] == pytest.approx(0.0, abs=1e-12)

    merged = np.ones_like(gt)  # both bodies in one segment
    m = evaluate_segmentation(merged, gt)
    assert m["vi_merge"] == pytest.approx(1.0)
    assert m["vi_split"] == pytest.approx(0.0, abs=1e-12)


def test_agrees_with_skimage_on_random_labels():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (20, 16, 12))
    seg = (gt * 3 + rng.integers(0, 3, gt.shape)) % 7
    ours = evaluate_segmentation(seg, gt)
    keep = gt > 0
    split, merge = variation_of_information(gt[keep], seg[keep])  # (H(seg|gt), H(gt|seg))
    assert ours["vi_split"] == pytest.approx(split)
    assert ours["vi_merge"] == pytest.approx(merge)
    assert ours["arand"] == pytest.approx(adapted_rand_error(gt, seg)[0])


def test_huge_uint64_ids_work():
    gt = _two_bodies() + np.uint64(2**63)
    seg = np.where(gt == gt.max(), 2**64 - 1, 2**62).astype(np.uint64)
    assert evaluate_segmentation(seg, gt)["vi"] == pytest.approx(0.0, abs=1e-12)


def test_mask_zero_ignores_unsegmented_voxels():
    gt = _two_bodies()
    seg = gt.copy()
    seg[:2] = 0  # not segmented there
    assert evaluate_segmentation(seg, gt)["vi"] > 0
    masked = evaluate_segmentation(seg, gt, mask_zero=True)
    assert masked["vi"] == pytest.approx(0.0, abs=1e-12)
    assert masked["n_voxels"] == 6 * 64


def test_bad_inputs_are_explained():
    gt = _two_bodies()
    with pytest.raises(UserInputError, match="same size"):
        evaluate_segmentation(gt[:4], gt)
    with pytest.raises(UserInputError, match="integer labels"):
        evaluate_segmentation(gt.astype(np.float32), gt)
    with pytest.raises(UserInputError, match="no labelled voxels"):
        evaluate_segmentation(gt, np.zeros_like(gt))


@pytest.mark.realdata
def test_googles_published_segmentation_scores_as_published(
    google_ffn_dir, fib25_h5, tmp_path, capsys
):
    seg = np.load(google_ffn_dir / "sample-training2.npz")["segmentation"]
    with h5py.File(tmp_path / "google.h5", "w") as f:
        f.create_dataset("seg", data=seg, chunks=(64, 64, 64))

    assert main(["evaluate", f"{tmp_path / 'google.h5'}:seg", f"{fib25_h5}:labels"]) == 0
    scores = json.loads(capsys.readouterr().out)

    assert scores["vi"] == pytest.approx(1.817, abs=0.01)
    assert scores["arand"] == pytest.approx(0.157, abs=0.005)
    assert scores["vi_split"] == pytest.approx(0.899, abs=0.005)  # H(seg|GT)
    assert scores["vi_merge"] == pytest.approx(0.918, abs=0.005)  # H(GT|seg)
    assert scores["n_voxels"] == int((h5py.File(fib25_h5)["labels"][:] > 0).sum())


def test_cli_refuses_volumes_of_different_shapes(tmp_path, capsys):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("a", data=np.ones((4, 5, 6), np.uint32))
        f.create_dataset("b", data=np.ones((4, 5, 7), np.uint32))
    assert main(["evaluate", f"{tmp_path / 'v.h5'}:a", f"{tmp_path / 'v.h5'}:b"]) == 2
    assert "same size" in capsys.readouterr().err
