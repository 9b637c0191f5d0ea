"""Non-destructive proofreading: fragment volume + fragment->segment table + durable edit log.

Start here: :class:`ProofreadSession` (``create`` / ``open``, then ``merge``, ``split``, ``undo``
...). Nothing in this package imports napari or Qt.
"""

from napari_connectome.proofread.errors import EditRefused
from napari_connectome.proofread.reference import create_project
from napari_connectome.proofread.session import HistoryEntry, ProofreadSession, SegmentInfo
from napari_connectome.proofread.split import SplitPlan

__all__ = [
    "EditRefused",
    "HistoryEntry",
    "ProofreadSession",
    "SegmentInfo",
    "SplitPlan",
    "create_project",
]
