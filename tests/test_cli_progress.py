"""Progress bars of the command line: on a terminal by default, quiet in a pipe, forced by
``--progress`` / ``--quiet`` (napari_connectome.cli._progress).

Real processes: ``convert`` runs as a user starts it, once with stderr on a pseudo-terminal and
with stderr piped.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import tifffile

from napari_connectome.cli import build_parser

# every command that runs long enough to want a bar, with placeholder positionals
LONG_COMMANDS = [
    ["segment", "em.h5:raw", "seg.ome.zarr"],
    ["train", "em.h5:raw", "gt.h5:seg", "run"],
    ["convert", "a.tif", "a.ome.zarr"],
    ["proofread", "import", "seg.zarr", "project"],
    ["proofread", "export", "project", "out.ome.zarr"],
    ["graph", "seg.zarr", "graph"],
    ["evaluate", "seg.zarr", "gt.zarr"],
    ["run-job", "job.yaml"],
    ["stream", "job-id", "cache.zarr"],
    ["export-meshes", "seg.zarr", "meshes"],
    ["skeletonize", "seg.zarr", "swc"],
]


@pytest.mark.parametrize("argv", LONG_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_long_command_has_both_flags(argv):
    parser = build_parser()
    assert parser.parse_args(argv).progress is None  # = a bar on a terminal only
    assert parser.parse_args([*argv, "--progress"]).progress is True
    assert parser.parse_args([*argv, "--quiet"]).progress is False
    with pytest.raises(SystemExit):  # not both
        parser.parse_args([*argv, "--quiet", "--progress"])


@pytest.fixture
def tif(tmp_path):
    path = tmp_path / "em.tif"
    tifffile.imwrite(  # with a voxel size: none would be a warning on stderr
        path,
        np.random.default_rng(0).integers(0, 255, (16, 40, 40), np.uint8),
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.008,
            "PhysicalSizeY": 0.008,
            "PhysicalSizeZ": 0.03,
        },
    )
    return path


def _convert(tif, dest, *flags: str, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "napari_connectome", "convert", str(tif), str(dest)]
    return subprocess.run(
        [*argv, "--chunks", "8", *flags],
        stdout=subprocess.PIPE,
        stderr=stderr,
        timeout=120,
        check=False,
    )


def test_piped_stderr_gets_no_bar_unless_asked(tif, tmp_path):
    piped = _convert(tif, tmp_path / "a.ome.zarr")
    assert piped.returncode == 0, piped.stderr.decode()
    assert b"wrote image" in piped.stdout
    assert piped.stderr == b""  # a log file or a pipe stays clean

    forced = _convert(tif, tmp_path / "b.ome.zarr", "--progress")
    assert forced.returncode == 0, forced.stderr.decode()
    assert b"100%|" in forced.stderr  # tqdm's bar, drawn to the end

    quiet = _convert(tif, tmp_path / "c.ome.zarr", "--quiet")
    assert quiet.returncode == 0
    assert quiet.stderr == b""


def _on_a_terminal(tif, dest, *flags: str) -> bytes:
    """stderr of ``convert`` run with stderr on a pseudo-terminal (as in an interactive shell)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, cols
    try:
        proc = _convert(tif, dest, *flags, stderr=follower)
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out


def test_a_terminal_gets_a_bar_with_an_eta_by_default(tif, tmp_path):
    out = _on_a_terminal(tif, tmp_path / "a.ome.zarr")
    assert b"100%|" in out
    assert b"<" in out
    assert b"block/s" in out
    assert b"100%|" not in _on_a_terminal(tif, tmp_path / "b.ome.zarr", "--quiet")
