"""Sample volumes: a seeded synthetic EM-like volume with dense ground truth, and real FIB-25.

The synthetic volume lets tests and benchmarks run FFN and proofreading on something that looks
like neuropil (packed neurites, cell bodies and boutons separated by dark membranes) without any
download, in a fraction of a second. Real FIB-25 comes two ways: a small crop shipped in the
package (the demo's volume: real EM with its ground truth, offline, from the half of
training_sample2 the default model never saw), and the whole training_sample2 volume, fetched with
pooch and checked against its sha256, so a corrupt or substituted file is never used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlparse

import numpy as np
from scipy import ndimage

from napari_connectome.errors import UserInputError

__all__ = [
    "FIB25_ATTRIBUTION",
    "FIB25_DEMO_CROP",
    "FIB25_FILENAME",
    "FIB25_SHA256",
    "FIB25Crop",
    "SyntheticEM",
    "fetch_fib25",
    "fib25_demo_crop",
    "synthetic_em",
]


class SyntheticEM(NamedTuple):
    """A synthetic volume: ``image`` uint8 zyx, dense ``labels`` uint64 1..n, voxel size in nm."""

    image: np.ndarray
    labels: np.ndarray
    voxel_size_nm: tuple[float, float, float]


def _random_curve(
    rng: np.random.Generator, shape: np.ndarray, step: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """Points along a smooth random 3D curve crossing the volume, and a smoothly varying radius."""
    n = int(2.5 * shape.max() / step)
    start = rng.uniform(0.15, 0.85, 3) * shape
    # A direction that drifts smoothly: integrate low-pass filtered noise, then renormalise.
    heading = rng.normal(size=3)
    drift = ndimage.gaussian_filter1d(rng.normal(size=(n, 3)), sigma=8, axis=0) * 0.6
    dirs = heading / np.linalg.norm(heading) + np.cumsum(drift, axis=0) * 0.15
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pts = np.cumsum(dirs * step, axis=0)
    pts += start - pts[n // 2]  # the curve passes through ``start`` at its middle
    base = rng.uniform(2.5, 5.5)
    wobble = ndimage.gaussian_filter1d(rng.normal(size=n), sigma=10)
    radius = base * (1.0 + 2.0 * wobble).clip(0.6, 1.6)
    return pts, radius


def synthetic_em(
    shape: tuple[int, int, int] = (96, 96, 96),
    seed: int = 0,
    *,
    n_neurites: int | None = None,
    n_blobs: int | None = None,
    noise: float = 8.0,
    membrane_width: int = 2,
    voxel_size_nm: tuple[float, float, float] = (10.0, 10.0, 10.0),
) -> SyntheticEM:
    """Build a deterministic EM-like volume and its dense ground truth.

    Neurites are random smooth tubes of varying radius, blobs are cell bodies and boutons; every
    voxel belongs to its nearest object (so the labels are dense like real neuropil ground truth),
    object boundaries are dark membranes, and the inside carries mitochondria and vesicle specks.
    The image is blurred and noisy like FIB-SEM. The same ``seed`` and arguments give the same
    arrays.
    """
    shape_arr = np.asarray(shape, dtype=int)
    if membrane_width < 1:
        raise UserInputError(f"membrane_width must be >= 1 voxel, got {membrane_width}")
    if shape_arr.shape != (3,) or (shape_arr < 16).any():
        raise UserInputError(
            f"synthetic volume shape must be three sizes >= 16, got {tuple(shape)}"
        )
    rng = np.random.default_rng(seed)
    # Tubes cross the whole volume, so their number grows with the cross-section, not the volume.
    scale = (float(np.prod(shape_arr)) / 96**3) ** (2 / 3)
    n_neurites = n_neurites if n_neurites is not None else max(4, round(26 * scale))
    n_blobs = n_blobs if n_blobs is not None else max(2, round(6 * scale))

    # Skeleton points (curve samples and blob centres) with their radius, owning object and a
    # "mitochondrion" flag; one EDT from all points then paints every object at once.
    points, radii, owner, mito = [], [], [], []
    for obj in range(1, n_neurites + 1):
        pts, rad = _random_curve(rng, shape_arr.astype(float))
        flag = np.zeros(len(pts), bool)
        for _ in range(rng.integers(1, 5)):  # a few elongated mitochondria in thicker stretches
            i = rng.integers(0, len(pts))
            if rad[i] >= 3.5:
                flag[i : i + rng.integers(8, 24)] = True
        (
            points.append(pts),
            radii.append(rad),
            owner.append(np.full(len(pts), obj)),
            mito.append(flag),
        )
    n_somata = max(1, n_blobs // 3)
    centres = rng.uniform(0, 1, (n_blobs, 3)) * shape_arr
    blob_r = np.concatenate([rng.uniform(12, 18, n_somata), rng.uniform(5, 9, n_blobs - n_somata)])
    points.append(centres), radii.append(blob_r), mito.append(np.zeros(n_blobs, bool))
    owner.append(np.arange(n_neurites + 1, n_neurites + n_blobs + 1))
    points_a = np.concatenate(points)
    radii_a, owner_a, mito_a = map(np.concatenate, (radii, owner, mito))

    idx = np.round(points_a).astype(int)
    inside = ((idx >= 0) & (idx < shape_arr)).all(axis=1)
    idx, radii_a, owner_a, mito_a = idx[inside], radii_a[inside], owner_a[inside], mito_a[inside]
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[tuple(idx.T)] = np.arange(1, len(idx) + 1)  # later points win a shared voxel
    present = np.zeros(len(idx) + 1, bool)
    present[seeds.ravel()] = True

    dist, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    point_of = seeds[tuple(nearest)] - 1
    del nearest
    core = dist <= radii_a[point_of]
    object_of_point = owner_a
    labels = np.where(core, object_of_point[point_of], 0)
    is_mito = core & mito_a[point_of] & (dist <= 0.55 * radii_a[point_of])

    # Dense ground truth: voxels outside every painted object join the nearest one.
    fill = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    labels = labels[tuple(fill)]
    del fill
    # Renumber 1..n in order of appearance so ids do not depend on objects that fell outside.
    _, labels = np.unique(labels, return_inverse=True)
    labels = (labels.reshape(shape) + 1).astype(np.uint64)
    n_objects = int(labels.max())

    # Image: per-object cytoplasm brightness, a dark membrane where a face-neighbour differs,
    # darker mitochondria, vesicle specks in boutons, then blur, slow shading and noise.
    brightness = rng.uniform(125, 175, n_objects + 1)
    image = brightness[labels]
    membrane = np.zeros(shape, bool)
    for ax in range(3):
        diff = np.diff(labels, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        membrane[tuple(lo)] |= diff
        membrane[tuple(hi)] |= diff
    if membrane_width > 1:
        membrane = ndimage.binary_dilation(membrane, iterations=membrane_width - 1)
    image[membrane] = rng.uniform(35, 60)
    image[is_mito & ~membrane] = 80.0
    bouton_ids = np.unique(
        labels[tuple(np.round(centres[n_somata:]).astype(int).clip(0, shape_arr - 1).T)]
    )
    in_bouton = np.isin(labels, bouton_ids) & ~membrane
    specks = in_bouton & (rng.random(shape) < 0.04)
    image[specks] = 30.0
    image = ndimage.gaussian_filter(image, sigma=0.8)
    shading = ndimage.gaussian_filter(rng.normal(size=tuple(shape_arr // 8 + 1)), 1.0)
    shading = ndimage.zoom(shading, shape_arr / np.asarray(shading.shape), order=1)
    image += 25.0 * shading[: shape[0], : shape[1], : shape[2]]
    image += rng.normal(0.0, noise, shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return SyntheticEM(image, labels, tuple(float(v) for v in voxel_size_nm))


# --------------------------------------------------------------------------------------------------
# FIB-25 training_sample2
# --------------------------------------------------------------------------------------------------

FIB25_FILENAME = "fib25_training_sample2.h5"
#: sha256 of the converted file (datasets raw/labels/fragments, see docs/tutorial.md).
FIB25_SHA256 = "3817b587c6ad7744777aee5f9a7140dc694ebdb368b0b31d0090aabbb30fd774"
FIB25_ATTRIBUTION = "FIB-25 data, Janelia FlyEM (Takemura et al. 2015), CC-BY"
#: Where the converted file is hosted; the canonical upstream is janelia-flyem/neuroproof_examples
#: (commit ce839e17, training_sample2/grayscale_maps/iso.2600-2849.png and groundtruth.h5).
DEFAULT_DATA_URL = (
    "https://github.com/napari-connectome/napari-connectome/releases/download/data-v1/"
)
DATA_URL_ENV = "NAPARI_CONNECTOME_DATA_URL"
CACHE_ENV = "NAPARI_CONNECTOME_CACHE"


def _copy_file_url(url: str, output_file: str | Path, pooch_obj: object) -> None:
    """A pooch downloader for ``file://`` URLs: mirrors on a shared filesystem, offline tests."""
    source = Path(unquote(urlparse(url).path))
    if not source.is_file():
        raise UserInputError(f"FIB-25 sample not found at {url}; check {DATA_URL_ENV} or base_url")
    shutil.copyfile(source, output_file)


