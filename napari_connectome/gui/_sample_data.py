"""napari sample data: the synthetic EM volume (instant, offline) and the real FIB-25 crop."""

from __future__ import annotations

from typing import Any

from napari_connectome.gui._reader import LayerData, read_volumes


def synthetic_sample(shape: tuple[int, int, int] = (96, 96, 96), seed: int = 0) -> list[LayerData]:
    """Synthetic EM image and its dense ground-truth labels, 10 nm voxels."""
    from napari_connectome.samples import synthetic_em

    image, labels, voxel = synthetic_em(shape, seed)
    common: dict[str, Any] = {"scale": voxel, "units": "nm"}
    meta = {"source": f"napari_connectome.samples.synthetic_em({shape}, seed={seed})"}
    return [
        (
            image,
            {**common, "name": "synthetic EM", "contrast_limits": (0, 255), "metadata": meta},
            "image",
        ),
        (labels, {**common, "name": "ground truth", "opacity": 0.4, "metadata": meta}, "labels"),
    ]


def fib25_sample() -> list[LayerData]:
    """FIB-25 training_sample2 (raw, ground-truth bodies, fragments), fetched once, verified."""
    from napari_connectome.samples import FIB25_ATTRIBUTION, fetch_fib25

    layers = read_volumes(fetch_fib25(progressbar=True))
    for _, meta, layer_type in layers:
        meta["metadata"]["attribution"] = FIB25_ATTRIBUTION
        if meta["name"] == "fragments":
            meta["visible"] = False
        if layer_type == "labels":
            meta["opacity"] = 0.4
    return layers
