"""Send a volume that only exists on the desk (a layer made in memory, a file on a laptop) to the
cluster, so a job can read it there.

The array is written as a single-level OME-Zarr in a local temp folder, then copied file by file
over the job's transport (SFTP, or a local copy) into a hidden sibling of the destination, which is
renamed into place only when every file arrived: a cancelled or broken upload never leaves
something that looks like a finished input.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.transport import Transport
from napari_connectome.progress import ProgressCallback, no_progress


def upload_volume(
    data: Any,
    transport: Transport,
    dest: str,
    *,
    voxel_size_nm: Sequence[float],
    progress: ProgressCallback | None = None,
) -> str:
    """Copy a 3D array to ``dest`` (an absolute path on the cluster, must not exist) as OME-Zarr.

    Returns the source string a job spec's ``input`` takes.
    """
    from napari_connectome.volumes import write_ome_zarr

    progress = progress or no_progress
    if not PurePosixPath(dest).is_absolute():
        raise UserInputError(f"upload destination {dest!r} must be an absolute path on the cluster")
    if len(getattr(data, "shape", ())) != 3:
        raise UserInputError(
            f"only a 3D volume (z, y, x) can be uploaded, this one has shape {data.shape}"
        )
    parent = str(PurePosixPath(dest).parent)
    if not transport.exists(parent):
        raise UserInputError(f"folder {parent} does not exist on {transport.label}: create it")
    if transport.exists(dest):
        raise UserInputError(f"{dest} already exists on {transport.label}: choose another name")
    tmp_remote = str(PurePosixPath(parent, f".{PurePosixPath(dest).name}.{uuid.uuid4().hex[:8]}"))
    with tempfile.TemporaryDirectory(prefix="nc-upload-") as tmp:
        local = Path(tmp) / "volume.ome.zarr"
        write_ome_zarr(data, local, voxel_size_nm=tuple(voxel_size_nm), levels=1)
        files = sorted(p for p in local.rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in files)
        sent = 0
        try:
            made: set[str] = set()
            for path in files:
                rel = path.relative_to(local).as_posix()
                target = str(PurePosixPath(tmp_remote, rel))
                folder = str(PurePosixPath(target).parent)
                if folder not in made:
                    transport.makedirs(folder)
                    made.add(folder)
                transport.write_file(target, path.read_bytes())
                sent += path.stat().st_size
                progress(sent, total, f"uploading {rel}")
            res = transport.run(["mv", "--", tmp_remote, dest])
            if res.returncode != 0:
                raise UserInputError(
                    f"could not move the upload into place on {transport.label}: "
                    f"{res.stderr.strip() or res.stdout.strip()}"
                )
        except BaseException:
            if transport.exists(tmp_remote):
                transport.remove_tree(tmp_remote)
            raise
    return dest