def fetch_fib25(
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    progressbar: bool = False,
) -> Path:
    """Download (once) and verify the FIB-25 training_sample2 crop; return the local HDF5 path.

    The file holds ``raw`` (uint8), ``labels`` and ``fragments`` (uint64), 250^3 voxels at 10 nm.
    The download is checked against :data:`FIB25_SHA256`; a file with another hash is rejected.
    ``base_url`` (or ``$NAPARI_CONNECTOME_DATA_URL``) may be ``https://``, ``http://`` or ``file://``;
    ``cache_dir`` (or ``$NAPARI_CONNECTOME_CACHE``) defaults to the user cache directory.
    """
    import pooch

    base = base_url or os.environ.get(DATA_URL_ENV) or DEFAULT_DATA_URL
    if not base.endswith("/"):
        base += "/"
    cache = cache_dir or os.environ.get(CACHE_ENV) or pooch.os_cache("napari-connectome")
    fetcher = pooch.create(
        path=cache,
        base_url=base,
        registry={FIB25_FILENAME: f"sha256:{FIB25_SHA256}"},
        retry_if_failed=1,
    )
    downloader = _copy_file_url if base.startswith("file://") else None
    if downloader is None:
        downloader = pooch.HTTPDownloader(progressbar=progressbar)
    try:
        return Path(fetcher.fetch(FIB25_FILENAME, downloader=downloader))
    except ValueError as exc:  # pooch raises ValueError on a hash mismatch
        if "hash" in str(exc).lower():
            raise UserInputError(
                f"the FIB-25 sample downloaded from {base} does not match its sha256 ({exc}); "
                "the source is corrupt or not the expected file, so it was discarded"
            ) from exc
        raise
    except OSError as exc:
        raise UserInputError(
            f"could not download the FIB-25 sample from {base}{FIB25_FILENAME} ({exc}); "
            f"check the network or set {DATA_URL_ENV} to a mirror"
        ) from exc


