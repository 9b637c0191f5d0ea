"""napari sample data: the synthetic EM volume (instant, offline), the shipped FIB-25 crop (real
EM with ground truth, offline) and the whole FIB-25 training_sample2 volume (downloaded once)."""

from __future__ import annotations

from typing import Any

from napari_connectome.gui._reader import LayerData, read_volumes


def synthetic_sample(shape: tuple[int, int, int] = (96, 96, 96), seed: int = 0) -> list[LayerData]:
    """Synthetic EM image and its dense ground-truth labels, 10 nm voxels."""
    from napari_connectome.samples import synthetic_em

    image, labels, voxel = synthetic_em(shape, seed)
    common: dict[str, Any] = {"scale": voxel, "units": "nm", "axis_labels": ("z", "y", "x")}
    meta = {"source": f"napari_connectome.samples.synthetic_em({shape}, seed={seed})"}
    return [
        (
            image,
            {**common, "name": "synthetic EM", "contrast_limits": (0, 255), "metadata": meta},
            "image",
        ),
        (labels, {**common, "name": "ground truth", "opacity": 0.4, "metadata": meta}, "labels"),
    ]


def fib25_demo_sample() -> list[LayerData]:
    """The FIB-25 crop shipped in the package: EM and its ground-truth bodies, CC-BY attributed."""
    from napari_connectome.samples import fib25_demo_crop

    crop = fib25_demo_crop()
    z, y, x = crop.origin_zyx
    meta = {
        "source": crop.source,
        "origin_zyx": list(crop.origin_zyx),
        "attribution": crop.attribution,
    }
    common: dict[str, Any] = {
        "scale": crop.voxel_size_nm,
        "units": "nm",
        "axis_labels": ("z", "y", "x"),
        "translate": tuple(o * v for o, v in zip(crop.origin_zyx, crop.voxel_size_nm)),
    }
    where = f"z {z}, y {y}, x {x}"
    return [
        (
            crop.image,
            {
                **common,
                "name": "FIB-25 EM",
                "contrast_limits": (0, 255),
                "metadata": {**meta, "description": f"training_sample2 raw from {where}"},
            },
            "image",
        ),
        (
            crop.labels,
            {
                **common,
                "name": "ground truth",
                "opacity": 0.4,
                "metadata": {**meta, "description": f"training_sample2 labels from {where}"},
            },
            "labels",
        ),
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
