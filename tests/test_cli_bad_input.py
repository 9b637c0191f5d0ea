"""Bad numbers, bad inputs and a closed pipe at the command line: one message, exit 2, nothing
written; and the line between an expected failure (a message) and a bug (a traceback)."""

from __future__ import annotations

import argparse
import errno
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from napari_connectome.cli import main
from napari_connectome.cli._faults import explain
from napari_connectome.errors import UserInputError
from napari_connectome.testing.filesystems import fill

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "resources" / "models" / "fib25-small"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """EM (uint8), its ground truth, 16-bit EM, label ids and signed ids, as one user's HDF5."""
    from napari_connectome.samples import synthetic_em

    em = synthetic_em((40, 40, 40), seed=2)
    path = tmp_path_factory.mktemp("data") / "vol.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = em.image
        f["labels"] = em.labels
        f["raw16"] = em.image.astype(np.uint16) * 200  # 16-bit EM: values up to ~50,000
        f["raw16_8bit"] = em.image.astype(np.uint16)  # 8-bit values stored as uint16
        f["ids"] = em.labels.astype(np.uint64)
        signed = em.labels.astype(np.int64)
        signed[:5] = -1  # an 'ignore' value some tools write
        f["signed"] = signed
    return path


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _refused(argv: list[str], capsys, folder: Path, pattern: str) -> str:
    import re

    before = _entries(folder)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert _entries(folder) == before  # nothing created, not even a temporary
    return err


# (arguments after the command's positionals, the message) per command
BAD_NUMBERS = {
    "convert": [
        (["--chunks", "0"], "0 voxels is too small a chunk"),
        (["--chunks", "1"], "too small a chunk: each chunk is one file"),
        (["--chunks", "-8"], "too small a chunk"),
        (["--chunks", "100000"], "too large a chunk"),
        (["--chunks", "x"], "'x' is not an integer"),
        (["--levels", "0"], "--levels: 0 must be 1 or more"),
    ],
    "segment": [
        (["--threads", "-1"], "-1 threads: give 1 to"),
        (["--threads", "0"], "0 threads"),
        (["--threads", "100000"], "100000 threads"),
        (["--batch", "0"], "--batch: 0 must be 1 or more"),
        (["--move-threshold", "nan"], "finite number, not NaN"),
        (["--segment-threshold", "1.5"], "between 0 and 1"),
        (["--max-steps", "0"], "must be 1 or more"),
    ],
    "train": [
        (["--lr", "nan"], "--lr: 'nan' must be a finite number"),
        (["--lr", "inf"], "finite number"),
        (["--lr", "0"], "--lr: 0 must be greater than 0"),
        (["--image-stddev", "0"], "greater than 0"),
        (["--image-mean", "nan"], "finite number"),
        (["--threads", "-1"], "-1 threads"),
        (["--batch", "0"], "must be 1 or more"),
        (["--steps", "-5"], "must be 0 or more"),
    ],
    "import-checkpoint": [
        (["--image-stddev", "0"], "--image-stddev: 0 must be greater than 0"),
        (["--image-stddev", "nan"], "finite number"),
        (["--image-stddev", "-33"], "greater than 0"),
        (["--image-mean", "nan"], "--image-mean: 'nan' must be a finite number"),
    ],
    "proofread import": [
        (["--voxel-size", "0", "8", "8"], "--voxel-size: 0 must be greater than 0"),
        (["--voxel-size", "8", "-1", "8"], "-1 must be greater than 0"),
        (["--voxel-size", "nan", "8", "8"], "finite number"),
        (["--chunks", "0"], "too small a chunk"),
    ],
}


def _positionals(command: str, data: Path, out: Path) -> list[str]:
    return {
        "convert": ["convert", f"{data}:raw", str(out / "out.ome.zarr")],
        "segment": ["segment", f"{data}:raw", str(out / "seg.ome.zarr")],
        "train": ["train", f"{data}:raw", f"{data}:labels", str(out / "run")],
        "import-checkpoint": ["import-checkpoint", str(out / "model.ckpt"), str(out / "model")],
        "proofread import": ["proofread", "import", f"{data}:labels", str(out / "project")],
    }[command]


