"""Open our volumes in neuroglancer: serve them on 127.0.0.1 and make a link whose state has the
right layer types, voxel size, selected segments and a proofreading project's merges.

How a volume reaches the browser:

* zarr v3 (our OME-Zarr 0.5), zarr v2, N5 and precomputed folders are served as files by
  :class:`~.file_server.FileServer` and read by neuroglancer's own data sources (``zarr3://``,
  ``zarr2://``, ``n5://``, ``precomputed://``); neuroglancer reads OME-Zarr 0.4/0.5 multiscales
  (scales, translations) itself, so every pyramid level is used. Only the chosen volumes' folders
  are served, nothing above or beside them.
* Anything else (HDF5, TIFF, WebKnossos layers, ``ssh://`` volumes, precomputed with ``.gz``
  chunk names) is served chunk by chunk from our lazy reader through the ``neuroglancer`` Python
  package's ``LocalVolume`` (which needs that package).

The viewer itself: with the ``neuroglancer`` package installed (``pip install
napari-connectome[neuroglancer]``), its bundled client is served by its own server on 127.0.0.1
and the link is that viewer (works offline; the state lives in this process). Without it, the
link opens a public neuroglancer client with the state in the URL, reading the data from this
machine's loopback address.
"""

from __future__ import annotations

import json
import os
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from napari_connectome.errors import DataWarning, UserInputError
from napari_connectome.viewers.file_server import LOOPBACK, FileServer
from napari_connectome.viewers.neuroglancer_state import (
    LayerSpec,
    equivalences_from_table,
    viewer_state,
)

PUBLIC_CLIENT = "https://neuroglancer-demo.appspot.com/"
_SCHEMES = {
    "zarr-v3": "zarr3",
    "ome-zarr-0.5": "zarr3",
    "zarr-v2": "zarr2",
    "ome-zarr-0.4": "zarr2",
}
_COMPRESSED_CHUNK = re.compile(r".*\.(gz|br|zstd|zst)$")


@dataclass
class ServedVolume:
    """A volume as the link shows it."""

    volume: Any  # napari_connectome.volumes.Volume
    layer: LayerSpec
    folder: Path | None = None  # the folder served as files; None: served from our reader


@dataclass
class NeuroglancerLink:
    """Served volumes plus the viewer state; :meth:`start` serves them, :attr:`url` is the link,
    :meth:`stop` ends both servers."""

    volumes: list[ServedVolume]
    state: dict[str, Any]
    files: FileServer
    client: str = "auto"  # "auto": the neuroglancer package if installed; "public"; or a URL
    url: str = ""
    viewer: Any = field(default=None, repr=False)

    def start(self) -> NeuroglancerLink:
        """Start serving (the file server was started when the sources were resolved)."""
        if self.viewer is not None or self.url:
            return self
        local = [sv for sv in self.volumes if sv.folder is None]
        use_package = self.client == "auto" and _has_neuroglancer()
        if local and not use_package:
            names = ", ".join(sv.volume.source for sv in local)
            raise UserInputError(
                f"{names}: neuroglancer cannot read this format over HTTP; it is served from "
                "napari-connectome's reader through the neuroglancer Python package: pip install "
                "'napari-connectome[neuroglancer]' (or convert it to OME-Zarr first: "
                "napari-connectome convert)"
            )
        if use_package:
            self.viewer, self.url = _package_viewer(self.state, local)
        else:
            base = PUBLIC_CLIENT if self.client in ("auto", "public") else self.client
            self.url = f"{base}#!{quote(json.dumps(self.state, separators=(',', ':')), safe='')}"
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both servers. neuroglancer's stop joins its server thread after every open
        connection closed (a browser tab holds an event stream), so it runs in a daemon thread
        waited for at most ``timeout`` seconds: Ctrl-C never hangs on a client that lingers."""
        if self.viewer is not None:
            import neuroglancer

            stopper = threading.Thread(
                target=neuroglancer.stop, name="neuroglancer-stop", daemon=True
            )
            stopper.start()
            stopper.join(timeout)
            self.viewer = None
        self.files.stop()

    def __enter__(self) -> NeuroglancerLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _has_neuroglancer() -> bool:
    try:
        import neuroglancer  # noqa: F401
    except ImportError:
        return False
    return True


# ---- which volumes ---------------------------------------------------------------------------
def _native_folder(volume: Any) -> tuple[str, Path] | None:
    """(neuroglancer scheme, folder to serve) for a volume neuroglancer reads over HTTP itself."""
    src = str(volume.source)
    if src.startswith("ssh://"):
        return None
    fmt = str(volume.format)
    if fmt.startswith("precomputed"):
        src = src.removeprefix("precomputed://").removeprefix("file://")
    folder = Path(src)
    if not folder.is_dir():
        return None
    if fmt in _SCHEMES:
        return _SCHEMES[fmt], folder
    if fmt == "n5":
        return "n5", folder
    if fmt.startswith("precomputed") and not _has_compressed_chunk_names(folder):
        return "precomputed", folder
    return None


def _has_compressed_chunk_names(folder: Path, sample: int = 64) -> bool:
    """cloud-volume's ``CHUNK.gz`` files: neuroglancer asks for ``CHUNK`` and would read holes."""
    for scale in folder.iterdir():
        if not scale.is_dir():
            continue
        with os.scandir(scale) as it:
            for k, entry in enumerate(it):
                if k >= sample:
                    break
                if _COMPRESSED_CHUNK.fullmatch(entry.name):
                    return True
    return False


