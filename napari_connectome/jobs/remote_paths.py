"""Checking the names a job's files give to other files, before they name a file on the desk.

``stream`` copies files whose names it reads from files on the cluster: the chunk of a
``progress.jsonl`` line, the dataset paths of the output's ``zarr.json``. Anyone who can write the
job's output folder writes those names, so none is trusted: a chunk must be a key of the output's
own level-0 chunk grid (parsed strictly against the array's metadata: prefix, separator, integer
indices inside the grid, nothing else), a dataset path must be a plain relative name, and every
local target is resolved (symlinks too) and must stay inside the cache; every remote source must
stay inside the job's output folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from napari_connectome.errors import UserInputError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_INDEX = re.compile(r"^(0|[1-9][0-9]{0,17})$")
MAX_DATASET_PARTS = 4


class UntrustedPath(UserInputError):
    """A name from a file on the cluster that would reach outside the folder it must stay in."""


def dataset_path(value: object) -> str:
    """A multiscales ``datasets[].path`` that is a plain relative name (``0``, ``s1``, ``a/b``)."""
    parts = value.split("/") if isinstance(value, str) else []
    if (
        not parts
        or len(parts) > MAX_DATASET_PARTS
        or any(p in (".", "..") or not _NAME.match(p) for p in parts)
    ):
        raise UntrustedPath(
            f"the job output's zarr.json names dataset path {value!r}, which is not a plain "
            "relative name (letters, digits, '_', '-', '.'): the output was not written by "
            "napari-connectome or has been tampered with; nothing was copied"
        )
    return value


@dataclass(frozen=True)
class ChunkGrid:
    """The stored-object grid of one zarr v3 array, read from its ``zarr.json``."""

    grid: tuple[int, ...]
    prefix: str  # "c/" or "c." (default encoding), "" (v2 encoding)
    separator: str

    @classmethod
    def from_metadata(cls, data: bytes | str, where: str) -> ChunkGrid:
        def bad(why: str) -> UntrustedPath:
            return UntrustedPath(
                f"{where} is not the zarr v3 array metadata of a job output ({why}): choose "
                "another job or a new cache folder"
            )

        try:
            meta = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad("not JSON") from None
        if not isinstance(meta, dict) or meta.get("node_type") != "array":
            raise bad("not an array")
        shape = meta.get("shape")
        grid = meta.get("chunk_grid") or {}
        chunks = (grid.get("configuration") or {}).get("chunk_shape")
        if (
            grid.get("name") != "regular"
            or not isinstance(shape, list)
            or not isinstance(chunks, list)
            or len(shape) != len(chunks)
            or not all(type(s) is int and s >= 0 for s in shape)
            or not all(type(c) is int and c > 0 for c in chunks)
        ):
            raise bad("no regular chunk grid")
        enc = meta.get("chunk_key_encoding") or {"name": "default"}
        name = enc.get("name") if isinstance(enc, dict) else None
        sep = ((enc.get("configuration") or {}) if isinstance(enc, dict) else {}).get(
            "separator", "/" if name == "default" else "."
        )
        if name not in ("default", "v2") or sep not in ("/", "."):
            raise bad(f"unsupported chunk key encoding {enc!r}")
        from napari_connectome.volumes.box import grid_shape

        return cls(grid_shape(shape, chunks), f"c{sep}" if name == "default" else "", sep)

    def encode(self, index: tuple[int, ...]) -> str:
        if not index:
            return "c" if self.prefix else "0"
        return self.prefix + self.separator.join(map(str, index))

    def chunk_keys(self) -> Iterator[str]:
        from napari_connectome.volumes.box import chunk_indices

        for index in chunk_indices(self.grid):
            yield self.encode(index)

    def parse(self, key: object) -> tuple[int, ...] | None:
        """The chunk index ``key`` names, or None unless it is exactly a key of this grid."""
        if not isinstance(key, str) or not key.startswith(self.prefix) or not self.grid:
            return None
        parts = key[len(self.prefix) :].split(self.separator)
        if len(parts) != len(self.grid) or not all(_INDEX.match(p) for p in parts):
            return None
        index = tuple(int(p) for p in parts)
        if any(i >= n for i, n in zip(index, self.grid)) or self.encode(index) != key:
            return None
        return index


def _relative(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise UntrustedPath(f"{rel!r} is not a relative path inside the job output")
    if "\\" in rel:
        raise UntrustedPath(f"{rel!r} holds a backslash")
    return path


def local_inside(root: Path, rel: str) -> Path:
    """``root / rel`` after checking that it, with every symlink resolved, stays inside ``root``."""
    target = root.joinpath(*_relative(rel).parts)
    real_root = Path(os.path.realpath(root))
    if not Path(os.path.realpath(target)).is_relative_to(real_root):
        raise UntrustedPath(
            f"{target} leads outside the stream cache {root} (a symlink?): refusing to write "
            "there; remove the link or use a new cache folder"
        )
    return target


def remote_join(root: str, rel: str) -> str:
    """``root/rel`` on the machine of the job, ``rel`` checked to be a plain relative path."""
    return str(PurePosixPath(root, _relative(rel)))


def remote_is_inside(real_root: str, real_path: str) -> bool:
    return PurePosixPath(real_path).is_relative_to(PurePosixPath(real_root))
