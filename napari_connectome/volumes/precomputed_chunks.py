"""The chunk files of a neuroglancer precomputed scale, as they are on disk.

tensorstore's precomputed driver reads a chunk from the file the format names
(``KEY/x0-x1_y0-y1_z0-z1``) and reads a missing file as 0. Writers store more than that:
cloud-volume gzips chunks on a ``file://`` path by default and names them ``CHUNK.gz`` (also
``.br``, ``.zstd``, ``.xz``, ``.bz2``), and neuroglancer-scripts can nest them as
``KEY/x0-x1/y0-y1/z0-z1[.gz]``. Read blindly, such a volume opens with the right shape and every
voxel reads 0. So, before a scale is read, :func:`check_scale` looks at the names in its folder:

- names tensorstore finds (plain, on the info file's chunk grid): tensorstore reads the scale;
- compressed or nested names: :class:`ChunkFilesArray` reads each file, decompresses it, and lets
  tensorstore decode it (raw, jpeg, png, compressed_segmentation) from memory;
- names on no chunk grid of the info file, a compression we cannot undo, sharded files that are
  compressed or a layout that contradicts the info file: a :class:`UserInputError` that names the
  files, never zeros.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import lzma
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

# How many names of a scale folder are looked at (os.scandir is lazy: a folder of millions of
# chunks costs only these entries).
SCAN_LIMIT = 4096
_RANGE = r"(\d+)-(\d+)"
_FLAT = re.compile(rf"^{_RANGE}_{_RANGE}_{_RANGE}(?:\.([A-Za-z0-9]+))?$")
_PART = re.compile(rf"^{_RANGE}(?:\.([A-Za-z0-9]+))?$")
_SHARD = re.compile(r"^([0-9a-f]+)\.shard(?:\.([A-Za-z0-9]+))?$")
# file name suffixes of compressed chunk files (cloud-files' names) -> how to undo them
COMPRESSIONS = ("gz", "br", "zstd", "zst", "xz", "bz2")


def _brotli(data: bytes) -> bytes:
    try:
        import brotli
    except ImportError:
        raise UserInputError(
            "brotli-compressed chunk files (.br) need the brotli package: pip install brotli"
        ) from None
    return brotli.decompress(data)


def _zstd(data: bytes) -> bytes:
    try:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except ImportError:
        import numcodecs

        return bytes(numcodecs.Zstd().decode(data))


def decompress(data: bytes, suffix: str | None) -> bytes:
    if suffix is None:
        return data
    if suffix == "gz":
        return gzip.decompress(data)
    if suffix == "br":
        return _brotli(data)
    if suffix in ("zstd", "zst"):
        return _zstd(data)
    if suffix == "xz":
        return lzma.decompress(data)
    if suffix == "bz2":
        return bz2.decompress(data)
    raise ValueError(f"unknown compression .{suffix}")  # pragma: no cover (checked before)


@dataclass(frozen=True)
class ScaleFiles:
    """What the folder of one scale holds: ``layout`` is ``"plain"`` (tensorstore reads it),
    ``"files"`` (compressed or nested names: :class:`ChunkFilesArray`), ``"sharded"`` or
    ``"empty"`` (no chunk files: every voxel reads 0)."""

    layout: str
    examples: tuple[str, ...] = ()


def _grid(scale: dict) -> tuple[list[int], list[int], list[int]]:
    chunk = [int(v) for v in (scale.get("chunk_sizes") or [[0, 0, 0]])[0]]
    offset = [int(v) for v in scale.get("voxel_offset", [0, 0, 0])]
    size = [int(v) for v in scale["size"]]
    return chunk, offset, size


def _on_grid(bounds: list[int], scale: dict) -> bool:
    """Whether ``x0, x1, y0, y1, z0, z1`` is one chunk of the scale's grid."""
    chunk, offset, size = _grid(scale)
    for axis in range(3):
        lo, hi = bounds[2 * axis], bounds[2 * axis + 1]
        c, o, n = chunk[axis], offset[axis], size[axis]
        if c <= 0 or lo < o or lo >= o + n or (lo - o) % c or hi != min(lo + c, o + n):
            return False
    return True


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(itertools.islice(it, SCAN_LIMIT))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise UserInputError(
            f"{folder} is a file, but the precomputed info file names it as a scale folder; "
            "the volume is damaged: re-create or re-download it."
        ) from None


