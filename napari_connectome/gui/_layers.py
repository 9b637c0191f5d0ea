"""Layer helpers shared by the widgets: helper layers in the image's world, axis names.

napari warns "Inconsistent units" when a layer without units joins layers in nm, and shows axes as
-3/-2/-1 unless a layer names them; a Shapes or Points layer a widget adds for a box or seeds
therefore takes its scale, translate, units and axis labels from the image it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SPATIAL = "zyx"


def spatial_axis_labels(axes: str | Sequence[str] | None, ndim: int) -> tuple[str, ...]:
    """Names for the last ``ndim`` axes: the file's own (``"zyx"``, ``["z", "y", "x"]``) where it
    has as many, else z, y, x for a 3D volume (what every volume we open is, after channels)."""
    if axes is not None:
        names = [str(a) for a in axes if str(a) != "c"]
        if len(names) >= ndim:
            return tuple(names[-ndim:])
    if ndim <= len(SPATIAL):
        return tuple(SPATIAL[-ndim:])
    return tuple(f"axis {i}" for i in range(ndim - 3)) + tuple(SPATIAL)


def helper_layer_kwargs(image_layer: Any) -> dict[str, Any]:
    """``scale``, ``translate``, ``units`` and ``axis_labels`` of ``image_layer`` (napari layer), to
    pass to ``viewer.add_shapes`` / ``viewer.add_points`` so a helper layer lines up with the image
    and napari sees one set of units."""
    ndim = int(image_layer.ndim)
    kwargs: dict[str, Any] = {
        "scale": tuple(float(s) for s in image_layer.scale),
        "translate": tuple(float(t) for t in image_layer.translate),
        "ndim": ndim,
    }
    units = getattr(image_layer, "units", None)
    if units is not None:
        kwargs["units"] = tuple(str(u) for u in units)
    labels = getattr(image_layer, "axis_labels", None)
    if labels is not None:
        kwargs["axis_labels"] = tuple(str(a) for a in labels)
    return kwargs
