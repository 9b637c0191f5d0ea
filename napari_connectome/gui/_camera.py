"""The viewer's camera across napari versions: ``viewer.scene.camera`` since 0.9, where
``viewer.camera`` is deprecated; older napari (we support >= 0.5.4) only has ``viewer.camera``."""

from __future__ import annotations

from typing import Any


def camera(viewer: Any) -> Any:
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
