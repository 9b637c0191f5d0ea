"""What an output may replace, and where it may not go.

Two rules keep a command from destroying what it did not make:

- **Ours only.** ``--overwrite`` replaces a destination only when napari-connectome wrote it: its
  root ``zarr.json`` carries the :data:`MARKER` attribute (written since 0.1.0 by every OME-Zarr
  writer and job), or, for outputs of older versions that lack the marker, the folder holds exactly
  what we write and nothing else (:func:`_legacy_layout`), or it is a job's folder. An empty folder
  holds nothing to lose and may be replaced too.
- **No overlap.** An output never lies inside an input, nor an input inside the output, nor are
  they the same file, after resolving links; an HDF5 ``file.h5:dataset`` input means the file and
  a zarr array inside a store means the whole store.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from napari_connectome.errors import UserInputError

MARKER = "napari_connectome"
# what our writers may put beside the levels of an OME-Zarr: segment's counters, a job's files
# datasource-properties.json: the WebKnossos description napari-connectome writes beside an
# OME-Zarr (viewers/webknossos_properties.py); one without our entry is the user's (is_ours)
# consensus.json: the report of ``consensus A B DEST`` (ffn/consensus_volume.py)
_EXTRAS = frozenset(
    {
        "ffn_counters.json",
        "consensus.json",
        "agglomeration.json",
        "progress.jsonl",
        "_job",
        "datasource-properties.json",
    }
)
_JOB_FILES = frozenset({"zarr.json", "progress.jsonl", "_job"})
# arrays our writers put beside the levels: segment's FFN claim (ffn/segment_volume.py)
_EXTRA_ARRAYS = frozenset({"ffn_claim"})
# what agglomerate puts beside its labels (agglomerate/run.py): the supervoxels (an OME-Zarr
# labels group of ours) and the scores (a group of arrays); agglomeration.json is in _EXTRAS
_SUPERVOXELS, _SCORES = "supervoxels", "scores"
# suffixes that end the on-disk part of a source string (``v.h5:raw``, ``s.zarr/group/array``)
_CONTAINER_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".zarr", ".n5", ".npz")


def ownership_marker(written_by: str) -> dict[str, Any]:
    """The attribute our writers put in an output's root ``zarr.json``: it makes the output ours."""
    from napari_connectome import __version__

    return {MARKER: {"written_by": written_by, "version": __version__}}


def has_marker(zarr_json: bytes | str | None) -> bool:
    """Whether the text of a root ``zarr.json`` carries our marker."""
    meta = _parse_json(zarr_json)
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    marker = attrs.get(MARKER) if isinstance(attrs, dict) else None
    return isinstance(marker, dict) and bool(marker.get("written_by"))


