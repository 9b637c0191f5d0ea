"""argparse ``type=`` functions shared by every command.

Why one place: a number a user types is checked the same way everywhere, by argparse, before
anything is opened or written (argparse prints the usage line and exits 2). Each refusal says the
range and why it is the range, so ``--chunks 0`` or ``--threads -1`` never silently becomes
something else.
"""

from __future__ import annotations

import argparse
import math

# A chunk is one file and is read whole: below 8 voxels per edge a volume turns into millions of
# tiny files (64^3 voxels at --chunks 1 are 262,144 files); beyond 4096 one chunk of uint8 is
# 64 GiB, more than a machine holds in memory and than zarr's codecs compress in one buffer.
MIN_CHUNK = 8
MAX_CHUNK = 4096
# More CPU threads than any machine has only slows torch down (each thread spins on a core).
MAX_THREADS = 1024


def _number(text: str, kind: type, what: str) -> float | int:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, steps, sizes)."""
    value = int(_number(text, int, "an integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (e.g. a minimum size, where 0 means none)."""
    value = int(_number(text, int, "an integer"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def finite_float(text: str) -> float:
    """Any real number except NaN and infinity (a NaN passes every ``<`` check silently)."""
    value = float(_number(text, float, "a number"))
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, not NaN or infinity")
    return value


def positive_finite_float(text: str) -> float:
    """A finite number > 0 (voxel sizes, a normalisation stddev, a learning rate)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def probability(text: str) -> float:
    """A finite number in [0, 1] (FFN thresholds and activations are probabilities)."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must lie between 0 and 1 (a probability)")
    return value


def thread_count(text: str) -> int:
    """CPU threads for torch: 1 to :data:`MAX_THREADS`."""
    value = int(_number(text, int, "an integer"))
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"{value} threads: give 1 to {MAX_THREADS} (about the number of CPU cores to use)"
        )
    return value


def chunk_edge(text: str) -> int:
    """A storage chunk edge in voxels: :data:`MIN_CHUNK` to :data:`MAX_CHUNK` (see there why)."""
    value = int(_number(text, int, "an integer"))
    if value < MIN_CHUNK:
        raise argparse.ArgumentTypeError(
            f"{value} voxels is too small a chunk: each chunk is one file, so give at least "
            f"{MIN_CHUNK} (64 is a good default)"
        )
    if value > MAX_CHUNK:
        raise argparse.ArgumentTypeError(
            f"{value} voxels is too large a chunk: a chunk is read whole into memory, so give at "
            f"most {MAX_CHUNK} (64 to 512 is usual)"
        )
    return value


# Beyond these a chunking cannot be meant: each chunk is one file (a file system slows down long
# before 100 million files), and each is read and written whole (a 1 GiB chunk needs that much
# memory per worker thread, several times over while it is compressed).
MAX_CHUNK_FILES = 100_000_000
MAX_CHUNK_BYTES = 2**30


def check_chunk_grid(shape: tuple[int, ...], itemsize: int, chunk: int, what: str) -> None:
    """Refuse a chunk edge that makes too many files or too large chunks for a volume of
    ``shape`` (spatial axes, voxels) and ``itemsize`` bytes per voxel."""
    from napari_connectome.errors import UserInputError

    edges = [min(chunk, int(s)) for s in shape]
    files = math.prod(-(-int(s) // e) for s, e in zip(shape, edges))
    size = math.prod(edges) * itemsize
    if files > MAX_CHUNK_FILES:
        raise UserInputError(
            f"{what}: chunks of {chunk} voxels cut a volume of {'x'.join(map(str, shape))} into "
            f"{files:,} files (at most {MAX_CHUNK_FILES:,} make sense); choose a larger chunk"
        )
    if size > MAX_CHUNK_BYTES:
        raise UserInputError(
            f"{what}: chunks of {chunk} voxels are {size / 2**30:.1f} GiB each, and a chunk is "
            f"read and written whole (at most {MAX_CHUNK_BYTES // 2**30} GiB make sense); choose "
            "a smaller chunk"
        )
