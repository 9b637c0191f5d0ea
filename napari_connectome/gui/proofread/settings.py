"""Proofreading gestures: one dict, so users can rebind any of them (``ProofreadTool(...,
keys={...})``).

Click gestures are named by their modifier set; key gestures use napari's key names.
"""

from __future__ import annotations

DEFAULT_KEYS: dict[str, str] = {
    # mouse (left click); the value is the set of modifiers held, "-" joined, "" for a plain click
    "select": "",
    "merge": "Shift",
    "seed_a": "Control",
    "seed_b": "Control-Alt",
    # keys
    "split": "Enter",  # first press previews, second commits
    "cancel": "Escape",
    "delete": "Delete",
    "lock": "L",
    "done": "D",
    "undo": "Control-Z",
    "redo": "Control-Shift-Z",
    "jump": "J",
}

HELP: dict[str, str] = {
    "select": "click: select a segment (highlighted)",
    "merge": "click: merge the clicked segment into the selected one",
    "seed_a": "click: split seed, side A (keeps the id)",
    "seed_b": "click: split seed, side B (becomes a new segment)",
    "split": "preview the split; press again to commit",
    "cancel": "cancel the split (seeds and preview)",
    "delete": "delete the selected segment (to background)",
    "lock": "lock / unlock the selected segment",
    "done": "mark the selected segment done / not done",
    "undo": "undo",
    "redo": "redo",
    "jump": "jump to a segment by id",
}

MOUSE_GESTURES = ("select", "merge", "seed_a", "seed_b")


def help_text(keys: dict[str, str]) -> str:
    """Markdown-free, one gesture a line: what the help panel shows."""
    lines = []
    for name, what in HELP.items():
        key = keys[name]
        if name in MOUSE_GESTURES:
            key = f"{key}+click" if key else "click"
            key = key.replace("-", "+")
            what = what.split(": ", 1)[1]
        lines.append(f"{key:<18} {what}")
    return "\n".join(lines)