def _parse_json(text: bytes | str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _read_json(path: Path) -> Any:
    try:
        return _parse_json(path.read_bytes())
    except OSError:
        return None


def _zarr_node(path: Path, node_type: str) -> bool:
    """A real folder (no link) whose ``zarr.json`` says it is a zarr ``node_type``."""
    if path.is_symlink() or not path.is_dir():
        return False
    meta = _read_json(path / "zarr.json")
    return isinstance(meta, dict) and meta.get("node_type") == node_type


def _is_array_folder(path: Path) -> bool:
    return _zarr_node(path, "array") and set(os.listdir(path)) <= {"zarr.json", "c"}


def _only_our_files(path: Path, meta: Any) -> bool:
    """Whether a folder whose root ``zarr.json`` carries our marker holds nothing but what our
    writers put there: the levels its multiscales name (each holding only its metadata and
    chunks), ``ffn_counters.json``, the ``ffn_claim`` array, a job's ``progress.jsonl``, ``_job/``
    and ``region_graph/``. A file the user added beside them (notes, a ``labels/`` group)
    makes it theirs too."""
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    ome = attrs.get("ome") if isinstance(attrs, dict) else None
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    levels: set[str] = set()
    for ms in multiscales if isinstance(multiscales, list) else ():
        for d in ms.get("datasets") or () if isinstance(ms, dict) else ():
            if isinstance(d, dict) and isinstance(d.get("path"), str):
                levels.add(d["path"])
    for name in os.listdir(path):
        if name in levels or name in _EXTRA_ARRAYS:
            if not _is_array_folder(path / name):
                return False
        elif name == _SUPERVOXELS:
            sub = path / name
            if sub.is_symlink() or not _only_our_files(sub, _read_json(sub / "zarr.json")):
                return False
        elif name == _SCORES:
            if not _is_array_group(path / name):
                return False
        elif name not in {"zarr.json", *_EXTRAS, "region_graph"}:
            return False
    return True


def _is_array_group(path: Path) -> bool:
    """A zarr group folder holding only arrays (agglomerate's scores columns)."""
    if not _zarr_node(path, "group"):
        return False
    return all(n == "zarr.json" or _is_array_folder(path / n) for n in os.listdir(path))


def _legacy_layout(path: Path) -> bool:
    """An OME-Zarr 0.5 laid out exactly as our writers lay it out, with nothing else inside: one
    multiscale whose levels are ``0``, ``1``, ... (arrays holding only their metadata and chunks),
    plus at most segment's ``ffn_counters.json`` or a job's ``progress.jsonl`` and ``_job/``."""
    meta = _read_json(path / "zarr.json")
    if not (isinstance(meta, dict) and meta.get("zarr_format") == 3):
        return False
    if meta.get("node_type") != "group":
        return False
    attrs = meta.get("attributes")
    ome = attrs.get("ome") if isinstance(attrs, dict) else None
    if not (isinstance(ome, dict) and ome.get("version") == "0.5"):
        return False
    multiscales = ome.get("multiscales")
    if not (isinstance(multiscales, list) and len(multiscales) == 1):
        return False
    datasets = multiscales[0].get("datasets") if isinstance(multiscales[0], dict) else None
    if not isinstance(datasets, list) or not datasets:
        return False
    paths = [d.get("path") if isinstance(d, dict) else None for d in datasets]
    if paths != [str(i) for i in range(len(paths))]:
        return False
    if not set(os.listdir(path)) <= {"zarr.json", *paths, *_EXTRAS}:
        return False
    return all(_is_array_folder(path / p) for p in paths)


def _job_folder(path: Path) -> bool:
    """A job's output folder (its staged spec, perhaps a half-created output), nothing else."""
    if not (path / "_job" / "spec.yaml").is_file():
        return False
    return all(name in _JOB_FILES or name.isdigit() for name in os.listdir(path))


def is_ours(path: str | Path) -> bool:
    """Whether napari-connectome wrote ``path`` (so ``--overwrite`` may replace it); see the module
    docstring for the rule. A file or a link is never ours: we write folders."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        if not any(os.scandir(path)):
            return True  # an empty folder: nothing to lose
        text = (path / "zarr.json").read_bytes() if (path / "zarr.json").is_file() else None
        props = path / "datasource-properties.json"
        if props.exists() or props.is_symlink():
            meta = None if props.is_symlink() else _read_json(props)
            if not (isinstance(meta, dict) and "napari_connectome" in meta):
                return False
        if has_marker(text):
            return _only_our_files(path, _parse_json(text))
        return _legacy_layout(path) or _job_folder(path)
    except OSError:
        return False


def refuse_unless_ours(dest: str | Path) -> None:
    """Raise unless the existing ``dest`` may be replaced (it is ours, see :func:`is_ours`)."""
    dest = Path(dest)
    if not (dest.exists() or dest.is_symlink()) or is_ours(dest):
        return
    if dest.is_symlink():
        what = "is a link"
    elif not dest.is_dir():
        what = "is a file napari-connectome did not write"
    elif (dest / "zarr.json").is_file() and has_marker(_read_bytes(dest / "zarr.json")):
        what = (
            "is an output of napari-connectome into which other files were put (only the "
            "levels, ffn_counters.json, ffn_claim/, progress.jsonl, _job/, region_graph/ "
            "and agglomerate's supervoxels/, scores/ and agglomeration.json are ours)"
        )
    else:
        what = "is a folder napari-connectome did not write (no napari_connectome marker in its "
        what += "zarr.json, and not laid out exactly like our OME-Zarr outputs)"
    raise UserInputError(
        f"{dest} {what}: refusing to replace it even with --overwrite. Move or delete it "
        "yourself, or choose another output."
    )


def source_location(source: str | os.PathLike) -> Path:
    """The file or folder on disk that a SOURCE string reads, links resolved: an HDF5 file for
    ``file.h5:dataset``, the store's root for an array inside a zarr or N5 store."""
    from napari_connectome.volumes.sources import parse_source

    text = os.fspath(source)
    try:
        path = parse_source(text).path
    except UserInputError:  # not a volume we read (npz, npy, a model folder) or not there yet
        path = Path(text.removeprefix("file://")).expanduser()
        if not path.exists() and ":" in text:
            head = text.rpartition(":")[0]
            if head and Path(head).expanduser().exists():
                path = Path(head).expanduser()
    return Path(os.path.realpath(path))


def _overlap(out: PurePosixPath | Path, loc: PurePosixPath | Path) -> str | None:
    if out == loc:
        return "is the input {src} itself"
    if loc in out.parents:
        return "lies inside the input {src}"
    if out in loc.parents:
        return "contains the input {src}"
    return None


def _raise_overlap(dest: object, why: str, src: str) -> None:
    raise UserInputError(
        f"the output {dest} {why.format(src=src)}: writing there could destroy the input. "
        "Choose an output outside every input (and no input inside the output)."
    )


def refuse_overlap(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise if the local ``output`` is, lies inside or contains one of ``inputs`` (SOURCE strings;
    ``None`` entries are skipped), comparing real paths (links resolved). An output written like a
    source, ``file.h5:dataset`` naming an existing file, is compared as that file."""
    text = os.fspath(output)
    out = Path(os.path.realpath(Path(text).expanduser()))
    head = text.rpartition(":")[0]
    if not out.exists() and head and Path(head).expanduser().is_file():
        out = Path(os.path.realpath(Path(head).expanduser()))
    for src in inputs:
        if src is None or not os.fspath(src):
            continue
        loc = source_location(src)
        why = _overlap(out, loc)
        if why is None and out.exists() and loc.exists() and os.path.samefile(out, loc):
            why = "is the input {src} itself"  # e.g. the same folder reached through a bind mount
        if why:
            _raise_overlap(output, why, os.fspath(src))


def posix_location(source: str) -> PurePosixPath:
    """The on-disk part of a SOURCE string on another machine, where nothing is looked at:
    normalised and cut after the first component ending in a container suffix (``v.h5:raw`` ->
    ``v.h5``, ``s.zarr/group/array`` -> ``s.zarr``)."""
    text = source.removeprefix("precomputed://").removeprefix("file://")
    parts = PurePosixPath(posixpath.normpath(text)).parts
    for i, part in enumerate(parts):
        low = part.lower()
        for suffix in _CONTAINER_SUFFIXES:
            cut = low.find(suffix + ":")
            if cut >= 0:
                return PurePosixPath(*parts[:i], part[: cut + len(suffix)])
            if low.endswith(suffix):
                return PurePosixPath(*parts[: i + 1])
    return PurePosixPath(*parts)


def refuse_overlap_posix(
    output: str,
    inputs: Iterable[str | None],
    resolve: Callable[[list[str]], list[str]] | None = None,
) -> None:
    """:func:`refuse_overlap` for paths on a cluster. ``resolve`` (e.g. ``realpath -m`` run
    there) maps the output and each input's :func:`posix_location` to real paths; without it the
    normalised paths are compared as they are written."""
    sources = [s for s in inputs if s]
    paths = [posixpath.normpath(output), *(str(posix_location(s)) for s in sources)]
    if resolve is not None:
        paths = resolve(paths)
    out, *locs = (PurePosixPath(posixpath.normpath(p)) for p in paths)
    for src, loc in zip(sources, locs):
        why = _overlap(out, loc)
        if why:
            _raise_overlap(output, why, src)