def _nested_names(folder: Path, first: os.DirEntry) -> list[str]:
    """A few chunk names of the nested layout ``x0-x1/y0-y1/z0-z1``, as ``x0-x1_y0-y1_z0-z1``."""
    names = []
    for y_dir in _scan(Path(first.path))[:4]:
        if y_dir.is_dir() and _PART.match(y_dir.name):
            for z_file in _scan(Path(y_dir.path))[:4]:
                names.append(f"{first.name}/{y_dir.name}/{z_file.name}")
    return names


def _split(name: str) -> tuple[list[int], str | None] | None:
    """Chunk bounds and compression suffix of a flat or nested chunk name, else None."""
    if "/" in name:
        parts = [_PART.match(p) for p in name.split("/")]
        if len(parts) != 3 or not all(parts) or any(p.group(3) for p in parts[:2]):
            return None
        bounds = [int(v) for p in parts for v in p.groups()[:2]]
        return bounds, parts[2].group(3)
    m = _FLAT.match(name)
    if m is None:
        return None
    return [int(v) for v in m.groups()[:6]], m.group(7)


def check_scale(root: Path, scale: dict, index: int) -> ScaleFiles:
    """Which reader can read the chunk files of scale ``index``; refuses files it cannot read."""
    key = str(scale.get("key", ""))
    folder = root / key
    entries = _scan(folder)
    sharded = isinstance(scale.get("sharding"), dict)
    where = f"scale {index} ('{key}') of {root}"
    chunk_like, shards, off_grid, unknown, nested = [], [], [], [], []
    for entry in entries:
        name = entry.name
        if entry.is_dir():
            if _PART.match(name):
                nested.extend(_nested_names(folder, entry))
            continue
        if _SHARD.match(name):
            shards.append(name)
            continue
        split = _split(name)
        if split is None:
            continue  # not a chunk name (a provenance file, an editor's backup, ...)
        bounds, suffix = split
        if suffix is not None and suffix.lower() not in COMPRESSIONS:
            unknown.append(name)
        elif not _on_grid(bounds, scale):
            off_grid.append(name)
        else:
            chunk_like.append(name)
    for name in nested:
        split = _split(name)
        if split is None:
            continue
        bounds, suffix = split
        if suffix is not None and suffix.lower() not in COMPRESSIONS:
            unknown.append(name)
        elif not _on_grid(bounds, scale):
            off_grid.append(name)
        else:
            chunk_like.append(name)
    if sharded:
        if chunk_like or off_grid:
            raise UserInputError(
                f"{where}: the info file says the scale is sharded, but {folder} holds unsharded "
                f"chunk files ({_few(chunk_like + off_grid)}); the info file does not describe "
                "these files: fix its 'sharding' entry or re-create the volume."
            )
        bad = [n for n in shards if _SHARD.match(n).group(2)]  # type: ignore[union-attr]
        if bad:
            raise UserInputError(
                f"{where}: shard files are compressed as whole files ({_few(bad)}); no reader "
                "looks inside them like that: decompress them (e.g. gunzip) so that they are "
                "named NUMBER.shard."
            )
        width = -(-int(scale["sharding"].get("shard_bits", 0)) // 4)
        wrong = [n for n in shards if len(n.split(".")[0]) != max(width, 1)]
        if wrong:
            raise UserInputError(
                f"{where}: shard files {_few(wrong)} are not named with the {max(width, 1)} hex "
                f"digits its shard_bits ({scale['sharding'].get('shard_bits', 0)}) give; the "
                "info file does not describe these files."
            )
        return ScaleFiles("sharded" if shards else "empty", tuple(shards[:3]))
    if shards:
        raise UserInputError(
            f"{where}: {folder} holds shard files ({_few(shards)}), but the info file gives no "
            "'sharding' for the scale; the info file does not describe these files: restore its "
            "'sharding' entry."
        )
    if unknown:
        raise UserInputError(
            f"{where}: chunk files {_few(unknown)} are compressed in a way napari-connectome "
            f"does not know (it reads .{', .'.join(COMPRESSIONS)} and uncompressed files); "
            "decompress them, or re-write the volume with cloud-volume's compress='gzip'."
        )
    if off_grid:
        chunk, offset, size = _grid(scale)
        raise UserInputError(
            f"{where}: chunk files {_few(off_grid)} do not lie on the chunk grid the info file "
            f"gives (chunk_sizes {chunk}, voxel_offset {offset}, size {size}), so they would "
            "read as 0; the info file does not describe these files: fix it or re-create the "
            "volume."
        )
    if not chunk_like:
        return ScaleFiles("empty")
    plain = all(_split(n)[1] is None and "/" not in n for n in chunk_like)  # type: ignore[index]
    return ScaleFiles("plain" if plain else "files", tuple(chunk_like[:3]))


def _few(names: list[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class ChunkFilesArray:
    """One precomputed scale read file by file: each chunk under a read is found under its plain,
    compressed (``.gz``, ``.br``, ...) or nested name, decompressed, and decoded by tensorstore
    from memory; a chunk without a file reads 0, as the format says.

    Shape and axes as the rest of the precomputed reader presents them: ``(z, y, x)`` for a
    single channel, ``(c, z, y, x)`` otherwise, the origin at the scale's ``voxel_offset``.
    """

    def __init__(self, root: Path, info: dict, index: int) -> None:
        self.root = Path(root)
        self.info = info
        self.index = index
        scale = info["scales"][index]
        self.key = str(scale.get("key", ""))
        self.chunk, self.offset, self.size = _grid(scale)
        self.channels = int(info.get("num_channels", 1))
        self.dtype = np.dtype(info["data_type"])
        spatial = tuple(reversed(self.size))
        chunks = tuple(reversed(self.chunk))
        self.single = self.channels == 1
        self.shape = spatial if self.single else (self.channels, *spatial)
        self.chunks = chunks if self.single else (self.channels, *chunks)
        self.ndim = len(self.shape)

    def _names(self, bounds: list[int]) -> list[tuple[str, str | None]]:
        x0, x1, y0, y1, z0, z1 = bounds
        flat = f"{x0}-{x1}_{y0}-{y1}_{z0}-{z1}"
        nested = f"{x0}-{x1}/{y0}-{y1}/{z0}-{z1}"
        out: list[tuple[str, str | None]] = []
        for name in (flat, nested):
            out.append((name, None))
            out.extend((f"{name}.{s}", s) for s in COMPRESSIONS)
        return out

    def _read_file(self, bounds: list[int]) -> tuple[str, bytes] | None:
        folder = self.root / self.key
        for name, suffix in self._names(bounds):
            path = folder / name
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                return str(path), decompress(data, suffix)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
                raise UserInputError(
                    f"chunk file {path} cannot be decompressed ({type(exc).__name__}: {exc}); "
                    "the file is damaged: re-copy or re-create it."
                ) from exc
            except Exception as exc:  # brotli.error, zstandard.ZstdError
                if isinstance(exc, UserInputError):
                    raise
                raise UserInputError(
                    f"chunk file {path} cannot be decompressed ({type(exc).__name__}: {exc}); "
                    "the file is damaged: re-copy or re-create it."
                ) from exc
        return None

    def __getitem__(self, key: Any) -> np.ndarray:
        import tensorstore as ts

        from napari_connectome.volumes.lazy import _normalise

        region = _normalise(key, self.shape)
        spatial = region if self.single else region[1:]  # z, y, x slices from the origin
        ranges = []
        for axis_zyx, sl in enumerate(spatial):
            axis = 2 - axis_zyx  # x, y, z index into the info's lists
            c = self.chunk[axis]
            if sl.stop <= sl.start:
                ranges.append(range(0))
            else:
                ranges.append(range(sl.start // c, (sl.stop - 1) // c + 1))
        context = ts.Context()
        kv = ts.KvStore.open({"driver": "memory"}, context=context).result()
        kv.write("info", json.dumps(self.info).encode()).result()
        files = []
        for iz, iy, ix in itertools.product(*ranges):
            bounds = []
            for axis, i in zip(range(3), (ix, iy, iz)):
                lo = self.offset[axis] + i * self.chunk[axis]
                bounds += [lo, min(lo + self.chunk[axis], self.offset[axis] + self.size[axis])]
            found = self._read_file(bounds)
            if found is None:
                continue
            path, data = found
            files.append(path)
            x0, x1, y0, y1, z0, z1 = bounds
            kv.write(f"{self.key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}", data).result()
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "memory"},
                "scale_index": self.index,
            },
            context=context,
            read=True,
        ).result()
        store = store[ts.d[:].translate_to[0]][ts.d[::-1].transpose[:]]
        if self.single:
            store = store[0]
        try:
            return np.asarray(store[key].read().result())
        except ValueError as exc:
            raise UserInputError(
                f"a chunk of {self.root} (scale '{self.key}') cannot be decoded ({exc}); files "
                f"read: {_few(files)}. The data is damaged: re-copy or re-create it."
            ) from exc
