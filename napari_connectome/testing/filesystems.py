"""Folders that fail the way users' disks fail: read-only and full, for tests of error paths.

Root ignores permission bits, so a read-only folder is a read-only bind mount of a temporary
folder, and a full disk is a small tmpfs. Both need ``mount`` (root, or a user namespace); without
it a read-only folder falls back to ``chmod 555`` (honoured for other users) and a full disk
raises ``ServiceUnavailable``. Every mount is undone by the context manager, also on errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from napari_connectome.testing.processes import ServiceUnavailable


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def read_only_folder(path: str | Path) -> Iterator[Path]:
    """Make the existing folder ``path`` read-only (contents stay readable) while the block runs."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if _can_mount():
        bind = _run("mount", "--bind", str(path), str(path))
        if bind.returncode == 0:
            try:
                ro = _run("mount", "-o", "remount,bind,ro", str(path))
                if ro.returncode != 0:
                    raise ServiceUnavailable(f"cannot remount {path} read-only: {ro.stderr}")
                yield path
            finally:
                _run("umount", "-l", str(path))
            return
    if os.geteuid() == 0:
        raise ServiceUnavailable(
            "a read-only folder needs `mount` as root (bind mount, remount ro)"
        )
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(mode)


@contextlib.contextmanager
def full_filesystem(path: str | Path, size_bytes: int = 256 * 1024) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` on the new or empty folder ``path``: writes beyond it fail
    with ENOSPC (errno 28), as on a full disk."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not _can_mount():
        raise ServiceUnavailable("a full-disk test needs `mount -t tmpfs` (run the tests as root)")
    res = _run("mount", "-t", "tmpfs", "-o", f"size={int(size_bytes)}", "tmpfs", str(path))
    if res.returncode != 0:
        raise ServiceUnavailable(f"cannot mount a tmpfs on {path}: {res.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def fill(path: str | Path) -> None:
    """Fill the filesystem holding ``path`` (a folder) so that the next write fails with ENOSPC."""
    filler = Path(path) / ".filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