@pytest.mark.parametrize(
    ("command", "extra", "message"),
    [(c, e, m) for c, cases in BAD_NUMBERS.items() for e, m in cases],
)
def test_numbers_that_cannot_be_meant_are_refused_before_anything(
    command, extra, message, data, tmp_path, capsys
):
    err = _refused([*_positionals(command, data, tmp_path), *extra], capsys, tmp_path, message)
    assert f"napari-connectome {command}: error: argument" in err  # argparse names the option


def test_stream_polling_must_be_positive(tmp_path, capsys):
    _refused(
        ["stream", "job", str(tmp_path / "cache"), "--poll", "0"],
        capsys,
        tmp_path,
        "> 0|greater than 0",
    )


def test_a_chunk_grid_of_too_many_files_or_too_large_chunks_is_refused(tmp_path, capsys):
    """Nothing is read: the check needs only shape and dtype (the arrays hold no chunks)."""
    zarr.create_array(
        tmp_path / "huge.zarr", shape=(8192, 8192, 8192), chunks=(512,) * 3, dtype="u1"
    )
    zarr.create_array(
        tmp_path / "wide.zarr", shape=(4096, 4096, 4096), chunks=(512,) * 3, dtype="u8"
    )
    huge, wide = str(tmp_path / "huge.zarr"), str(tmp_path / "wide.zarr")
    out = str(tmp_path / "out.ome.zarr")
    _refused(["convert", huge, out, "--chunks", "8"], capsys, tmp_path, r"1,073,741,824 files")
    _refused(["convert", wide, out, "--chunks", "1024"], capsys, tmp_path, r"8\.0 GiB each")


