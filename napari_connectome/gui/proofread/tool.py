"""The proofreading tool: layers, gestures and selection state for one open project in one viewer.

Shaped like a neuroglancer layer tool: it owns its input map (mouse gestures and keys bound on its
own segments layer, so they act only while that layer is active) and its preview state (split
seeds, split preview), and every action goes through the core session, so the GUI never edits
anything the log did not record first. Refused edits become a message and a notification, never
a traceback.

Feedback has one source: :meth:`ProofreadTool._say` sets ``last_message`` and emits ``message``;
the panel's label, the status bar (the help field of the segments layer, which napari's hover
readout leaves alone) and ``viewer.status`` all show that text, composed after the edit was
applied (the session's listeners tell the tool, then the numbers are read back from the table).
napari's brush, fill and eraser are off on these layers (no_paint.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from psygnal import Signal

from napari_connectome.errors import UserInputError
from napari_connectome.gui._camera import camera
from napari_connectome.gui._layers import spatial_axis_labels
from napari_connectome.gui.proofread.meshes_layer import SegmentMeshes
from napari_connectome.gui.proofread.no_paint import keep_read_only
from napari_connectome.gui.proofread.settings import DEFAULT_KEYS, MOUSE_GESTURES
from napari_connectome.gui.proofread.views import SegmentView
from napari_connectome.proofread import ProofreadSession, SplitPlan

SEED_COLORS = {"a": "#00ffff", "b": "#ff00ff"}
MULTISCALE_MIN_EDGE = 2048  # voxels along y or x above which the layers are pyramids
SEGMENTS_OPACITY = 0.35  # the membranes of the EM stay readable through the segment colours
JUMP_WINDOW = 32  # voxels around the target read to find a voxel of the segment to jump to


class ProofreadTool:
    """Attach a :class:`ProofreadSession` to a napari viewer."""

    changed = Signal(str)  # "selection", "edit", "seeds", "preview"
    message = Signal(str)  # what the last action did (or why it was refused), after it was applied

    def __init__(
        self,
        viewer: Any,
        session: ProofreadSession,
        *,
        keys: dict[str, str] | None = None,
        multiscale: bool | None = None,
    ) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        self.viewer = viewer
        self.session = session
        self.keys = {**DEFAULT_KEYS, **(keys or {})}
        self.active: int | None = None
        self.selected: list[int] = []
        self.seeds: dict[str, list[tuple[int, int, int]]] = {"a": [], "b": []}
        self.plan: SplitPlan | None = None
        self.request_jump: Callable[[], None] | None = None
        self.last_message = ""
        self.busy = ""  # what runs in the background and needs the table to stay put ("" = none)
        scale = session.voxel_size_nm
        units = "nm"  # as our reader and samples label images, so napari sees one world unit
        world = {"scale": scale, "units": units, "axis_labels": spatial_axis_labels(None, 3)}
        images = getattr(session, "image_levels", None) or (
            [session.image] if session.image is not None else []
        )
        # a pyramid only where a full-resolution plane is too big to draw at once: napari's
        # multiscale layers load just the tiles on screen (small projects stay single-scale)
        big = max(session.shape[1:]) > MULTISCALE_MIN_EDGE if multiscale is None else multiscale
        images = images if big else images[:1]
        if images:
            self.image_layer = viewer.add_image(
                images if len(images) > 1 else images[0], multiscale=len(images) > 1,
                name="EM", **world,
            )  # fmt: skip
        else:
            self.image_layer = None
        levels = range(len(session.fragment_levels) if big else 1)
        segs = [SegmentView(session, level=i) for i in levels]
        for view in segs:  # 3D shows meshes, so it never reads these volumes (views.py)
            view.blank_volumes = self._three_d
        self.layer = viewer.add_labels(
            segs if len(segs) > 1 else segs[0], multiscale=len(segs) > 1, name="segments",
            opacity=SEGMENTS_OPACITY, **world,
        )  # fmt: skip
        keep = [SegmentView(session, keep=lambda: np.array(self.selected, np.uint64), level=i)
                for i in levels]  # fmt: skip
        for view in keep:
            view.blank_volumes = self._three_d
        self.selection_layer = viewer.add_labels(
            keep if len(keep) > 1 else keep[0], multiscale=len(keep) > 1,
            name="selected segments", opacity=0.9, **world,
            blending="translucent_no_depth",
        )  # fmt: skip
        self.selection_layer.contour = 2
        sides = {0: "transparent", 1: SEED_COLORS["a"], 2: SEED_COLORS["b"], None: "transparent"}
        self.preview_layer = viewer.add_labels(
            np.zeros((1, 1, 1), np.uint8), name="split preview", **world, opacity=0.6,
            visible=False, colormap=DirectLabelColormap(color_dict=sides),
        )  # fmt: skip
        self.seed_layer = viewer.add_points(
            np.zeros((0, 3)), name="split seeds", **world, size=6,
            face_color=SEED_COLORS["a"], ndim=3,
        )  # fmt: skip
        for lyr in (self.layer, self.selection_layer, self.preview_layer, self.seed_layer):
            keep_read_only(viewer, lyr)  # napari's brush would bypass the log (no_paint.py)
        self.layer.mode = "pan_zoom"
        self.layer.mouse_drag_callbacks.append(self._on_mouse)
        self._bind_keys()
        # napari rewrites a layer's help (its status-bar field) with its own tool shortcuts on
        # mode changes; on this layer that field holds the tool's last message
        self.layer.events.help.connect(self._keep_help)
        session.listeners.append(self._on_session_edit)  # after every applied edit, undo, redo
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        viewer.layers.selection.active = self.layer
        self.meshes = SegmentMeshes(self)  # 3D: the selection as meshes (meshes_layer.py)
        self._visible_2d: dict[str, bool] = {}
        if viewer.dims.ndisplay == 3:
            self._on_ndisplay()

    # ---- input map
    # ---------------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        actions = {
            "split": self.split_key,
            "cancel": self.cancel_split,
            "delete": self.delete_selected,
            "lock": self.toggle_lock,
            "done": self.toggle_done,
            "undo": self.undo,
            "redo": self.redo,
            "jump": self.jump_key,
        }
        for name, fn in actions.items():
            self.layer.bind_key(self.keys[name], lambda _layer, fn=fn: fn(), overwrite=True)

    def _gesture_for(self, modifiers: Sequence[str]) -> str | None:
        held = {getattr(m, "name", str(m)) for m in modifiers} - {"Meta"}  # vispy Key or str
        for name in MOUSE_GESTURES:
            want = {m for m in self.keys[name].split("-") if m}
            if want == held:
                return name
        return None

    def _on_mouse(self, layer: Any, event: Any):
        if getattr(event, "button", 1) not in (1, None):
            return
        gesture = self._gesture_for(event.modifiers)
        voxel = self.pick(event.position, event.view_direction, event.dims_displayed)
        start = np.asarray(event.pos, float)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or np.linalg.norm(np.asarray(event.pos, float) - start) > 3
            yield
        if moved or gesture is None:
            return  # a drag pans / rotates the camera; it is not a click
        self.click(voxel, gesture)

    def pick(self, position: Sequence[float], view_direction=None, dims_displayed=None):
        """The voxel (z, y, x) under the cursor: in 3D the first segment voxel along the view
        ray."""
        if self.viewer.dims.ndisplay == 2 or view_direction is None:
            vox = np.round(self.layer.world_to_data(position)).astype(int)
            return tuple(int(v) for v in vox)
        start, end = self.layer.get_ray_intersections(
            position, view_direction, list(dims_displayed), world=True
        )
        if start is None or end is None:
            return None
        full = np.round(self.layer.world_to_data(position)).astype(float)
        n = int(np.ceil(np.linalg.norm(np.asarray(end) - np.asarray(start)))) + 1
        pts = np.linspace(start, end, n)
        shape = np.array(self.session.shape)
        for p in pts:
            q = full.copy()
            q[list(dims_displayed)] = p
            v = np.round(q).astype(int)
            if np.any(v < 0) or np.any(v >= shape):
                continue
            if self.session.table.segment_of_fragment(int(self.session.fragments[tuple(v)])):
                return tuple(int(x) for x in v)
        return None

    # ---- feedback
    # ----------------------------------------------------------------------------------------
    def _say(self, message: str, *, error: bool = False) -> None:
        """The one place feedback is set: the panel (``message``), the status bar, and a
        notification as well when an edit was refused."""
        self.last_message = message
        self.viewer.status = message  # what napari's hover readout replaces on the next move...
        self.layer.help = message  # ...while the active layer's help stays in the status bar
        self.viewer.help = message
        self.message.emit(message)
        if error:
            from napari.utils.notifications import show_warning

            show_warning(message)

    def _keep_help(self, event: Any = None) -> None:
        if self.layer.help != self.last_message:
            self.layer.help = self.last_message

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except UserInputError as exc:
            self._say(str(exc), error=True)
            return None

    def refresh(self, what: str = "edit") -> None:
        self.layer.refresh()
        self.selection_layer.refresh()
        self.changed.emit(what)

    def _on_session_edit(self, what: str, op: Any) -> None:
        """The session applied an edit, an undo or a redo (ours or a script's): redraw, and let
        the panel reload its table, before any message about it is composed."""
        self.refresh("edit")

    def _selection_changed(self) -> None:
        self.selection_layer.refresh()
        self.changed.emit("selection")

    def summary(self, segment: int | None) -> str:
        """'segment 7: 1,234 voxels locked' as the table has it now ('' for none or a gone one)."""
        if segment is None or not self.session.table.exists(int(segment)):
            return ""
        info = self.session.segment_info(int(segment))
        flags = " locked" if info.locked else ""
        flags += " done" if info.done else ""
        return f"segment {segment}: {info.size:,} voxels{flags}"

    # ---- gestures
    # ----------------------------------------------------------------------------------------
    def click(self, voxel: Sequence[int] | None, gesture: str = "select") -> None:
        """What a left click does at a voxel, given the gesture its modifiers select."""

        def run() -> None:
            if voxel is None:
                self._say("that is background; click on a segment", error=True)
                return
            seg = self.session.segment_at(voxel)
            if gesture == "select":
                self.select(seg)
            elif gesture == "merge":
                if self.active is None:
                    self.select(seg)
                    self._say(f"segment {seg} selected; shift+click another segment to merge it in")
                    return
                self._need_idle()
                self.session.merge([self.active, seg])
                self.selected = [self.active]
                self._selection_changed()
                self._say(f"merged {seg} into {self.active}; {self.summary(self.active)}")
            else:
                self.add_seed(voxel, "a" if gesture == "seed_a" else "b", seg)

        self._guard(run)

    def select(self, segment: int | None) -> None:
        self.active = segment
        self.selected = [] if segment is None else [int(segment)]
        self.selection_layer.refresh()
        self.layer.selected_label = int(segment or 0)
        self.changed.emit("selection")
        if segment is not None:
            self._say(self.summary(segment))

    def add_seed(self, voxel: Sequence[int], side: str, segment: int) -> None:
        if self.active is None:
            self.select(segment)
        if segment != self.active:
            raise UserInputError(
                f"this seed is on segment {segment}, but segment {self.active} is being split; "
                "seeds must lie on the selected segment"
            )
        self._clear_preview()
        self.seeds[side].append(tuple(int(v) for v in voxel))
        self._show_seeds()
        n_a, n_b = len(self.seeds["a"]), len(self.seeds["b"])
        self._say(f"split seeds on {self.active}: {n_a} side A, {n_b} side B; Enter to preview")
        self.changed.emit("seeds")

    def _show_seeds(self) -> None:
        pts = self.seeds["a"] + self.seeds["b"]
        colors = [SEED_COLORS["a"]] * len(self.seeds["a"]) + [SEED_COLORS["b"]] * len(
            self.seeds["b"]
        )
        self.seed_layer.data = np.array(pts, float).reshape(-1, 3)
        if pts:
            self.seed_layer.face_color = colors
        self.viewer.layers.selection.active = self.layer

    def _clear_preview(self) -> None:
        self.plan = None
        self.preview_layer.visible = False

    def split_key(self) -> None:
        """Enter: preview the split of the selected segment; Enter again commits it."""

        def run() -> None:
            if self.plan is None:
                if self.active is None:
                    raise UserInputError("select a segment and ctrl+click split seeds first")
                plan = self.session.preview_split(self.active, self.seeds["a"], self.seeds["b"])
                self.plan = plan
                self.preview_layer.data = self.session.preview_labels(plan)
                self.preview_layer.translate = np.asarray(plan.bbox_lo) * np.asarray(
                    self.session.voxel_size_nm
                )
                self.preview_layer.visible = True
                self.viewer.layers.selection.active = self.layer
                self._say(
                    f"split preview ({plan.method}): {plan.voxels_a:,} voxels keep {plan.segment}, "
                    f"{plan.voxels_b:,} become {plan.new_segment}; Enter commits, Esc cancels"
                )
                self.changed.emit("preview")
            else:
                plan = self.plan
                self._need_idle()
                self.session.commit_split(plan)
                self.cancel_split(quiet=True)
                self.selected = [plan.segment, plan.new_segment]
                self._selection_changed()
                self._say(
                    f"split {plan.segment}: {self.summary(plan.segment)}; new "
                    f"{self.summary(plan.new_segment)}"
                )

        self._guard(run)

    def cancel_split(self, quiet: bool = False) -> None:
        self.seeds = {"a": [], "b": []}
        self._clear_preview()
        self._show_seeds()
        if not quiet:
            self._say("split cancelled")
        self.changed.emit("seeds")

    def _need_idle(self) -> None:
        if self.busy:
            raise UserInputError(
                f"{self.busy} is running and reads the segmentation as it is: edits wait until it "
                "finishes (or press Cancel in the panel)"
            )

    def _need_active(self) -> int:
        self._need_idle()
        if self.active is None:
            raise UserInputError("select a segment first (click on it)")
        return self.active

    def delete_selected(self) -> None:
        def run() -> None:
            seg = self._need_active()
            self.session.delete(seg)
            self.select(None)
            self._say(f"deleted segment {seg}")

        self._guard(run)

    def toggle_lock(self) -> None:
        def run() -> None:
            seg = self._need_active()
            self.session.toggle_lock(seg)
            state = "locked" if self.session.segment_info(seg).locked else "unlocked"
            self._say(f"segment {seg} {state}")

        self._guard(run)

    def toggle_done(self) -> None:
        def run() -> None:
            seg = self._need_active()
            self.session.mark_done(seg, not self.session.segment_info(seg).done)
            state = "done" if self.session.segment_info(seg).done else "not done"
            self._say(f"segment {seg} marked {state}")

        self._guard(run)

    def undo(self) -> None:
        def run() -> None:
            self._need_idle()
            op = self.session.undo()
            self._after_history()
            self._say(self._history_message("undone", op))

        self._guard(run)

    def redo(self) -> None:
        def run() -> None:
            self._need_idle()
            op = self.session.redo()
            self._after_history()
            self._say(self._history_message("redone", op))

        self._guard(run)

    def _after_history(self) -> None:
        self.cancel_split(quiet=True)
        self.selected = [s for s in self.selected if self.session.table.exists(s)]
        if self.active is not None and not self.session.table.exists(self.active):
            self.active = self.selected[0] if self.selected else None
        self._selection_changed()

    def _history_message(self, verb: str, op: Any) -> str:
        text = f"{verb}: {op.describe()}"
        return f"{text}; {self.summary(self.active)}" if self.active is not None else text

    def jump_key(self) -> None:
        if self.request_jump is not None:
            self.request_jump()
        else:
            self._say("type a segment id in the proofreading panel's 'jump to' field")

    def jump_target(self, segment: int) -> tuple[int, int, int] | None:
        """A voxel of the segment near the middle of its bounding box (a bent neurite's box centre
        is usually outside it). Reads at most a few small windows: the segment's fragments are
        ranked by how far their boxes are from that centre, and only around the nearest point of
        each box is the volume read, so the cost is the segment's fragment count, not its size."""
        session = self.session
        table = session.table
        rows = table.rows_of(int(segment))
        if len(rows) == 0:
            return None
        lo, hi = table.lo[rows], table.hi[rows]
        centre = (lo.min(0) + hi.max(0) - 1) / 2.0
        near = np.clip(centre, lo, hi - 1)  # each fragment box's point nearest the centre
        order = np.argsort(((near - centre) ** 2).sum(1), kind="stable")
        half = JUMP_WINDOW // 2
        for k in order[:8]:
            fid = table.frag_ids[rows[k]]
            a = np.maximum(lo[k], np.round(near[k]).astype(int) - half)
            b = np.minimum(hi[k], a + JUMP_WINDOW)
            block = np.asarray(
                session.fragments[tuple(slice(int(x), int(y)) for x, y in zip(a, b))]
            )
            hits = np.argwhere(block == fid)
            if len(hits):
                best = hits[np.argmin(((hits + a - centre) ** 2).sum(1))] + a
                return tuple(int(v) for v in best)
        # none near those points: a box is tight, so the fragment has voxels on its first and
        # last z plane; read the nearer of the two (one plane of one fragment)
        k = order[0]
        z = int(
            lo[k][0] if abs(lo[k][0] - centre[0]) <= abs(hi[k][0] - 1 - centre[0]) else hi[k][0] - 1
        )
        plane = np.asarray(session.fragments[z, lo[k][1] : hi[k][1], lo[k][2] : hi[k][2]])
        hits = np.argwhere(plane == table.frag_ids[rows[k]])
        if not len(hits):
            return None
        yx = hits[np.argmin(((hits + lo[k][1:] - centre[1:]) ** 2).sum(1))] + lo[k][1:]
        return (z, int(yx[0]), int(yx[1]))

    def jump_to(self, segment: int) -> None:
        """Select a segment and centre the view on a voxel of it (see :meth:`jump_target`)."""

        def run() -> None:
            self.session.segment_info(int(segment))  # refuses a segment that does not exist
            target = self.jump_target(int(segment))
            if target is None:
                self.select(int(segment))
                return
            world = np.asarray(target, float) * np.asarray(self.session.voxel_size_nm)
            self.viewer.dims.set_point(range(3), tuple(world))
            camera(self.viewer).center = tuple(world)
            self.select(int(segment))
            self._say(f"{self.summary(int(segment))}; view centred on voxel {target} (z, y, x)")

        self._guard(run)

    def _three_d(self) -> bool:
        return self.viewer.dims.ndisplay == 3

    def _on_ndisplay(self, event: Any = None) -> None:
        """In 3D the selected segments are drawn as meshes and the labels layers hidden (napari
        would read and render them as whole volumes), as is a single-scale EM layer; in 2D they
        come back as they were and the selection is outlined. (napari slices the layers for 3D
        before this runs; their views answer that request with zeros, see ``blank_volumes``.)"""
        three_d = self.viewer.dims.ndisplay == 3
        self.selection_layer.contour = 0 if three_d else 2
        volume_layers = [self.layer, self.selection_layer]  # hidden, self.layer still gets clicks
        if self.image_layer is not None and not self.image_layer.multiscale:
            volume_layers.append(self.image_layer)
        if three_d:
            if not self._visible_2d:
                self._visible_2d = {lyr.name: lyr.visible for lyr in volume_layers}
            for lyr in volume_layers:
                lyr.visible = False
        else:
            for lyr in volume_layers:
                lyr.visible = self._visible_2d.get(lyr.name, True)
            self._visible_2d = {}
        self.meshes.update()

    def export_meshes(self, dest: str, fmt: str = "ply") -> Any:
        """Write the selected segments' meshes into a new folder (PLY, OBJ or precomputed)."""
        from napari_connectome.proofread.meshes import export_segment_meshes

        def run() -> Any:
            if not self.selected:
                raise UserInputError("select the segments to export first (click on them)")
            out = export_segment_meshes(self.session, list(self.selected), dest, fmt)
            self._say(f"meshes of segment(s) {', '.join(map(str, self.selected))} written to {out}")
            return out

        return self._guard(run)

    def close(self) -> None:
        if self._on_session_edit in self.session.listeners:
            self.session.listeners.remove(self._on_session_edit)
        self.meshes.close()
        for lyr in (
            self.layer,
            self.selection_layer,
            self.preview_layer,
            self.seed_layer,
            self.image_layer,
        ):
            if lyr is not None and lyr in self.viewer.layers:
                self.viewer.layers.remove(lyr)
        self.viewer.dims.events.ndisplay.disconnect(self._on_ndisplay)
        self.session.close()
