"""Read TensorFlow TensorBundle checkpoints (``.index`` + ``.data-0000x-of-0000y``) without TF.

Why: Google's published FFN models are TF 1.x checkpoints, and TensorFlow is far too heavy a
run-time dependency for a napari plugin. The format is small enough to decode by hand:

* ``.index`` is a LevelDB-style SSTable (prefix-compressed key/value blocks, an index block, a
  48-byte footer ending in a magic number). Key ``""`` holds a ``BundleHeaderProto``; every other
  key is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape, shard id, byte offset,
  size, masked crc32c).
* ``.data-0000s-of-0000n`` shards hold the raw little-endian tensor bytes at those offsets.

The protobuf messages are decoded with a tiny varint reader (no protobuf dependency). The crc32c of
each tensor is checked when the ``google_crc32c`` package is importable (zarr depends on it; it is
C-accelerated, a pure numpy crc would cost more than reading the checkpoint), otherwise skipped.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from napari_connectome.errors import UserInputError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes crc

# tensorflow/core/framework/types.proto -> numpy dtype (TF writes little-endian on our platforms)
_TF_DTYPES: dict[int, str] = {
    1: "<f4",  # DT_FLOAT
    2: "<f8",  # DT_DOUBLE
    3: "<i4",  # DT_INT32
    4: "u1",  # DT_UINT8
    5: "<i2",  # DT_INT16
    6: "i1",  # DT_INT8
    9: "<i8",  # DT_INT64
    10: "?",  # DT_BOOL
    17: "<u2",  # DT_UINT16
    19: "<f2",  # DT_HALF
    22: "<u4",  # DT_UINT32
    23: "<u8",  # DT_UINT64
}
_DT_STRING = 7


class _NotABundle(Exception):
    """Internal: the bytes are not what a TensorBundle index should hold."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _NotABundle("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _NotABundle("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, Any]]:
    """Decode one protobuf message into (field number, value) pairs; nested messages stay bytes."""
    out: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value = buf[pos : pos + n]
            if len(value) != n:
                raise _NotABundle("truncated length-delimited field")
            pos += n
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _NotABundle(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def _block_entries(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of one SSTable block (LevelDB prefix compression with restart points)."""
    if offset + size + _BLOCK_TRAILER > len(data):
        raise _NotABundle("block handle points past the end of the file")
    if data[offset + size] != 0:
        raise UserInputError(
            "this TensorBundle index uses block compression, which TensorFlow never writes for "
            "checkpoints; re-save the checkpoint with TensorFlow's tf.train.Saver"
        )
    block = data[offset : offset + size]
    if len(block) < 4:
        raise _NotABundle("block too small")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise _NotABundle("bad restart count")
    entries: list[tuple[bytes, bytes]] = []
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > end:
            raise _NotABundle("corrupt block entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def read_index(index_path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Parse a ``.index`` file into (header, {tensor name: entry}).

    ``entry`` has ``dtype`` (TF enum), ``shape``, ``shard_id``, ``offset``, ``size``, ``crc32c``
    (None when absent) and ``sliced`` (partitioned variables, which we do not support).
    """
    path = Path(index_path)
    data = path.read_bytes()
    try:
        if len(data) < _FOOTER_SIZE:
            raise _NotABundle("file shorter than an SSTable footer")
        footer = data[-_FOOTER_SIZE:]
        (magic,) = struct.unpack_from("<Q", footer, _FOOTER_SIZE - 8)
        if magic != _TABLE_MAGIC:
            raise _NotABundle("no SSTable magic number")
        _, _, pos = _block_handle(footer, 0)  # metaindex block: unused by TensorBundle
        idx_off, idx_size, _ = _block_handle(footer, pos)
        header: dict[str, Any] = {}
        entries: dict[str, dict[str, Any]] = {}
        for _, handle in _block_entries(data, idx_off, idx_size):
            off, size, _ = _block_handle(handle, 0)
            for key, value in _block_entries(data, off, size):
                if key == b"":
                    header = _parse_header(value)
                else:
                    entries[key.decode("utf-8")] = _parse_entry(value)
    except _NotABundle as exc:
        raise UserInputError(
            f"{path} is not a TensorFlow TensorBundle checkpoint index ({exc}); give the "
            "checkpoint prefix, e.g. model.ckpt-27465036 for model.ckpt-27465036.index"
        ) from None
    if not header:
        raise UserInputError(
            f"{path} has no TensorBundle header; it is not a TensorFlow checkpoint"
        )
    return header, entries


def _parse_header(buf: bytes) -> dict[str, Any]:
    header = {"num_shards": 1, "endianness": 0, "version": None}
    for field, value in _proto_fields(buf):
        if field == 1:
            header["num_shards"] = value
        elif field == 2:
            header["endianness"] = value
        elif field == 3:
            header["version"] = value
    return header


def _parse_entry(buf: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "dtype": 0,
        "shape": (),
        "shard_id": 0,
        "offset": 0,
        "size": 0,
        "crc32c": None,
        "sliced": False,
    }
    for field, value in _proto_fields(buf):
        if field == 1:
            entry["dtype"] = value
        elif field == 2:
            dims = []
            for f, dim in _proto_fields(value):
                if f == 2:  # TensorShapeProto.dim
                    size = next((v for ff, v in _proto_fields(dim) if ff == 1), 0)
                    dims.append(size)
                elif f == 3 and value:  # unknown_rank
                    raise _NotABundle("tensor of unknown rank")
            entry["shape"] = tuple(dims)
        elif field == 3:
            entry["shard_id"] = value
        elif field == 4:
            entry["offset"] = value
        elif field == 5:
            entry["size"] = value
        elif field == 6:
            entry["crc32c"] = value
        elif field == 7:
            entry["sliced"] = True
    return entry


def _unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _crc32c():
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value


def read_tensorbundle(prefix: str | Path, *, skip_slots: bool = False) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint at ``prefix`` (the path without ``.index``), by variable name.

    ``skip_slots=True`` leaves out optimiser slots (names ending in ``/Adam``, ``/Adam_1``,
    ``/Momentum``...) and ``global_step``-like bookkeeping is kept either way.
    """
    prefix = Path(prefix)
    if prefix.suffix == ".index":
        prefix = prefix.with_suffix("")
    index_path = Path(f"{prefix}.index")
    if not index_path.is_file():
        raise UserInputError(
            f"no TensorFlow checkpoint index at {index_path}; give the checkpoint prefix "
            "(e.g. models/fib25/model.ckpt-27465036) whose .index and .data-* files exist"
        )
    header, entries = read_index(index_path)
    if header["endianness"] not in (0,):
        raise UserInputError(
            f"{index_path} was written big-endian; only little-endian is supported"
        )
    nshards = int(header["num_shards"])
    crc = _crc32c()
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, entry in sorted(entries.items()):
        if skip_slots and _is_slot(name):
            continue
        if entry["sliced"]:
            raise UserInputError(
                f"{index_path}: tensor {name!r} is a partitioned variable; re-save it unpartitioned"
            )
        sid = entry["shard_id"]
        if sid not in shards:
            shard_path = Path(f"{prefix}.data-{sid:05d}-of-{nshards:05d}")
            if not shard_path.is_file():
                raise UserInputError(f"checkpoint data shard {shard_path} is missing")
            shards[sid] = shard_path.read_bytes()
        shard = shards[sid]
        start, size = entry["offset"], entry["size"]
        raw = shard[start : start + size]
        if len(raw) != size:
            raise UserInputError(f"checkpoint data shard for {name!r} is truncated")
        stored = entry["crc32c"]
        if crc is not None and stored is not None and crc(raw) != _unmask_crc(stored):
            raise UserInputError(
                f"checksum mismatch for tensor {name!r} in {prefix}; the checkpoint is corrupt"
            )
        out[name] = _decode(name, entry, raw)
    return out


def _is_slot(name: str) -> bool:
    last = name.rsplit("/", 1)[-1]
    return (
        last in {"Adam", "Adam_1", "Momentum", "RMSProp", "RMSProp_1"}
        or "/ExponentialMovingAverage" in name
    )


def _decode(name: str, entry: dict[str, Any], raw: bytes) -> np.ndarray:
    shape = entry["shape"]
    dtype = entry["dtype"]
    if dtype == _DT_STRING:
        return _decode_strings(raw, shape)
    if dtype not in _TF_DTYPES:
        raise UserInputError(
            f"tensor {name!r} has TensorFlow dtype {dtype}, which is not supported"
        )
    arr = np.frombuffer(raw, dtype=np.dtype(_TF_DTYPES[dtype]))
    n = int(np.prod(shape, dtype=np.int64))
    if arr.size != n:
        raise UserInputError(f"tensor {name!r}: {arr.size} values stored for shape {shape}")
    return arr.reshape(shape).copy()


def _decode_strings(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    # Layout: n varint64 lengths, a 4-byte masked crc of them, then the concatenated bytes.
    n = int(np.prod(shape, dtype=np.int64))
    lengths, pos = [], 0
    for _ in range(n):
        length, pos = _varint(raw, pos)
        lengths.append(length)
    pos += 4
    values = []
    for length in lengths:
        values.append(raw[pos : pos + length])
        pos += length
    return np.array(values, dtype=object).reshape(shape)