# --------------------------------------------------------------------------------------------------
# the shipped FIB-25 crop (the demo's volume)
# --------------------------------------------------------------------------------------------------

#: A crop of training_sample2 in the package (see resources/README.md for how it was cut).
FIB25_DEMO_CROP = Path(__file__).resolve().parent / "resources" / "samples" / "fib25-demo-crop.npz"


class FIB25Crop(NamedTuple):
    """Real FIB-25 EM (``image`` uint8 zyx) with its dense ground-truth bodies (``labels``)."""

    image: np.ndarray
    labels: np.ndarray
    voxel_size_nm: tuple[float, float, float]
    origin_zyx: tuple[int, int, int]  # where the crop starts in training_sample2
    source: str
    attribution: str


def fib25_demo_crop(path: str | Path | None = None) -> FIB25Crop:
    """The FIB-25 crop shipped in the package (no download): EM, ground truth, where it came from.

    It lies in the z >= 125 half of training_sample2, which the default model ``fib25-small``
    was not trained on, so the demo shows the model on EM it has never seen. The file is a
    compressed ``.npz`` read without pickle.
    """
    path = Path(path) if path is not None else FIB25_DEMO_CROP
    try:
        with np.load(path, allow_pickle=False) as f:
            image, labels = f["raw"], f["labels"]
            voxel = tuple(float(v) for v in f["resolution_nm_zyx"])
            origin = tuple(int(v) for v in f["origin_zyx"])
            source, attribution = str(f["source"]), str(f["attribution"])
    except (OSError, KeyError, ValueError) as exc:
        raise UserInputError(
            f"the FIB-25 demo crop {path} is missing or damaged ({exc}); "
            "reinstall napari-connectome"
        ) from exc
    if image.dtype != np.uint8 or image.ndim != 3 or labels.shape != image.shape:
        raise UserInputError(
            f"the FIB-25 demo crop {path} holds raw {image.dtype}{image.shape} and labels "
            f"{labels.shape}; expected uint8 EM and labels of the same 3D shape"
        )
    return FIB25Crop(image, labels, voxel, origin, source, attribution)
