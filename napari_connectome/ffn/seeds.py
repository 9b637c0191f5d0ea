"""Seed policies: where objects start (google/ffn ``seed.py``).

A policy returns an (N, 3) int array of z, y, x seed points in the order they are tried. The canvas
later skips seeds that are too close to the border, inside an existing segment or masked, as
google/ffn does, so the policies only choose candidates.
"""

from __future__ import annotations

import numpy as np

from napari_connectome.errors import UserInputError


def peaks_seeds(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """google/ffn ``PolicyPeaks``: local maxima of the distance to image edges, sorted ascending.

    Edges are voxels whose Sobel gradient magnitude exceeds its Gaussian-smoothed (sigma 49/6)
    neighbourhood; seeds are the maxima (min distance 3) of the Euclidean distance to those edges.
    The tiny noise that breaks ties uses ``RandomState(42)``, so the seeds equal Google's exactly.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max

    img = np.asarray(image, dtype=np.float32)
    edges = ndimage.generic_gradient_magnitude(img, ndimage.sobel)
    thresh = np.zeros(edges.shape, dtype=np.float32)
    ndimage.gaussian_filter(edges, 49.0 / 6.0, output=thresh, mode="reflect")
    filt_edges = edges > thresh
    del edges, thresh
    if mask is not None:
        filt_edges[np.asarray(mask, dtype=bool)] = True
    dt = ndimage.distance_transform_edt(~filt_edges).astype(np.float32)
    del filt_edges
    # google seeds numpy's global generator with 42 and draws one uniform per voxel; the legacy
    # RandomState gives the identical stream without touching global state.
    jitter = np.random.RandomState(42).random_sample(dt.shape)
    jitter *= 1e-4
    jitter += dt
    del dt
    idxs = peak_local_max(jitter, min_distance=3, threshold_abs=0, threshold_rel=0)
    if len(idxs) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    order = np.lexsort((idxs[:, 2], idxs[:, 1], idxs[:, 0]))
    return idxs[order].astype(np.int64)


def grid_seeds(
    shape: tuple[int, int, int], step: int = 16, offsets: tuple[int, ...] = (0, 8, 4, 12, 2, 10, 14)
) -> np.ndarray:
    """google/ffn ``PolicyGrid3d``: a regular grid with spacing ``step``, once per offset."""
    if step < 1:
        raise UserInputError(f"grid seed step must be >= 1, got {step}")
    out = []
    for off in offsets:
        axes = [np.arange(off, n, step) for n in shape]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        out.append(grid)
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), np.int64)


def policy_seeds(
    policy: str, image: np.ndarray, mask: np.ndarray | None, args: dict | None = None
) -> np.ndarray:
    """Seeds of the named policy ("peaks" or "grid") for ``image``."""
    args = dict(args or {})
    if policy == "peaks":
        return peaks_seeds(image, mask)
    if policy == "grid":
        if "offsets" in args:
            args["offsets"] = tuple(int(v) for v in args["offsets"])
        return grid_seeds(tuple(image.shape), **args)
    raise UserInputError(
        f"seed policy {policy!r} needs explicit seed points; pass seeds=[(z, y, x), ...] or --seed"
    )


def in_seed_order(seeds: np.ndarray, order: str = "forward") -> np.ndarray:
    """``seeds`` (N, 3) in ``order``: "forward" as the policy returned them, "reverse" last first.

    Reversing is google/ffn's way to get a second, independent run of the same policy: which
    object claims a contested voxel depends on which seed grows first
    (:mod:`napari_connectome.ffn.consensus` combines the two runs)."""
    if order == "forward":
        return seeds
    if order == "reverse":
        return np.ascontiguousarray(seeds[::-1])
    raise UserInputError(f"unknown seed order {order!r}; choose forward or reverse")


def check_points(
    points, shape: tuple[int, ...], margin: tuple[int, int, int], mask: np.ndarray | None
) -> np.ndarray:
    """Validate user seed points: inside the volume, with room for the FOV, not on the mask."""
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3) if len(points) else np.zeros((0, 3))
    for p in pts:
        if np.any(p < 0) or np.any(p >= np.asarray(shape)):
            raise UserInputError(
                f"seed {tuple(int(v) for v in p)} (z, y, x) lies outside the volume of shape "
                f"{tuple(shape)}; give a point inside it"
            )
        if np.any(p < np.asarray(margin)) or np.any(p + np.asarray(margin) >= np.asarray(shape)):
            raise UserInputError(
                f"seed {tuple(int(v) for v in p)} is closer to the volume border than half the "
                f"model's field of view {tuple(margin)}; pick a point further inside or a larger "
                "region"
            )
        if mask is not None and mask[tuple(p)]:
            raise UserInputError(
                f"seed {tuple(int(v) for v in p)} lies on the mask (excluded voxels); pick another"
            )
    return pts.astype(np.int64)
