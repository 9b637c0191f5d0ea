"""Reading a region graph: what opening costs and what each query reads.

Opening reads ``region_graph.json`` and the sorted fragment id column (8 bytes per fragment), so
a row can be found for any id. Everything else is read per query, only the stored chunks that
hold the asked rows: the statistics of some fragments, the edges incident to them (through the
CSR ``adjacency``), the digest of one chunk.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError
from napari_connectome.graph import kernels
from napari_connectome.graph.layout import (
    ADJACENCY,
    CHUNKS,
    EDGES,
    FORMAT,
    FORMAT_VERSION,
    FRAGMENTS,
    META,
    PASS,
    read_json,
)


class RegionGraph:
    """A complete region graph folder, opened read-only."""

    def __init__(self, path: Path | str, meta: dict[str, Any], store: Any = None) -> None:
        self.path = path
        self.meta = meta
        self._arrays: dict[str, Any] = {}
        self._store = store  # a remote (SFTP) zarr store and the graph's path in it, or None

    @classmethod
    def open(cls, path: str | os.PathLike) -> RegionGraph:
        """Open ``path`` (a folder, or ``ssh://PROFILE/.../region_graph`` on a cluster, read on
        demand over SFTP); refuses one that is not a finished region graph of a known format."""
        text = os.fspath(path)
        if text.startswith("ssh://"):
            return cls._open_remote(text)
        path = Path(path)
        meta = read_json(path / META)
        cls._check_meta(path, meta, (path / PASS).is_file())
        graph = cls(path, meta)
        if len(graph.fragment_ids) != meta["n_fragments"]:
            raise UserInputError(f"{path} is damaged: its fragment column does not match {META}")
        return graph

    @classmethod
    def _open_remote(cls, url: str) -> RegionGraph:
        """A job's graph beside its output on the cluster: metadata now, columns per query."""
        import json

        from napari_connectome.volumes.remote import open_store, parse_ssh_url

        loc = parse_ssh_url(url)
        store = open_store(loc)
        prefix = loc.inner.strip("/")
        raw = store.read_file(f"{prefix}/{META}".lstrip("/"))
        try:
            meta = json.loads(raw) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        passed = store.read_file(f"{prefix}/{PASS}".lstrip("/")) is not None
        cls._check_meta(url, meta, passed)
        graph = cls(url, meta, store=(store, prefix))
        if len(graph.fragment_ids) != meta["n_fragments"]:
            raise UserInputError(f"{url} is damaged: its fragment column does not match {META}")
        return graph

    @staticmethod
    def _check_meta(path: Any, meta: dict | None, unfinished_pass: bool) -> None:
        if meta is None and unfinished_pass:
            raise UserInputError(
                f"{path} holds an unfinished region graph pass: run the same "
                "`napari-connectome graph` command (or compute_region_graph call) again to "
                "finish it"
            )
        if meta is None:
            raise UserInputError(
                f"{path} is not a region graph (no readable {META}); compute one with "
                "`napari-connectome graph SEG DEST`"
            )
        if meta.get("format") != FORMAT:
            raise UserInputError(
                f"{path}/{META} is not a region graph (format {meta.get('format')!r})"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserInputError(
                f"{path} is a region graph of format version {meta.get('format_version')}, this "
                f"napari-connectome reads version {FORMAT_VERSION}: update napari-connectome or "
                "compute the graph again"
            )
        if meta.get("complete") is not True:
            raise UserInputError(
                f"{path} holds an unfinished region graph pass: run the same "
                "`napari-connectome graph` command again to finish it"
            )

    def _array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            import zarr

            try:
                if self._store is not None:
                    store, prefix = self._store
                    arr = zarr.open_array(store=store, path=f"{prefix}/{name}".strip("/"), mode="r")
                else:
                    arr = zarr.open_array(str(Path(self.path) / name), mode="r")
            except (FileNotFoundError, KeyError, ValueError) as exc:
                raise UserInputError(
                    f"{self.path} is damaged: {name} is missing ({exc}); compute it again"
                ) from None
            self._arrays[name] = arr
        return arr

    # ---- what the whole volume is -------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["shape"])

    @property
    def n_fragments(self) -> int:
        return int(self.meta["n_fragments"])

    @property
    def n_edges(self) -> int:
        return int(self.meta["n_edges"])

    @cached_property
    def fragment_ids(self) -> np.ndarray:
        """Every fragment id, sorted (uint64)."""
        return np.asarray(self._array(f"{FRAGMENTS}/id")[:], np.uint64)

    def rows_of(self, ids: Any) -> np.ndarray:
        """Row of each id in ``fragment_ids`` (-1 for ids the volume does not hold)."""
        ids = np.asarray(ids, np.uint64).ravel()
        frag = self.fragment_ids
        rows = np.searchsorted(frag, ids).astype(np.int64)
        ok = rows < len(frag)
        ok[ok] = frag[rows[ok]] == ids[ok]
        rows[~ok] = -1
        return rows

    # ---- per-fragment queries -----------------------------------------------------------

    def _rows(self, rows: Any) -> np.ndarray:
        rows = np.asarray(rows, np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_fragments):
            raise IndexError(f"fragment rows must lie in 0..{self.n_fragments - 1}")
        return rows

    def stats(self, rows: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(voxel counts int64, lo int64 (n, 3), hi int64 (n, 3), exclusive) of these rows."""
        rows = self._rows(rows)
        if len(rows) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64)
        uniq, inv = np.unique(rows, return_inverse=True)
        count = self._array(f"{FRAGMENTS}/count").get_orthogonal_selection(uniq)
        lo = self._array(f"{FRAGMENTS}/lo").get_orthogonal_selection((uniq, slice(None)))
        hi = self._array(f"{FRAGMENTS}/hi").get_orthogonal_selection((uniq, slice(None)))
        return (
            np.asarray(count, np.int64)[inv],
            np.asarray(lo, np.int64)[inv],
            np.asarray(hi, np.int64)[inv],
        )

    def edge_indices(self, rows: Any) -> np.ndarray:
        """Sorted indices of every edge incident to these rows (reads their adjacency slices)."""
        rows = np.unique(self._rows(rows))
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        ends = np.unique(np.concatenate([rows, rows + 1]))
        bounds = np.asarray(self._array(f"{ADJACENCY}/indptr").get_orthogonal_selection(ends))
        pos = np.searchsorted(ends, rows)
        starts = bounds[pos]
        stops = bounds[np.searchsorted(ends, rows + 1)]
        lens = stops - starts
        total = int(lens.sum())
        if total == 0:
            return np.zeros(0, np.int64)
        offsets = np.repeat(starts - np.cumsum(np.r_[0, lens[:-1]]), lens) + np.arange(total)
        edge = np.asarray(self._array(f"{ADJACENCY}/edge").get_orthogonal_selection(offsets))
        return np.unique(edge).astype(np.int64)

    def edges_of(self, rows: Any) -> dict[str, np.ndarray]:
        """Every edge incident to these rows: ``u``, ``v``, ``area``, ``weight`` and ``index``
        (the edge's position in ``edges/``), sorted by (u, v)."""
        idx = self.edge_indices(rows)
        out = kernels.empty_edges()
        if len(idx):
            for key in kernels.EDGE_KEYS:
                out[key] = np.asarray(self._array(f"{EDGES}/{key}").get_orthogonal_selection(idx))
        out["index"] = idx
        return out

    # ---- chunks ------------------------------------------------------------------------

    def chunk_digest(self, index: Any) -> bytes | None:
        """Digest of the level-0 chunk at this chunk-grid index, None when it holds only
        background (see :func:`napari_connectome.graph.chunk_digest_of`)."""
        index = tuple(int(i) for i in index)
        if not bool(self._array(f"{CHUNKS}/present")[index]):
            return None
        return bytes(np.asarray(self._array(f"{CHUNKS}/digest")[index], np.uint8))

    def check_source(self, labels: Any, samples: int = 9) -> None:
        """Refuse ``labels`` unless it has this graph's shape, dtype and chunks and a spread-out
        sample of its chunks (grid corners and centre) has the digests stored here."""
        from napari_connectome.graph.sources import as_source

        src = as_source(labels, "labels")
        geometry = (list(src.shape), str(src.dtype), list(src.chunks))
        want = (self.meta["shape"], self.meta["dtype"], self.meta["chunks"])
        if geometry != tuple(want):
            raise UserInputError(
                f"{src.text} (shape, dtype, chunks {geometry}) is not the segmentation the region "
                f"graph {self.path} was computed from ({list(want)}): compute its own graph"
            )
        grid = src.grid
        picks = {
            tuple(g - 1 if bit else 0 for g, bit in zip(grid, bits)) for bits in np.ndindex(2, 2, 2)
        }
        picks.add(tuple(g // 2 for g in grid))
        for c in sorted(picks)[:samples]:
            sl = tuple(
                slice(i * s, min((i + 1) * s, n)) for i, s, n in zip(c, src.chunks, src.shape)
            )
            if kernels.chunk_digest_of(src.reader.read(sl)) != self.chunk_digest(c):
                raise UserInputError(
                    f"chunk {list(c)} of {src.text} changed since the region graph {self.path} "
                    "was computed: compute the graph again"
                )
