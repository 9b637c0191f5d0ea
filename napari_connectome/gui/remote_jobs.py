"""The "Remote jobs" dock widget: cluster profiles, submit the open volume as a full-volume job,
watch every submitted job, and see the result fill in block by block.

Everything slow (SSH logins, ``sbatch``, status polls, streaming) runs in napari thread workers
through one :class:`~napari_connectome.jobs.client.JobsClient`, which keeps one SSH connection
per cluster for all of them; the Qt thread only reads form fields and updates the table and
layers. Jobs come from the jobs registry (the same list ``napari-connectome jobs`` prints), so
after a restart the table shows them again and Attach resumes streaming into the same local cache.
The form sits in a scroll area, so the dock fits a laptop screen.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    Table,
    create_widget,
)

from napari_connectome.errors import UserInputError
from napari_connectome.gui._notify import report_error
from napari_connectome.gui.remote_profile import ProfileEditor
from napari_connectome.gui.remote_stream import JobStream, cache_level0_transform
from napari_connectome.jobs.client import JobsClient
from napari_connectome.jobs.events import JobEvent
from napari_connectome.jobs.registry import JobRecord, list_records
from napari_connectome.jobs.status import FINAL_STATES, JobStatus

if TYPE_CHECKING:
    import napari

COLUMNS = ["state", "blocks", "blocks/s", "ETA", "faces", "job", "where", "output"]
MIRROR = "copy every block here (mirror)"
ON_DEMAND = "view remotely (on demand)"
SEGMENTERS = ["ffn", "watershed", "plugin"]
DOCS_URL = "https://github.com/napari-connectome/napari-connectome/tree/main/docs"
TRY_IT = "examples/jobs/try_slurm_over_ssh.py"


def _docs_link(name: str) -> str:
    """A link to one of our docs: the file of this checkout when there is one, else online."""
    local = Path(__file__).resolve().parents[2] / "docs" / name
    href = local.as_uri() if local.is_file() else f"{DOCS_URL}/{name}"
    return f'<a href="{href}" style="color: #7fb8ff;">docs/{name}</a>'


def first_run_hint() -> str:
    """What the dock says while no cluster profile is saved and no job is listed (short lines:
    a narrow dock must not wrap them at random)."""
    return "<br>".join(
        [
            "<b>No cluster set up yet.</b> Try it on this machine:",
            f"<code>python {TRY_IT}</code>",
            "<code>/tmp/nc-try</code> (in the source tree; needs",
            "slurm-wlm, munge, openssh-server), then",
            "<b>Import from job YAML…</b> <code>/tmp/nc-try/job.yaml</code>,",
            "<b>Save profile</b>, <b>Test connection</b>.",
            f"Your cluster: {_docs_link('remote-jobs.md')}, {_docs_link('hpc.md')},",
            "or import the YAML of a job you already submit.",
        ]
    )


def layer_source(layer: Any) -> str | None:
    """The source string a job can open for an image layer (set by our reader), or its file."""
    source = (layer.metadata or {}).get("source")
    if source:
        return str(source)
    return str(layer.source.path) if layer.source.path else None


def _triple(text: str, what: str) -> list[int]:
    parts = [p for p in text.replace("x", ",").replace(" ", ",").split(",") if p]
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise UserInputError(f"{what} must be one number or three (z, y, x), got {text!r}")
    return values


def _yaml_mapping(text: str, what: str) -> dict:
    from napari_connectome.jobs.spec import load_yaml_text

    if not text.strip():
        return {}
    value = load_yaml_text(text, what)  # no aliases: a few lines must not expand to gigabytes
    if not isinstance(value, dict):
        raise UserInputError(f"{what} must be a YAML mapping such as {{a: 1}}, got {text!r}")
    return value


def _faces(seams: dict) -> str:
    """The seam check of a finished job, per axis: change rate at block faces over the rate inside
    blocks (about 1: faces cut nothing; well above 1: neurons cut at faces, see docs/hpc.md)."""
    return " ".join(
        f"{axis} {seams[axis]['ratio']:.2f}"
        for axis in "zyx"
        if seams.get(axis, {}).get("ratio") is not None
    )


def _scheduler_here(scheduler: str) -> bool:
    """Whether this machine has the scheduler's commands (then an empty host is a login node)."""
    import shutil

    return shutil.which("sinfo" if scheduler == "slurm" else "qstat") is not None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else ">1 day"


