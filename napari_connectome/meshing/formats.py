"""Mesh files other tools read: PLY (binary little-endian), Wavefront OBJ and neuroglancer's
precomputed legacy mesh format.

Every format gets vertices as x, y, z in nm (our meshes are z, y, x like napari's axes; see
``Mesh.xyz``), so a mesh lands where the segmentation is in neuroglancer, Blender, MeshLab or
trimesh. Folders are written beside their destination and renamed into place, so a failure never
leaves half a folder (see docs/file-formats.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.meshing.build import Mesh
from napari_connectome.volumes.atomic import normal_mode

FORMATS = ("ply", "obj", "precomputed")

_PLY_FACE = np.dtype([("n", "u1"), ("v", "<u4", (3,))])


def write_ply(path: str | os.PathLike, mesh: Mesh) -> Path:
    """Binary little-endian PLY: float x y z per vertex, uchar-counted uint indices per face."""
    v, f = mesh.xyz()
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment napari-connectome segment {mesh.segment} level {mesh.level} units nm\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\nproperty list uchar uint vertex_indices\nend_header\n"
    )
    faces = np.zeros(len(f), _PLY_FACE)
    faces["n"], faces["v"] = 3, f
    path = Path(path)
    with open(path, "wb") as out:
        out.write(header.encode("ascii"))
        out.write(np.ascontiguousarray(v, "<f4").tobytes())
        out.write(faces.tobytes())
    return path


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(vertices x y z float32, faces uint32) of a PLY written by :func:`write_ply` (binary
    little-endian, float xyz, triangles with uchar counts and uint indices)."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise UserInputError(f"{path} is not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise UserInputError(f"{path}: only binary little-endian PLY is read")
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in lines if ln.startswith("element ")}
    nv, nf = counts.get("vertex", 0), counts.get("face", 0)
    body = memoryview(data)[end + len(b"end_header\n") :]
    verts = np.frombuffer(body[: nv * 12], "<f4").reshape(nv, 3)
    faces = np.frombuffer(body[nv * 12 : nv * 12 + nf * _PLY_FACE.itemsize], _PLY_FACE)
    if nf and not np.all(faces["n"] == 3):
        raise UserInputError(f"{path}: only triangle meshes are read")
    return verts.astype(np.float32), faces["v"].astype(np.uint32)


def write_obj(path: str | os.PathLike, mesh: Mesh) -> Path:
    """Wavefront OBJ (text, 1-based indices)."""
    v, f = mesh.xyz()
    path = Path(path)
    with open(path, "w", encoding="ascii") as out:
        out.write(f"# napari-connectome segment {mesh.segment} level {mesh.level}, units nm\n")
        out.write(f"o segment_{mesh.segment}\n")
        if len(v):
            np.savetxt(out, v, fmt="v %.3f %.3f %.3f")
        if len(f):
            np.savetxt(out, f.astype(np.int64) + 1, fmt="f %d %d %d")
    return path


def precomputed_fragment(mesh: Mesh) -> bytes:
    """One legacy-format fragment: uint32 vertex count, float32 x y z vertices, uint32 indices."""
    v, f = mesh.xyz()
    return (
        np.uint32(len(v)).astype("<u4").tobytes()
        + np.ascontiguousarray(v, "<f4").tobytes()
        + np.ascontiguousarray(f, "<u4").tobytes()
    )


def write_precomputed(folder: str | os.PathLike, meshes: Iterable[Mesh]) -> Path:
    """neuroglancer precomputed legacy meshes: ``info``, one manifest ``<id>:0`` per segment naming
    its fragment file ``<id>:0:mesh``. Point a segmentation's info ``"mesh"`` key at this folder
    (or open it as ``precomputed://.../FOLDER``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_precomputed_info(folder)
    for m in meshes:
        write_precomputed_segment(folder, m)
    return folder


def write_precomputed_info(folder: Path) -> None:
    (folder / "info").write_text(json.dumps({"@type": "neuroglancer_legacy_mesh"}))


def write_precomputed_segment(folder: Path, mesh: Mesh) -> None:
    """One segment of a legacy mesh folder: the fragment ``<id>:0:mesh`` and the manifest
    ``<id>:0`` naming it (fragment first, so a manifest never names a missing file)."""
    name = f"{mesh.segment}:0:mesh"
    (folder / name).write_bytes(precomputed_fragment(mesh))
    (folder / f"{mesh.segment}:0").write_text(json.dumps({"fragments": [name]}))


_MESH_FILE = re.compile(r"\d+\.(ply|obj|swc)|info|\d+:0(:mesh)?")


def is_mesh_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding only mesh files as :func:`write_meshes` writes them
    (``<id>.ply``, ``<id>.obj``, or a precomputed mesh folder), or nothing: what ``overwrite`` may
    replace. A link, a file or a folder with anything else in it is someone else's."""
    if path.is_symlink() or not path.is_dir():
        return False
    return all(
        _MESH_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False) for e in os.scandir(path)
    )


def check_mesh_dest(dest: Path, overwrite: bool) -> None:
    """Refuse a destination that is a link, exists (without ``overwrite``), is not a folder of
    meshes, or has no parent folder."""
    if dest.is_symlink():
        raise UserInputError(
            f"{dest} is a link: meshes are written to a new folder, never through a link; "
            "choose another folder"
        )
    if dest.exists():
        if not overwrite:
            raise UserInputError(f"{dest} exists; choose a new folder or pass overwrite")
        if not is_mesh_folder(dest):
            raise UserInputError(
                f"{dest} is not a folder of meshes napari-connectome wrote (it holds other "
                "files, or is a file): refusing to replace it even with --overwrite. Move or "
                "delete it yourself, or choose another folder"
            )
    if not dest.parent.is_dir():
        raise UserInputError(f"the folder {dest.parent} does not exist; create it first")


def write_meshes(
    meshes: Sequence[Mesh], dest: str | os.PathLike, fmt: str = "ply", *, overwrite: bool = False
) -> Path:
    """Write meshes into a new folder ``dest``: ``<id>.ply`` / ``<id>.obj`` per segment, or a
    precomputed mesh folder. Written to a temporary sibling and renamed into place; with
    ``overwrite`` an existing folder is replaced only if it holds nothing but meshes
    (:func:`is_mesh_folder`), and only once the new one is complete."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UserInputError(f"unknown mesh format {fmt!r}; use one of {', '.join(FORMATS)}")
    dest = Path(dest)
    check_mesh_dest(dest, overwrite)
    tmp = new_mesh_folder(dest)
    try:
        if fmt == "precomputed":
            write_precomputed(tmp, meshes)
        else:
            writer = write_ply if fmt == "ply" else write_obj
            for m in meshes:
                writer(tmp / f"{m.segment}.{fmt}", m)
        commit_mesh_folder(tmp, dest, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def new_mesh_folder(dest: Path) -> Path:
    """A temporary sibling of ``dest`` to write into, readable by others (mkdtemp's 0700 would
    hide the meshes from other users)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    normal_mode(tmp, folder=True)
    return tmp


def commit_mesh_folder(tmp: Path, dest: Path, overwrite: bool) -> None:
    """Rename the complete folder ``tmp`` to ``dest``; an old ``dest`` (checked again: it may have
    appeared, or changed, meanwhile) is replaced only now."""
    check_mesh_dest(dest, overwrite)
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.replace(dest, old / "meshes")
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