def _unique_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "layer"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def open_project_table(project: str | os.PathLike) -> tuple[list[str], Any]:
    """(fragments source, image source or nothing) and the current fragment table of a
    proofreading project, read-only."""
    from napari_connectome.proofread import ProofreadSession
    from napari_connectome.proofread import project as proj
    from napari_connectome.proofread.reference import resolve_source

    path = Path(project)
    with ProofreadSession.open(path, read_only=True) as session:
        meta, table = session.meta, session.table.copy()
        if session.format_version == 1:
            sources = [str(path / proj.FRAGMENTS)]
            if meta.get("has_image"):
                sources.append(str(path / proj.IMAGE))
        else:
            sources = [resolve_source(path, meta["fragments"])]
            if meta.get("image"):
                sources.append(resolve_source(path, meta["image"]))
        if session.overlay is not None and len(session.overlay):
            warnings.warn(
                f"{path}: watershed splits patch voxels napari-connectome keeps in the project; "
                "neuroglancer shows the source fragments without them (export the project to "
                "see the splits there)",
                DataWarning,
                stacklevel=2,
            )
    return sources, table


def make_link(
    sources: Sequence[str],
    *,
    project: str | os.PathLike | None = None,
    segments: Sequence[int] = (),
    port: int = 0,
    client: str = "auto",
    names: Sequence[str] | None = None,
    discover: bool = True,
    meshes: str | os.PathLike | None = None,
) -> NeuroglancerLink:
    """Open every layer of ``sources`` (and a project's fragments and image), serve the folders
    neuroglancer reads itself, and build the viewer state. Call ``start()`` (or use ``with``).
    ``discover=False``: each source is one volume (a napari layer's), named by ``names``.
    ``meshes``: a precomputed mesh folder (``export-meshes``) shown with the first segmentation."""
    from napari_connectome.volumes import discover_volumes, open_volume

    table = None
    if names is not None and len(names) != len(sources):
        raise ValueError("give one name per source")
    texts: list[tuple[str, str | None]] = [
        (str(t), None if names is None else str(names[k])) for k, t in enumerate(sources)
    ]
    project_fragments = None
    if project is not None:
        project_sources, table = open_project_table(project)
        project_fragments = project_sources[0]
        have = {os.path.realpath(t) for t, _ in texts if Path(t).exists()}
        texts = [(t, None) for t in project_sources if os.path.realpath(t) not in have] + texts
    if not texts:
        raise UserInputError("nothing to show: give a SOURCE or --project")
    volumes = []
    for text, name in texts:
        found = discover_volumes(text) if discover else [open_volume(text)]
        if name is not None and len(found) == 1:
            found[0].name = name
        volumes.extend(found)
    if project_fragments is not None:
        pf = os.path.realpath(project_fragments)
        for v in volumes:
            if os.path.realpath(str(v.source)) == pf or str(v.source) == project_fragments:
                v.is_labels = True  # the project's fragments are a segmentation whatever the file
    wanted = [int(s) for s in segments]
    mesh_folder = _mesh_folder(meshes) if meshes is not None else None
    files = FileServer(LOOPBACK, port).start()
    try:
        served = _layers(volumes, files, wanted, table, project_fragments)
        if mesh_folder is not None:
            seg = next((sv for sv in served if sv.layer.segmentation), None)
            if seg is None:
                raise UserInputError("--meshes needs a segmentation among the sources")
            seg.layer.meshes.append(f"precomputed://{files.add_folder('meshes', mesh_folder)}")
    except BaseException:
        files.stop()
        raise
    ref = next((sv.volume for sv in served if sv.layer.segmentation), served[0].volume)
    spatial = [i for i, a in enumerate(ref.axes) if a in "zyx"]
    state = viewer_state(
        [sv.layer for sv in served],
        [ref.voxel_size_nm[i] for i in spatial],
        [ref.shape[i] for i in spatial],
    )
    return NeuroglancerLink(served, state, files, client)


