"""napari proofreading tools: the segments layer with gestures (tool.py) and the dock widget
(widget.py)."""

from napari_connectome.gui.proofread.settings import DEFAULT_KEYS
from napari_connectome.gui.proofread.tool import ProofreadTool
from napari_connectome.gui.proofread.widget import ProofreadWidget

__all__ = ["DEFAULT_KEYS", "ProofreadTool", "ProofreadWidget"]
