"""The proofreading dock: open or create a project, gesture help, a sortable segment table, the
edit history, export.

The widget only gathers input and shows state; every action is a :class:`ProofreadTool` call. Its
message line shows the tool's ``message`` signal, the one source of feedback (tool.py); the table
reloads when the session reports an applied edit, before that message is composed. Keys typed in
its text fields never reach the segments layer (_text_fields.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_connectome.errors import UserInputError
from napari_connectome.gui._text_fields import keep_keys_in_fields
from napari_connectome.gui.proofread.project_tasks import ProjectTasks
from napari_connectome.gui.proofread.settings import help_text
from napari_connectome.gui.proofread.tool import ProofreadTool
from napari_connectome.proofread import ProofreadSession

COLUMNS = ("id", "size", "status", "last edit")


class SegmentTableModel(QAbstractTableModel):
    """Segments as numpy columns: sorting is an argsort, so 10^6 segments stay responsive."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = np.zeros(0, np.int64)
        self.sizes = np.zeros(0, np.int64)
        self.status = np.zeros(0, dtype=object)
        self.edited = np.zeros(0, float)
        self.last_op = np.zeros(0, dtype=object)
        self.order = np.zeros(0, np.int64)
        self._sort = (1, Qt.DescendingOrder)

    def load(self, session: ProofreadSession) -> None:
        self.beginResetModel()
        cols = session.segment_columns()
        self.ids, self.sizes, self.edited = cols["id"], cols["size"], cols["last_edit"]
        status = np.full(len(self.ids), "", dtype=object)
        status[cols["locked"]] = "locked "
        status[cols["done"]] = status[cols["done"]] + "done"
        self.status = status
        self.last_op = cols["last_op"]
        self._apply_sort()
        self.endResetModel()

    def _edit_text(self, i: int) -> str:
        if not self.edited[i]:
            return ""
        return time.strftime("%H:%M:%S", time.localtime(self.edited[i])) + " " + self.last_op[i]

    def _apply_sort(self) -> None:
        col, order = self._sort
        key = [self.ids, self.sizes, self.status.astype(str), self.edited][col]
        idx = np.argsort(key, kind="stable")
        self.order = idx[::-1] if order == Qt.DescendingOrder else idx

    def sort(self, column: int, order: Any = Qt.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self._apply_sort()
        self.layoutChanged.emit()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return len(self.order)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Any, role: int = Qt.DisplayRole) -> Any:
        if role == Qt.DisplayRole and orientation == Qt.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        if role != Qt.DisplayRole or not index.isValid():
            return None
        i = int(self.order[index.row()])
        col = index.column()
        if col == 3:
            return self._edit_text(i)
        return [str(self.ids[i]), f"{self.sizes[i]:,}", str(self.status[i]).strip()][col]

    def row_of(self, segment: int) -> int | None:
        hit = np.flatnonzero(self.ids[self.order] == segment)
        return int(hit[0]) if len(hit) else None

    def segment_at_row(self, row: int) -> int:
        return int(self.ids[self.order[row]])