def test_a_closed_pipe_ends_quietly(data):
    """`napari-connectome info X | head -1`: the reader exits first; no traceback, exit 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_connectome", "info", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the command prints anything
    assert proc.wait(timeout=60) == 141
    err = proc.stderr.read()  # at most the warning that the file gives no voxel size
    assert b"Traceback" not in err
    assert b"Error" not in err


def _args(**paths) -> argparse.Namespace:
    return argparse.Namespace(command="convert", func=None, **paths)


def test_only_failures_of_the_disk_or_of_a_typed_path_become_messages(tmp_path):
    args = _args(source=str(tmp_path / "in.h5:raw"), dest=str(tmp_path / "out.ome.zarr"))
    hidden = str(tmp_path / ".out.ome.zarr.tmp-1234" / "0" / "c")
    full = OSError(errno.ENOSPC, "No space left on device", hidden)
    assert "no space left on the device holding" in explain(full, args)
    assert ".tmp-" not in explain(full, args)  # names the user's folder, not our temporary
    assert "no space left" in explain(OSError(errno.ENOSPC, "No space left on device"), args)
    assert "quota" in explain(OSError(errno.EDQUOT, "Disk quota exceeded", hidden), args)
    ro = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out.ome.zarr"))
    assert explain(ro, args).startswith(f"folder {tmp_path} is on a read-only file system")
    (tmp_path / "h5s").mkdir()
    h5 = OSError(errno.EROFS, f"Unable to create file (name = '{tmp_path}/h5s/o.h5', errno = 30)")
    assert f"folder {tmp_path / 'h5s'} is on a read-only" in explain(h5, args)  # h5py: in text
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out.ome.zarr"))
    assert "permission denied" in explain(denied, args)
    missing = FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "in.h5"))
    assert explain(missing, args) == f"{tmp_path / 'in.h5'} does not exist: check the path"

    # bugs keep their traceback: a path nobody typed, a permission error without a file (e.g.
    # os.kill), other errnos, other exceptions, and a broken pipe (handled apart)
    stray = FileNotFoundError(errno.ENOENT, "No such file", "/usr/lib/nothing-typed")
    assert explain(stray, args) is None
    assert explain(FileNotFoundError(errno.ENOENT, "No such file"), args) is None
    ours = FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / ".out.ome.zarr.tmp-1"))
    assert explain(ours, args) is None  # our temporary vanished: not the user's mistake
    assert explain(PermissionError(errno.EPERM, "Operation not permitted"), args) is None
    assert explain(OSError(errno.EIO, "Input/output error", str(tmp_path)), args) is None
    assert explain(ValueError("boom"), args) is None
    assert explain(BrokenPipeError(errno.EPIPE, "Broken pipe"), args) is None


def test_demo_checks_the_screenshot_folder_before_opening_anything(
    read_only_dir, full_disk_dir, capsys
):
    for folder in (read_only_dir, full_disk_dir):
        if folder == full_disk_dir:
            fill(folder)
        before = _entries(folder)
        assert main(["demo", "--screenshot", str(folder / "shot.png")]) == 2
        err = capsys.readouterr().err
        assert f"cannot write into {folder}" in err
        assert "choose a writable folder" in err
        assert _entries(folder) == before


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("ids", r"dtype uint64, the dtype of label ids, not of EM"),
        ("raw16", r"uint16 EM with values \d+\.\.\d+, but the model expects 8-bit EM"),
    ],
)
def test_segment_refuses_label_ids_and_16_bit_em(dataset, message, data, tmp_path, capsys):
    argv = ["segment", f"{data}:{dataset}", tmp_path / "seg.ome.zarr", "--model", SHIPPED_MODEL]
    err = _refused([*argv, "--roi", "0:24,0:24,0:24"], capsys, tmp_path, message)
    assert "convert it to uint8" in err or "not a segmentation" in err


def test_segment_refuses_an_ome_zarr_label_image_and_takes_8_bit_values_in_uint16(
    data, tmp_path, capsys
):
    labels = tmp_path / "labels.ome.zarr"
    assert main(["convert", f"{data}:labels", str(labels), "--labels", "--levels", "1"]) == 0
    argv = ["segment", labels, tmp_path / "seg.ome.zarr", "--model", SHIPPED_MODEL]
    _refused(argv, capsys, tmp_path, "is an OME-Zarr label image .*, not EM")
    # 8-bit values that happen to be stored as uint16 are EM like any other
    dest = tmp_path / "seg.ome.zarr"
    argv = ["segment", f"{data}:raw16_8bit", dest, "--model", SHIPPED_MODEL, "--threads", "1"]
    assert main([str(a) for a in [*argv, "--roi", "0:24,0:24,0:24", "--max-steps", "2"]]) == 0
    assert dest.is_dir()


TINY = ["--fov", "9,9,9", "--deltas", "2,2,2", "--depth", "1", "--features", "4", "--quiet"]


@pytest.mark.parametrize(
    ("image", "labels", "message"),
    [
        ("raw", "signed", r"labels hold negative ids \(down to -1\)"),
        ("raw16", "labels", r"uint16 EM with values .* expects 8-bit EM"),
        ("ids", "labels", r"dtype uint64, the dtype of label ids"),
    ],
)
def test_train_refuses_bad_images_and_labels_before_writing(
    image, labels, message, data, tmp_path, capsys
):
    argv = ["train", f"{data}:{image}", f"{data}:{labels}", tmp_path / "run", *TINY]
    _refused(argv, capsys, tmp_path, message)


def test_train_with_a_nan_in_its_config_is_refused_and_writes_nothing(tmp_path):
    from napari_connectome.ffn.training import TrainConfig

    for field in ("learning_rate", "image_mean", "image_stddev", "momentum", "val_fraction"):
        with pytest.raises(UserInputError, match=f"{field} must be a finite number"):
            TrainConfig(**{field: float("nan")})
    with pytest.raises(UserInputError, match="thresholds must be a finite number"):
        TrainConfig(thresholds=[0.1, float("inf")])


def test_import_checkpoint_refuses_a_normalisation_that_cannot_work(tmp_path):
    from napari_connectome.ffn.checkpoint import import_google_checkpoint

    for mean, stddev in ((128.0, 0.0), (128.0, float("nan")), (float("inf"), 33.0)):
        with pytest.raises(UserInputError, match=r"image_(mean|stddev) must be a finite number"):
            import_google_checkpoint(
                tmp_path / "model.ckpt", tmp_path / "m", image_mean=mean, image_stddev=stddev
            )
    assert _entries(tmp_path) == []


def test_evaluate_refuses_negative_ids(data, tmp_path, capsys):
    argv = ["evaluate", f"{data}:labels", f"{data}:signed"]
    _refused(
        argv,
        capsys,
        tmp_path,
        r"GT holds negative ids \(-1, dtype int64\) in z 0:\d+.*--background -1",
    )
    argv = ["evaluate", f"{data}:signed", f"{data}:labels"]
    _refused(argv, capsys, tmp_path, r"SEG holds negative ids")
