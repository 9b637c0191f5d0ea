"""The proofreading tool's 3D view: the selected segments as one Surface layer of meshes.

In 3D napari would read and render a labels layer as a whole volume, so the tool hides its labels
layers there and shows this layer instead. Meshes are built in a worker thread from what
:func:`~napari_connectome.proofread.meshes.mesh_request` snapshots on the Qt thread (so edits made
meanwhile cannot race the build) and come from the shared mesh cache when the segment's fragments
have not changed. Each update bumps a generation number: a worker that finishes after a newer
request was made is ignored, so the layer always shows the latest selection and table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_connectome.meshing import Mesh
from napari_connectome.proofread.meshes import build_mesh, mesh_request

LAYER_NAME = "segment meshes"


def labels_views(layer: Any) -> list[Any]:
    """The array views behind a (possibly multiscale) labels layer."""
    return list(layer.data) if layer.multiscale else [layer.data]


class SegmentMeshes:
    """Keeps the "segment meshes" layer of a :class:`ProofreadTool` in step with its selection."""

    def __init__(self, tool: Any) -> None:
        self.tool = tool
        self.layer: Any = None
        self.generation = 0
        self.pending = 0  # workers still running (tests and scripts wait for 0)
        self.meshes: list[Mesh] = []  # what the layer shows
        self.last_error = ""
        tool.changed.connect(self._on_changed)

    @property
    def three_d(self) -> bool:
        return self.tool.viewer.dims.ndisplay == 3

    def _on_changed(self, what: str) -> None:
        if what in ("selection", "edit") and self.three_d:
            self.update()

    def update(self) -> None:
        """Show the selected segments' meshes (3D) or hide the layer (2D)."""
        if not self.three_d:
            self.generation += 1  # a worker still running must not show its result in 2D
            if self.layer is not None:
                self.layer.visible = False
            return
        session = self.tool.session
        segs = [s for s in self.tool.selected if session.table.exists(s)]
        requests = [mesh_request(session, s) for s in segs]
        self.generation += 1
        gen = self.generation
        if not requests:
            self._show(gen, [])
            return
        from napari.qt.threading import create_worker

        worker = create_worker(lambda: [build_mesh(r) for r in requests], _start_thread=False)
        worker.returned.connect(lambda meshes: self._show(gen, meshes))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self.pending += 1
        worker.start()

    def _finished(self) -> None:
        self.pending -= 1

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"could not mesh the selected segments: {exc}"
        self.tool._say(self.last_error, error=True)

    def _show(self, generation: int, meshes: list[Mesh]) -> None:
        if generation != self.generation:
            return  # a newer selection or edit is being meshed
        self.meshes = [m for m in meshes if len(m.faces)]
        if not self.meshes:
            if self.layer is not None:
                self.layer.visible = False
            return
        verts, faces, colors = self._concatenate(self.meshes)
        viewer = self.tool.viewer
        if self.layer is None or self.layer not in viewer.layers:
            active = viewer.layers.selection.active
            self.layer = viewer.add_surface(
                (verts, faces), name=LAYER_NAME, vertex_colors=colors, shading="smooth",
                units="nm",
            )  # fmt: skip
            viewer.layers.selection.active = active  # the tool's keys live on its labels layer
        else:
            self.layer.vertex_colors = None  # keep colours and vertices the same length
            self.layer.data = (verts, faces)
            self.layer.vertex_colors = colors
            self.layer.visible = True

    def _concatenate(self, meshes: list[Mesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One vertex and face array for all meshes, each vertex coloured like its segment in the
        labels layer."""
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
        verts = np.concatenate([m.vertices for m in meshes])
        faces = np.concatenate([m.faces.astype(np.int64) + o for m, o in zip(meshes, offsets)])
        colors = np.concatenate(
            [np.tile(self._color(m.segment), (len(m.vertices), 1)) for m in meshes]
        )
        return verts, faces, colors.astype(np.float32)

    def _color(self, segment: int) -> np.ndarray:
        try:
            rgba = np.asarray(self.tool.layer.colormap.map(segment), float).reshape(-1)[:4]
        except (KeyError, IndexError, ValueError, TypeError):  # no colour for this id: neutral grey
            rgba = np.array([0.8, 0.8, 0.8, 1.0])
        rgba[3] = 1.0
        return rgba

    def close(self) -> None:
        self.generation += 1
        if self.layer is not None and self.layer in self.tool.viewer.layers:
            self.tool.viewer.layers.remove(self.layer)
        self.layer = None