def _layers(
    volumes: list[Any],
    files: FileServer,
    segments: list[int],
    table: Any,
    project_fragments: str | None,
) -> list[ServedVolume]:
    taken: set[str] = set()
    served = []
    for k, v in enumerate(volumes):
        name = _unique_name(v.name or Path(str(v.source)).name, taken)
        native = _native_folder(v)
        is_project = project_fragments is not None and (
            os.path.realpath(str(v.source)) == os.path.realpath(project_fragments)
        )
        layer = LayerSpec(name, None, bool(v.is_labels))
        if layer.segmentation:
            layer.segments = list(segments)
            if is_project and table is not None:
                layer.equivalences = equivalences_from_table(
                    table.frag_ids, table.seg, only_segments=segments
                )
                layer.segments = _as_fragments(table, segments)
        if native is not None:
            scheme, folder = native
            layer.source = f"{scheme}://{files.add_folder(f'{k}-{name}', folder)}"
            served.append(ServedVolume(v, layer, folder))
        else:
            layer.source = f"python://{name}"  # replaced by the package's own URL at start
            served.append(ServedVolume(v, layer, None))
    return served


def _mesh_folder(path: str | os.PathLike) -> Path:
    """A precomputed mesh folder neuroglancer reads (legacy or multi-resolution ``info``)."""
    folder = Path(path)
    try:
        kind = json.loads((folder / "info").read_text()).get("@type")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind not in ("neuroglancer_legacy_mesh", "neuroglancer_multilod_draco"):
        raise UserInputError(
            f"{folder} is not a neuroglancer precomputed mesh folder (no mesh 'info'); make one "
            "with napari-connectome export-meshes"
        )
    return folder


def _as_fragments(table: Any, segments: Sequence[int]) -> list[int]:
    """Project segment ids -> the smallest fragment of each (how neuroglancer names the set)."""
    out = []
    for s in segments:
        if not table.exists(int(s)):
            raise UserInputError(f"segment {s} does not exist in the project")
        rows = table.rows_of(int(s))
        if len(rows):
            out.append(int(np.asarray(table.frag_ids)[rows].min()))
    return out


# ---- the neuroglancer package's viewer --------------------------------------------------------
class _DaskChunks:
    """A lazy volume as LocalVolume reads it: slicing returns a numpy array."""

    def __init__(self, data: Any) -> None:
        self._data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        block = self._data[key]
        return np.asarray(block.compute() if hasattr(block, "compute") else block)


def _local_volume(sv: ServedVolume) -> Any:
    import neuroglancer

    v = sv.volume
    data = v.data
    axes, sizes, offsets = v.axes, list(v.voxel_size_nm), list(v.offset_nm)
    if "c" in axes and sv.layer.segmentation:
        raise UserInputError(f"{v.source}: a segmentation with channels cannot be shown")
    dims = neuroglancer.CoordinateSpace(
        names=[a if a in "zyx" else f"{a}'" for a in axes],
        units=["nm" if a in "zyx" else "" for a in axes],
        scales=[s if a in "zyx" else 1 for a, s in zip(axes, sizes)],
    )
    offset = [round(o / s) if a in "zyx" else 0 for a, o, s in zip(axes, offsets, sizes)]
    dtype = np.dtype(data.dtype)
    if sv.layer.segmentation and dtype.kind in "iu" and dtype.itemsize < 8:
        data = data.astype(np.uint32 if dtype.itemsize <= 4 else np.uint64)
    return neuroglancer.LocalVolume(
        _DaskChunks(data),
        dimensions=dims,
        voxel_offset=offset,
        volume_type="segmentation" if sv.layer.segmentation else "image",
    )


def _package_viewer(state: dict[str, Any], local: list[ServedVolume]) -> tuple[Any, str]:
    """A viewer of the neuroglancer package, its client served on 127.0.0.1; the layers we read
    ourselves are added as LocalVolumes."""
    import neuroglancer

    neuroglancer.set_server_bind_address(LOOPBACK)
    viewer = neuroglancer.Viewer()
    by_name = {sv.layer.name: sv for sv in local}
    native = dict(state, layers=[la for la in state["layers"] if la["name"] not in by_name])
    viewer.set_state(neuroglancer.ViewerState(native))
    if by_name:
        with viewer.txn() as s:
            for layer in state["layers"]:
                sv = by_name.get(layer["name"])
                if sv is None:
                    continue
                kind = (
                    neuroglancer.SegmentationLayer
                    if layer["type"] == "segmentation"
                    else neuroglancer.ImageLayer
                )
                source = [_local_volume(sv), *sv.layer.meshes]
                s.layers[layer["name"]] = kind(source=source, **_layer_options(layer))
    return viewer, viewer.get_viewer_url()


def _layer_options(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "segments" in spec:
        out["segments"] = [int(x) for x in spec["segments"]]
    if "equivalences" in spec:
        out["equivalences"] = [[int(x) for x in g] for g in spec["equivalences"]]
    return out