class RemoteJobsWidget(Container):
    """Cluster profiles, job submission, the job list and streamed result layers."""

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        poll_interval_ms: int = 3000,
        refresh_interval_ms: int = 250,
    ) -> None:
        from napari.layers import Image
        from qtpy.QtCore import Qt, QTimer
        from qtpy.QtWidgets import QAbstractItemView, QFrame, QScrollArea, QSizePolicy

        self._viewer = viewer
        self.client = JobsClient()  # one SSH connection per cluster for polls, submits, streams
        self.hint = Label(value=first_run_hint())
        self.profiles = ProfileEditor()
        self.import_button = PushButton(text="Import from job YAML…")
        self.import_button.tooltip = (
            "fill the profile from the backend of a job spec (slurm/pbs, ssh, resources); the "
            "work dir becomes the folder of its output"
        )
        self.test_button = PushButton(text="Test connection")
        self.connection = Label(value="")  # connecting… / connected / failed, beside the button
        self.connection_detail = Label(value="")  # what the test saw, or why it failed
        self.connection_detail.visible = False  # shown with the first answer
        self.image = create_widget(label="image", annotation=Image | None, value=None)
        self.input_path = LineEdit(label="or path on cluster")
        self.input_path.tooltip = (
            "a source the cluster can open, e.g. /scratch/em.zarr/raw or /data/v.h5:raw; "
            "empty: the image layer's file (it must be visible to the cluster). A path here is "
            "used instead of the image layer"
        )
        self.input_note = Label(value="")  # which input the job reads, when both are set
        self.upload = CheckBox(text="upload the layer to the work dir")
        self.upload.tooltip = "for a layer the cluster cannot read: copy it there (OME-Zarr) first"
        self.job_name = LineEdit(label="job name", value="segmentation")
        self.segmenter = ComboBox(label="segmenter", choices=SEGMENTERS)
        self.model = LineEdit(label="model", value="default")
        self.model.tooltip = "ffn: 'default' (shipped model) or a model folder on the cluster"
        self.factory = LineEdit(label="factory")
        self.factory.tooltip = "plugin: package.module:function returning a block segmenter"
        self.factory.visible = False
        self.plugin_options = LineEdit(label="options")
        self.plugin_options.tooltip = (
            "plugin: keyword arguments for the factory, as YAML: {delay_s: 0.5}"
        )
        self.plugin_options.visible = False
        self.block = LineEdit(label="block", value="128")
        self.overlap = LineEdit(label="overlap", value="16")
        self.workers = SpinBox(label="workers per node", value=0, min=0, max=1024)
        self.workers.tooltip = "0: one per GPU, else one per 2 cores"
        self.submit_button = PushButton(text="Submit job")
        self.table = Table()
        self.show_as = ComboBox(label="show result", choices=[MIRROR, ON_DEMAND], value=MIRROR)
        self.show_as.tooltip = (
            "mirror: every finished chunk is copied into a local cache (small jobs); on demand: "
            "the output is read where the job writes it, only the chunks on screen, at every "
            "pyramid level, through the bounded chunk cache (any size)"
        )
        self.attach_button = PushButton(text="Attach (show result)")
        self.cancel_button = PushButton(text="Cancel job")
        self.refresh_button = PushButton(text="Refresh")
        self.status = Label(value="")
        fields = Container(
            widgets=[
                self.import_button,
                self.profiles,
                Container(widgets=[self.test_button, self.connection], layout="horizontal"),
                self.connection_detail,
                self.image,
                self.input_path,
                self.input_note,
                self.upload,
                self.job_name,
                self.segmenter,
                self.model,
                self.factory,
                self.plugin_options,
                self.block,
                self.overlap,
                self.workers,
                self.submit_button,
                self.table,
                self.show_as,
                Container(
                    widgets=[self.attach_button, self.cancel_button, self.refresh_button],
                    layout="horizontal",
                ),
                self.status,
            ],
        )
        # the hint spans the dock's width (outside the form's label column)
        self.form = Container(widgets=[self.hint, fields], labels=False)
        self.form.margins = (0, 0, 0, 0)
        super().__init__(widgets=[])
        self.margins = (0, 0, 0, 0)
        # napari docks ``native`` itself (magicgui's own scroll area would be left out): the form
        # scrolls inside the dock instead of making the window taller than the screen
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.form.native)
        self.native.layout().addWidget(self.scroll)
        self.table.native.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.native.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.native.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.native.setMinimumHeight(140)
        self.table.native.horizontalHeader().setStretchLastSection(True)
        for label in (self.status, self.connection_detail, self.input_note):
            # wrapped to the dock's width: a long message (a path has no spaces to break at)
            # must not widen the form beyond the dock, which would scroll it sideways
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
            label.native.setMinimumWidth(120)

        self.connection.native.setWordWrap(True)
        self.hint.native.setTextFormat(Qt.RichText)
        self.hint.native.setOpenExternalLinks(True)
        self.hint.native.setTextInteractionFlags(Qt.TextBrowserInteraction)
        self.hint.native.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        # room for the mixed fonts of the rich text (Qt's hint undercounts them)
        self.hint.native.setMinimumHeight(self.hint.native.sizeHint().height() + 16)
        images = [ly for ly in viewer.layers if isinstance(ly, Image)]
        if images:
            self.image.value = images[-1]
        self.table.native.setColumnCount(len(COLUMNS))
        self.table.native.setHorizontalHeaderLabels(COLUMNS)
        self._closed = False

        self.records: dict[str, JobRecord] = {}
        self.statuses: dict[str, JobStatus] = {}
        self.streams: dict[str, JobStream] = {}
        self.live: dict[str, Any] = {}  # job id -> LiveView (results viewed on demand)
        self.layers: dict[str, Any] = {}
        self._layer_hints: dict[str, Any] = {}  # job id -> image layer it was submitted from
        self._busy: dict[str, Any] = {}  # what -> running worker (one of each at a time)

        self.profiles.save_button.changed.connect(self.save_profile)
        self.profiles.delete_button.changed.connect(self._delete_profile)
        self.import_button.changed.connect(self.choose_job_yaml)
        self._import_dialog: Any = None
        self.test_button.changed.connect(self.test_connection)
        self.image.changed.connect(self._update_input_note)
        self.input_path.changed.connect(self._update_input_note)
        self.upload.changed.connect(self._update_input_note)
        self.segmenter.changed.connect(self._on_segmenter)
        self.submit_button.changed.connect(self.submit)
        self.attach_button.changed.connect(self.attach_selected)
        self.cancel_button.changed.connect(self.cancel_selected)
        self.refresh_button.changed.connect(self.refresh)
        self.table.native.doubleClicked.connect(lambda _index: self.attach_selected())
        self._timer = QTimer(self.native)
        self._timer.setInterval(poll_interval_ms)
        self._timer.timeout.connect(self.poll)
        self._timer.start()
        self._dirty: set[str] = set()
        self._redraw = QTimer(self.native)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(refresh_interval_ms)
        self._redraw.timeout.connect(self._refresh_dirty)
        self.native.destroyed.connect(self._on_destroyed)
        self.reload_jobs()
        self._update_input_note()
        # the table scrolls its own columns; the dock is never narrower than the rest of the form
        self.table.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        self.scroll.setMinimumWidth(self.form.native.minimumSizeHint().width() + bar)
        self.poll()

    def reset_choices(self, *_: Any) -> None:
        """napari calls this when layers change: refresh the form's layer and profile pickers."""
        self.form.reset_choices()

    # -- workers -----------------------------------------------------------------------------------
    def _run(self, what: str, func: Any, *args: Any, on_done: Any = None) -> bool:
        """Run ``func(*args)`` in a thread worker unless one for ``what`` is still running."""
        from napari.qt.threading import create_worker

        if what in self._busy:
            return False
        worker = create_worker(func, *args, _start_thread=False, _ignore_errors=True)
        if on_done is not None:
            worker.returned.connect(on_done)
        worker.errored.connect(lambda exc: self._on_error(what, exc))
        worker.finished.connect(lambda: self._busy.pop(what, None))
        self._busy[what] = worker
        worker.start()
        return True

    def _on_error(self, what: str, exc: BaseException) -> None:
        if self._closed:
            return
        message = report_error(exc, what)
        if what == "Test connection":  # said beside the button, where the user looks
            self.connection.value = "failed"
            self._detail = message
        else:
            self.status.value = message
        self.submit_button.enabled = True

    @property
    def _detail(self) -> str:
        return self.connection_detail.value

    @_detail.setter
    def _detail(self, text: str) -> None:
        """What Test connection saw, under the button (hidden while there is nothing to say)."""
        self.connection_detail.value = text
        self.connection_detail.visible = bool(text)

    @property
    def busy(self) -> bool:
        return bool(self._busy)

    # -- profiles ----------------------------------------------------------------------------------
    def save_profile(self) -> None:
        try:
            profile = self.profiles.save()
        except UserInputError as exc:
            self.status.value = report_error(exc, "Save profile")
            return
        self.status.value = f"saved profile {profile.name}"
        self._update_hint()

    def _delete_profile(self) -> None:
        self.profiles.delete()
        self._update_hint()

    def _update_hint(self) -> None:
        """The first-run hint shows until a profile is saved or a job is listed."""
        from napari_connectome.jobs.profiles import list_profiles

        self.hint.visible = not list_profiles() and not self.records

    def choose_job_yaml(self) -> None:
        """Ask for a job spec file (a non-modal Qt file dialog), then :meth:`import_job_yaml`."""
        from qtpy.QtWidgets import QFileDialog

        dialog = QFileDialog(self.native, "Import a cluster profile from a job spec")
        dialog.setFileMode(QFileDialog.ExistingFile)
        dialog.setNameFilters(["job specs (*.yaml *.yml)", "all files (*)"])
        dialog.setOption(QFileDialog.DontUseNativeDialog, True)  # the same on every desktop
        dialog.fileSelected.connect(self.import_job_yaml)
        self._import_dialog = dialog
        dialog.open()

    def import_job_yaml(self, path: str) -> None:
        """Fill the profile form from a job spec's backend (checked by the core spec loader).
        Nothing is saved until Save profile."""
        from napari_connectome.jobs.profiles import profile_from_spec
        from napari_connectome.jobs.spec import load_spec

        try:
            profile, dropped = profile_from_spec(load_spec(path))
        except UserInputError as exc:
            self.status.value = report_error(exc, "Import from job YAML")
            return
        self.profiles.choice.value = "<new profile>"
        self.profiles.fill(profile)
        self.profiles.editing.value = True
        message = (
            f"imported profile {profile.name!r} from {Path(path).name} "
            f"({profile.label}, {profile.scheduler}): check it, then Save profile"
        )
        if dropped:
            message += "; a profile does not keep " + ", ".join(dropped)
        self.status.value = message

    def test_connection(self) -> None:
        """Log in with the form's profile (host key verified) and ask the scheduler, off the Qt
        thread. The answer (or the reason it failed) shows beside the button."""
        from napari_connectome.jobs.profiles import check_connection

        try:
            profile = self.profiles.profile()
        except UserInputError as exc:
            self.connection.value = "failed"
            self._detail = report_error(exc, "Test connection")
            return
        if not profile.host and not _scheduler_here(profile.scheduler):
            # an empty host means "this machine is the login node": say so, not a sinfo error
            self.connection.value = "enter a host"
            self._detail = (
                f"this machine has no {'sinfo' if profile.scheduler == 'slurm' else 'qstat'}: "
                "enter the cluster's login host (empty only when napari runs on the login node)"
            )
            return
        self.connection.value = f"connecting to {profile.label}…"
        self._detail = ""
        self._run("Test connection", check_connection, profile, on_done=self._on_connected)

    def _on_connected(self, found: dict[str, str]) -> None:
        if self._closed:
            return
        from napari.utils.notifications import show_info

        self.connection.value = "connected"
        lines = (f"{k}: {v}" for k, v in found.items())
        # a zero-width space after each "/" lets a long path wrap inside the dock
        self._detail = "\n".join(lines).replace("/", "/\u200b")
        detail = "; ".join(f"{k}: {v}" for k, v in found.items())
        self.status.value = f"connected: {detail}"
        show_info(f"Test connection: connected: {detail}")

    # -- submit ------------------------------------------------------------------------------------
    def _on_segmenter(self, kind: str) -> None:
        self.model.visible = kind == "ffn"
        self.factory.visible = kind == "plugin"
        self.plugin_options.visible = kind == "plugin"

    def input_choice(self) -> str:
        """Which input a job reads: ``upload`` (the layer, copied), ``path`` or ``layer``."""
        if self.upload.value:
            return "upload"
        return "path" if self.input_path.value.strip() else "layer"

    def result_placement_layer(self) -> Any:
        """The layer whose scale and position the result takes: the image layer only when the
        job reads that layer. A path read instead is placed by the job's own metadata, so the
        result is never drawn over an image of another shape."""
        return self.image.value if self.input_choice() != "path" else None

    def _update_input_note(self, *_: Any) -> None:
        """Say which input is used when the form names two (a path wins over the layer)."""
        layer = self.image.value
        choice = self.input_choice()
        if choice == "path" and layer is not None:
            text = (
                f"the job reads the path on the cluster, not layer {layer.name!r}; the result "
                "is placed by the path's own voxel size (clear the path to segment the layer)"
            )
        elif choice == "upload" and self.input_path.value.strip():
            layer_name = layer.name if layer is not None else "(none chosen)"
            text = f"the job reads layer {layer_name!r}, uploaded; the path is not used"
        else:
            text = ""
        self.input_note.value = text
        self.input_note.visible = bool(text)

    def job_spec(self) -> Any:
        """The job spec the form describes (checked; nothing is created yet)."""
        from napari_connectome.jobs.spec import parse_spec

        profile = self.profiles.profile()
        layer = self.image.value
        source = self.input_path.value.strip()
        name = self.job_name.value.strip() or "segmentation"
        output = profile.output_path(name)
        if self.upload.value:
            if layer is None:
                raise UserInputError("choose the image layer to upload")
            source = output.removesuffix(".ome.zarr") + "-input.ome.zarr"
        elif not source:
            if layer is None:
                raise UserInputError(
                    "choose an image layer opened from a file, or type the input's path on the "
                    "cluster"
                )
            source = layer_source(layer)
            if not source:
                raise UserInputError(
                    f"layer {layer.name!r} was not opened from a file: save it where the cluster "
                    "can read it and type that path"
                )
        kind = self.segmenter.value
        segmenter: dict[str, Any] = {"kind": kind}
        if kind == "ffn":
            segmenter["model"] = self.model.value.strip() or "default"
        if kind == "plugin":
            segmenter["factory"] = self.factory.value.strip()
            segmenter["options"] = _yaml_mapping(self.plugin_options.value, "plugin options")
        spec = {
            "name": name,
            "input": source,
            "output": output,
            "block_shape": _triple(self.block.value, "block"),
            "overlap": _triple(self.overlap.value, "overlap"),
            "segmenter": segmenter,
            "backend": profile.backend(self.workers.value or None).model_dump(mode="json"),
        }
        return parse_spec(spec, "from the Remote jobs form")

    def submit(self) -> None:
        """Check the form, then (upload and) submit the job off the Qt thread."""
        try:
            spec = self.job_spec()
        except UserInputError as exc:
            self.status.value = report_error(exc, "Submit job")
            return
        hint = self.result_placement_layer()
        upload = None
        if self.upload.value:
            data = hint.data[0] if hint.multiscale else hint.data
            if hint.rgb or data.ndim != 3:
                exc = UserInputError(
                    f"layer {hint.name!r} has shape {tuple(data.shape)}; a job needs a 3D "
                    "grayscale volume (z, y, x)"
                )
                self.status.value = report_error(exc, "Submit job")
                return
            upload = (data, tuple(float(v) for v in hint.scale[-3:]))
        if self._run(
            "Submit job",
            self.client.submit,
            spec,
            upload,
            on_done=lambda r: self._on_submitted(r, hint),
        ):
            self.submit_button.enabled = False
            verb = "uploading the layer and submitting" if upload else "submitting"
            what = (
                f"{spec.input} (not layer {self.image.value.name!r})"
                if (self.input_choice() == "path" and self.image.value is not None)
                else spec.name
            )
            self.status.value = f"{verb} {what} to {spec.backend.kind}…"

    def _on_submitted(self, record: JobRecord, image_layer: Any) -> None:
        if self._closed:
            return
        from napari.utils.notifications import show_info

        self.submit_button.enabled = True
        self.records[record.id] = record
        self._update_hint()
        if image_layer is not None:
            self._layer_hints[record.id] = image_layer
        where = f" ({record.backend} job {record.scheduler_id})" if record.scheduler_id else ""
        self.status.value = f"submitted {record.id}{where}"
        show_info(f"Remote jobs: submitted {record.id}{where}; output {record.output}")
        self._fill_table()
        self.attach(record.id)

    # -- job list ----------------------------------------------------------------------------------
    def reload_jobs(self) -> None:
        """Every job in the registry (also those submitted before napari was restarted)."""
        self.records = {r.id: r for r in list_records()}
        self._update_hint()
        self._fill_table()

    def _row(self, record: JobRecord) -> list[str]:
        st = self.statuses.get(record.id)
        where = record.ssh["host"] if record.ssh else "this machine"
        if record.scheduler_id:
            where += f" #{record.scheduler_id}"
        if st is None:
            return ["…", "", "", "", "", record.id, where, record.output]
        state = st.state
        if record.id in self.streams and self.streams[record.id].running:
            state += " (streaming)"
        elif record.id in self.live and self.live[record.id].running:
            state += " (live)"
        blocks = f"{st.blocks_done}/{st.blocks_total}" if st.blocks_total else ""
        eta = _eta(st.eta_s) if st.state == "running" else ""
        rate_text = f"{st.rate_blocks_per_s:.2f}" if st.rate_blocks_per_s else ""
        faces = _faces(st.seams or {})
        return [state, blocks, rate_text, eta, faces, record.id, where, record.output]

    def _fill_table(self) -> None:
        selected = self.selected_job()
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QTableWidgetItem

        if self._closed:
            return
        records = sorted(self.records.values(), key=lambda r: -r.submitted)
        table = self.table.native
        table.setRowCount(len(records))
        for i, record in enumerate(records):
            for j, text in enumerate(self._row(record)):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, record.id)
                status = self.statuses.get(record.id)
                error = status.error if status is not None else None
                if error:
                    item.setToolTip(str(error))
                elif COLUMNS[j] == "faces":
                    item.setToolTip(
                        "seam check: label changes across block faces over those inside blocks; "
                        "about 1 = faces cut nothing, well above 1 = neurons cut (docs/hpc.md)"
                    )
                table.setItem(i, j, item)
        for j in range(len(COLUMNS) - 1):
            table.resizeColumnToContents(j)
        if selected:
            self.select_job(selected)

    def select_job(self, job_id: str) -> None:
        """Select a job's row (what a click on it does)."""
        from qtpy.QtCore import Qt

        for row in range(self.table.native.rowCount()):
            item = self.table.native.item(row, 0)
            if item is not None and item.data(Qt.UserRole) == job_id:
                self.table.native.selectRow(row)
                return

    def selected_job(self) -> str | None:
        from qtpy.QtCore import Qt

        rows = self.table.native.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.native.item(rows[0].row(), 0)
        return item.data(Qt.UserRole) if item is not None else None

    def refresh(self) -> None:
        """Re-read the registry (jobs submitted meanwhile from the command line) and poll."""
        self.reload_jobs()
        self.poll()

    def poll(self) -> None:
        """Ask for the state of every job not known to be finished (in a worker)."""
        pending = [r for r in self.records.values() if not self._final(r.id)]
        if pending and not self._closed:
            self._run("Job status", self.client.poll, pending, on_done=self._on_statuses)

    def _final(self, job_id: str) -> bool:
        status = self.statuses.get(job_id)
        return status is not None and status.state in FINAL_STATES

    def _on_statuses(self, statuses: dict[str, JobStatus]) -> None:
        if self._closed:
            return
        from napari.utils.notifications import show_warning

        for job_id, status in statuses.items():
            before = self.statuses.get(job_id)
            if status.state in ("failed", "unreachable") and (
                before is None or before.state != status.state
            ):
                # a job that died, or a cluster gone: say why once, not on every poll
                tail = (status.log_tail or "").strip().splitlines()
                reason = status.error or (tail[-1] if tail else "no message")
                show_warning(f"Remote jobs: {job_id} {status.state}: {reason}")
        self.statuses.update(statuses)
        self._fill_table()

    # -- attach / cancel ---------------------------------------------------------------------------
    def _selected_record(self, what: str) -> JobRecord | None:
        job = self.selected_job()
        if job is None:
            self.status.value = report_error(UserInputError("select a job in the list first"), what)
            return None
        return self.records[job]

    def attach_selected(self) -> None:
        record = self._selected_record("Attach")
        if record is not None:
            self.attach(record.id)

    def attach(self, job_id: str) -> None:
        """Stream a job's result into its local cache and show it as a labels layer (or, when
        "view remotely" is chosen, show it where the job writes it)."""
        if self.show_as.value == ON_DEMAND:
            self._attach_live(job_id)
            return
        old = self.streams.get(job_id)
        if old is not None and old.running:
            return
        stream = JobStream(
            self.records[job_id],
            self.client,
            self._on_block,
            self._on_stream_end,
            self._on_stream_error,
        )
        self.streams[job_id] = stream
        stream.start()
        self.status.value = f"streaming {job_id} into {stream.cache}"
        self._fill_table()

    def _attach_live(self, job_id: str) -> None:
        from napari_connectome.gui.remote_live import LiveView

        old = self.live.get(job_id)
        if old is not None and old.running:
            return
        view = LiveView(
            self._viewer,
            self.records[job_id],
            hint=self._layer_hints.get(job_id),
            on_message=self._on_live_message,
        )
        self.live[job_id] = view
        view.start()
        self.status.value = f"viewing {job_id} where it is written"
        self._fill_table()

    def _on_live_message(self, message: str) -> None:
        if not self._closed:
            self.status.value = message

    def _layer_for(self, job_id: str) -> Any:
        layer = self.layers.get(job_id)
        if layer is not None and layer in self._viewer.layers:
            return layer
        import zarr

        from napari_connectome.jobs.stream import cache_level

        cache = self.streams[job_id].cache
        level0 = cache_level(cache)
        if level0 is None:
            raise UserInputError(f"{cache} has no streamed result yet")
        data = zarr.open_array(str(level0), mode="r")
        scale, translate = cache_level0_transform(cache)
        image = self._layer_hints.get(job_id)
        if image is not None and image in self._viewer.layers:
            scale, translate = list(image.scale), list(image.translate)
        layer = self._viewer.add_labels(
            data,
            name=f"{self.records[job_id].name} [{job_id[-4:]}]",
            scale=scale,
            translate=translate,
            units="nm",  # the job writes OME-Zarr in nanometres, as our reader shows images
            metadata={"job": job_id, "cache": str(cache)},
        )
        self.layers[job_id] = layer
        return layer

    def _on_block(self, job_id: str, event: JobEvent) -> None:
        """Qt thread: a block's chunk is in the cache; show it."""
        if self._closed:
            return
        self._layer_for(job_id)
        self._dirty.add(job_id)
        if not self._redraw.isActive():
            self._redraw.start()
        stream = self.streams[job_id]
        self.status.value = f"{job_id}: {stream.blocks} blocks streamed ({event.phase or ''})"

    def _refresh_dirty(self) -> None:
        """Redraw layers that got blocks since the last redraw: one redraw per interval, however
        many blocks arrived (a uint64 labels redraw costs tenths of a second on a busy CPU)."""
        if self._closed:
            return
        for job_id in list(self._dirty):
            layer = self.layers.get(job_id)
            if layer is not None and layer in self._viewer.layers:
                layer.refresh()
        self._dirty.clear()

    def _on_stream_end(self, job_id: str, state: str) -> None:
        if self._closed:
            return
        from napari.utils.notifications import show_info, show_warning

        from napari_connectome.jobs.stream import cache_level

        stream = self.streams[job_id]
        level0 = cache_level(stream.cache)
        if job_id in self.layers or (level0 is not None and level0.exists()):
            self._layer_for(job_id).refresh()
            self._dirty.discard(job_id)
        message = f"{job_id}: stream ended, job {state}"
        if stream.skipped:  # lines naming files outside the job's output or the cache
            message += f"; {len(stream.skipped)} refused: {stream.skipped[0]}"
        ok = state in ("done", "detached") and not stream.skipped
        (show_info if ok else show_warning)(f"Remote jobs: {message}")
        self.status.value = message
        self.poll()
        self._fill_table()

    def _on_stream_error(self, job_id: str, exc: BaseException) -> None:
        if self._closed:
            return
        self.status.value = report_error(exc, f"Streaming {job_id}")
        self._fill_table()

    def cancel_selected(self) -> None:
        record = self._selected_record("Cancel job")
        if record is None:
            return
        self.status.value = f"cancelling {record.id}…"
        self._run(
            "Cancel job",
            self.client.cancel,
            record,
            on_done=lambda _: self._on_cancelled(record.id),
        )

    def _on_cancelled(self, job_id: str) -> None:
        if self._closed:
            return
        from napari.utils.notifications import show_info

        self.status.value = f"cancel sent for {job_id}"
        show_info(f"Remote jobs: cancel sent for {job_id}")
        self.poll()

    # -- teardown ----------------------------------------------------------------------------------
    def detach_all(self) -> None:
        """Stop following every job (the jobs themselves keep running on the cluster)."""
        for stream in self.streams.values():
            stream.stop()
        for view in self.live.values():
            view.stop()

    def _on_destroyed(self, *_: Any) -> None:
        self._closed = True
        self._timer.stop()
        self.detach_all()
        # log out off the Qt thread (a dead network must not freeze the closing window);
        # streams still running see their stop flag or the closed client and end
        import threading

        threading.Thread(target=self.client.close, daemon=True, name="jobs-client-close").start()
