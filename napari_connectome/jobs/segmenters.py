"""Block segmenters: the per-block step of a job, pluggable.

A block segmenter takes the image of one block's read region (write region plus context) and
returns labels of the same shape (uint64, 0 = background). Ids need not be consecutive; the pipeline
renumbers them. ``min_shape`` is the smallest region it can work on (the FFN field of view).

A segmenter may also offer ``segment_with_claim(image) -> (labels, claim)`` (claim: uint8 of the
image's shape, 255 x a probability; :mod:`napari_connectome.ffn.canvas`): FFN's does, and the job
then stores the claim beside its output as merge evidence for ``agglomerate``.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.jobs.spec import SegmenterSpec

Triple = tuple[int, int, int]


@runtime_checkable
class BlockSegmenter(Protocol):
    min_shape: Triple

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


class WatershedSegmenter:
    """Seeded watershed of the distance transform of ``image >= threshold``.

    Deterministic and model-free: cells are bright, membranes dark (as in EM after inversion, and
    in the synthetic test volumes). Seeds are the connected parts of the foreground deeper than
    ``seed_distance`` voxels, so touching cells joined by a thin bridge come apart.
    """

    min_shape: Triple = (1, 1, 1)

    def __init__(self, threshold: float = 128.0, seed_distance: float = 2.0):
        self.threshold = threshold
        self.seed_distance = seed_distance

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import cc3d
        from scipy import ndimage
        from skimage.segmentation import watershed

        fg = image >= self.threshold
        if not fg.any():
            return np.zeros(image.shape, np.uint64)
        dist = ndimage.distance_transform_edt(fg)
        markers = cc3d.connected_components(dist > self.seed_distance, connectivity=6)
        labels = watershed(-dist, markers.astype(np.int64), mask=fg)
        return labels.astype(np.uint64)


class FFNSegmenter:
    """Flood-filling network inference on the block (napari_connectome.ffn, Google's semantics);
    with ``oversegment``, the split consensus of the seed policy forward and reversed.

    The model is loaded once per worker process (the pipeline caches segmenters per job).
    """

    def __init__(self, spec: SegmenterSpec):
        from napari_connectome.ffn import checkpoint, zoo
        from napari_connectome.ffn.runner import worker_device

        self.spec = spec
        model_dir = zoo.default_model() if spec.model == "default" else spec.model
        self.device = worker_device(spec.device)
        self.model, self.config = checkpoint.load_model(model_dir, device=self.device)
        self.min_shape = tuple(int(v) for v in self.config.fov_size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.segment_with_claim(image)[0]

    def segment_with_claim(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels of the block and FFN's claim on them (the consensus's, with ``oversegment``)."""
        from napari_connectome.ffn.inference import segment_region
        from napari_connectome.ffn.options import options_for_model

        options = options_for_model(self.config, **self.spec.inference_options())
        if self.spec.oversegment is not None:
            from napari_connectome.ffn.runner import LockstepRunner
            from napari_connectome.ffn.segment_volume import oversegment_region

            runner = LockstepRunner(
                self.model, device=self.device, precision=self.spec.precision, batch=self.spec.batch
            )
            result, _ = oversegment_region(
                image,
                self.model,
                self.config,
                options,
                runner=runner,
                min_size=self.spec.oversegment.min_size,
                unmatched=self.spec.oversegment.unmatched,
            )
            return np.asarray(result.labels, dtype=np.uint64), result.claim
        result = segment_region(
            image,
            self.model,
            self.config,
            options,
            device=self.device,
            precision=self.spec.precision,
            batch=self.spec.batch,
        )
        return np.asarray(result.labels, dtype=np.uint64), result.claim


def check_device(device: str) -> None:
    """Refuse a CUDA device this machine does not have, before any output exists (torch would
    stop a worker with an AssertionError after the output was created)."""
    if device in ("auto", "cpu"):
        return
    import torch

    if not torch.cuda.is_available():
        raise UserInputError(
            f"segmenter.device is {device!r} but PyTorch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}); use device: auto (a GPU where there is one) or cpu"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UserInputError(
            f"segmenter.device is {device!r} but this machine has {torch.cuda.device_count()} "
            "CUDA GPU(s); use device: auto (worker k takes GPU k) or a smaller index"
        )


def make_segmenter(spec: SegmenterSpec) -> BlockSegmenter:
    if spec.kind == "watershed":
        return WatershedSegmenter(spec.threshold, spec.seed_distance)
    if spec.kind == "ffn":
        return FFNSegmenter(spec)
    module_name, _, attr = spec.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserInputError(
            f"segmenter.factory {spec.factory!r} cannot be imported: {exc}"
        ) from None
    seg = factory(**spec.options)
    if not isinstance(seg, BlockSegmenter):
        raise UserInputError(
            f"segmenter.factory {spec.factory!r} returned {type(seg).__name__}, which is not a "
            "block segmenter (needs min_shape and __call__(image) -> labels)"
        )
    return seg


def segmenter_min_shape(spec: SegmenterSpec) -> Triple:
    """The smallest region the segmenter works on, for spec checks before any output exists.

    FFN: the field of view from the model's ``config.json`` (or its zoo entry), so a check on a
    login node neither loads weights nor needs torch's devices. A plug-in factory is built once,
    since only the object it returns knows its ``min_shape``."""
    if spec.kind == "watershed":
        return WatershedSegmenter.min_shape
    if spec.kind == "ffn":
        from napari_connectome.ffn.zoo import field_of_view

        return tuple(int(v) for v in field_of_view(spec.model))
    return tuple(make_segmenter(spec).min_shape)


def stores_claim(spec: SegmenterSpec) -> bool:
    """Whether the segmenter gives an FFN claim (``segment_with_claim``), so that the job makes
    ``OUTPUT/ffn_claim`` for its blocks: FFN does, watershed does not; a plug-in is built once to
    ask, as for its ``min_shape``."""
    if spec.kind != "plugin":
        return spec.kind == "ffn"
    return callable(getattr(make_segmenter(spec), "segment_with_claim", None))