class ProofreadWidget(QWidget):
    """Dock widget: ``Plugins > Connectome > Proofreading``."""

    def __init__(self, napari_viewer: Any, session: ProofreadSession | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.tool: ProofreadTool | None = None
        layout = QVBoxLayout(self)

        row = QHBoxLayout()
        self.open_button = QPushButton("Open project…")
        self.open_button.clicked.connect(self._choose_project)
        self.project_label = QLabel("no project open")
        row.addWidget(self.open_button)
        row.addWidget(self.project_label, 1)
        layout.addLayout(row)

        self.help = QLabel()
        self.help.setFont(QFont("monospace", 8))
        self.help.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.help)

        row = QHBoxLayout()
        row.addWidget(QLabel("jump to segment (J):"))
        self.jump_edit = QLineEdit()
        self.jump_edit.setPlaceholderText("segment id, Enter")
        self.jump_edit.returnPressed.connect(self._jump)
        row.addWidget(self.jump_edit, 1)
        self.outlines = QCheckBox("outlines only")
        self.outlines.setToolTip("draw the segments as outlines, so the EM shows through")
        self.outlines.toggled.connect(self._set_outlines)
        row.addWidget(self.outlines)
        layout.addLayout(row)

        self.model = SegmentTableModel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.clicked.connect(self._table_clicked)
        self.table.doubleClicked.connect(lambda idx: self._table_clicked(idx, jump=True))
        layout.addWidget(QLabel("segments (click selects, double-click jumps):"))
        layout.addWidget(self.table, 2)

        layout.addWidget(QLabel("edit history (greyed = undone):"))
        self.history = QListWidget()
        layout.addWidget(self.history, 1)

        row = QHBoxLayout()
        self.mesh_button = QPushButton("Export meshes…")
        self.mesh_button.setToolTip("write the selected segments' meshes into a new folder")
        self.mesh_button.clicked.connect(lambda: self.export_meshes())
        self.mesh_format = QComboBox()
        self.mesh_format.addItems(["ply", "obj", "precomputed"])
        row.addWidget(self.mesh_button)
        row.addWidget(self.mesh_format)
        row.addStretch(1)
        layout.addLayout(row)
        self.tasks = ProjectTasks(self)
        layout.addWidget(self.tasks)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.message)
        keep_keys_in_fields(self)
        if session is not None:
            self.attach(session)

    # ---- project
    # -----------------------------------------------------------------------------------------
    def _choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open proofreading project")
        if folder:
            self.open_project(folder)

    def open_project(self, folder: str | Path) -> None:
        from napari_connectome.gui._notify import report_error

        try:
            session = ProofreadSession.open(folder)
        except UserInputError as exc:
            self.message.setText(report_error(exc, "open project"))
            return
        self.attach(session)

    def attach(
        self, session: ProofreadSession, keys: dict[str, str] | None = None
    ) -> ProofreadTool:
        if self.tool is not None:
            self.tool.close()
        self.tool = ProofreadTool(self.viewer, session, keys=keys)
        self.tool.request_jump = self._focus_jump
        self.tool.changed.connect(self._on_changed)
        self.tool.message.connect(self.message.setText)
        self.project_label.setText(str(session.project))
        self.help.setText(help_text(self.tool.keys))
        self._set_outlines(self.outlines.isChecked())
        self._on_changed("edit")
        self.tasks.fill_layer_choices()
        self.message.setText(
            f"{session.project.name}: {len(self.model.ids):,} segments; click one to select it"
        )
        return self.tool

    def _set_outlines(self, on: bool) -> None:
        if self.tool is not None:
            self.tool.layer.contour = 1 if on else 0

    # ---- state -> widgets
    # --------------------------------------------------------------------------------
    def _on_changed(self, what: str) -> None:
        if self.tool is None:
            return
        if what in ("edit",):
            self.model.load(self.tool.session)
            self._fill_history()
        self._follow_selection()

    def _fill_history(self) -> None:
        self.history.clear()
        for h in reversed(self.tool.session.history()):
            item = QListWidgetItem(f"#{h.seq}  {h.description}")
            if not h.applied:
                item.setForeground(QBrush(QColor("gray")))
                item.setText(item.text() + "  (undone)")
            self.history.addItem(item)

    def _follow_selection(self) -> None:
        if self.tool is None or self.tool.active is None:
            self.table.clearSelection()
            return
        row = self.model.row_of(self.tool.active)
        if row is not None:
            self.table.selectRow(row)
            self.table.scrollTo(self.model.index(row, 0))

    def _table_clicked(self, index: QModelIndex, jump: bool = False) -> None:
        if self.tool is None:
            return
        seg = self.model.segment_at_row(index.row())
        if jump:
            self.tool.jump_to(seg)
        else:
            self.tool.select(seg)

    def export_meshes(self, folder: str | Path | None = None) -> Path | None:
        """Write the selected segments' meshes (in the chosen format) into a new folder."""
        if self.tool is None:
            return None
        if folder is None:
            folder, _ = QFileDialog.getSaveFileName(self, "Export meshes to a new folder")
            if not folder:
                return None
        return self.tool.export_meshes(str(folder), self.mesh_format.currentText())

    def _focus_jump(self) -> None:
        self.jump_edit.setFocus()
        self.jump_edit.selectAll()

    def _jump(self) -> None:
        if self.tool is None:
            return
        text = self.jump_edit.text().strip()
        if not text.isdigit():
            self.tool._say(f"'{text}' is not a segment id; type a number", error=True)
            return
        self.tool.jump_to(int(text))
