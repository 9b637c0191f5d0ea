"""Reading Google's TensorFlow checkpoint without TensorFlow."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_connectome.errors import UserInputError
from napari_connectome.ffn.tensorbundle import read_index, read_tensorbundle

PREFIX = "model.ckpt-27465036"


@pytest.mark.realdata
def test_reads_googles_fib25_checkpoint(google_ffn_dir):
    tensors = read_tensorbundle(google_ffn_dir / PREFIX)

    assert int(tensors["global_step"]) == 27465036
    assert tensors["seed_update/conv0_a/weights"].shape == (3, 3, 3, 2, 32)
    assert tensors["seed_update/conv0_a/weights"].dtype == np.float32
    assert tensors["seed_update/conv11_b/weights"].shape == (3, 3, 3, 32, 32)
    assert tensors["seed_update/conv_lom/weights"].shape == (1, 1, 1, 32, 1)
    assert tensors["seed_update/conv_lom/biases"].shape == (1,)
    # trained weights, not zeros or garbage
    w = tensors["seed_update/conv3_a/weights"]
    assert np.isfinite(w).all()
    assert 0.005 < w.std() < 1.0
    assert len([k for k in tensors if k.startswith("seed_update/")]) == 2 * (2 * 12 + 1)


@pytest.mark.realdata
def test_index_prefix_or_index_path_both_work(google_ffn_dir):
    a = read_tensorbundle(google_ffn_dir / PREFIX)
    b = read_tensorbundle(google_ffn_dir / f"{PREFIX}.index")
    assert a.keys() == b.keys()
    header, entries = read_index(google_ffn_dir / f"{PREFIX}.index")
    assert header["num_shards"] == 1
    assert entries["seed_update/conv0_a/biases"]["shape"] == (32,)


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path):
    (tmp_path / "notes.index").write_text("these are my notes, not a checkpoint\n" * 10)
    with pytest.raises(UserInputError, match="not a TensorFlow TensorBundle"):
        read_tensorbundle(tmp_path / "notes")


def test_missing_checkpoint_names_the_expected_files(tmp_path):
    with pytest.raises(
        UserInputError, match=r"no TensorFlow checkpoint index .*model\.ckpt-1\.index"
    ):
        read_tensorbundle(tmp_path / "model.ckpt-1")


@pytest.mark.realdata
def test_corrupted_tensor_bytes_fail_the_checksum(google_ffn_dir, tmp_path):
    pytest.importorskip("google_crc32c")  # zarr depends on it, so it is always there with us
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(google_ffn_dir / f"{PREFIX}{suffix}", tmp_path / f"{PREFIX}{suffix}")
    data = tmp_path / f"{PREFIX}.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    with pytest.raises(UserInputError, match=r"checksum mismatch .* corrupt"):
        read_tensorbundle(tmp_path / PREFIX)


@pytest.mark.realdata
def test_missing_data_shard_is_named(google_ffn_dir, tmp_path):
    shutil.copy(google_ffn_dir / f"{PREFIX}.index", tmp_path / f"{PREFIX}.index")
    with pytest.raises(UserInputError, match=r"data-00000-of-00001 is missing"):
        read_tensorbundle(tmp_path / PREFIX)
