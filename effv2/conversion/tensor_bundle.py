"""A reader of TensorFlow's checkpoint format (the "tensor bundle"), so converting the released
EfficientNetV2 checkpoints needs no TensorFlow installation.

A checkpoint ``<prefix>`` is ``<prefix>.index``, an immutable sorted table (LevelDB's SSTable
layout: data blocks of prefix-compressed keys, an index block, a 48-byte footer), mapping each
tensor name to a ``BundleEntryProto`` (dtype, shape, shard, offset, size), and the shards
``<prefix>.data-<k>-of-<n>`` holding the raw little-endian tensor bytes. The key "" holds the
``BundleHeaderProto`` (number of shards, endianness).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effv2.errors import UserError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_BLOCK_TRAILER_SIZE = 5  # compression type byte + crc32

# tensorflow/core/framework/types.proto
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


@dataclass(frozen=True)
class BundleEntry:
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    sliced: bool


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(message: bytes):
    """(field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value, pos = message[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = message[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _shape(message: bytes) -> tuple[int, ...]:
    dims = []
    for number, _, dim in _fields(message):
        if number == 2:  # repeated Dim dim = 2 { int64 size = 1; string name = 2; }
            size = next((value for n, _, value in _fields(dim) if n == 1), 0)
            dims.append(size - (1 << 64) if size >= 1 << 63 else size)
    return tuple(dims)


def _entry(message: bytes) -> BundleEntry:
    values = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "sliced": False}
    for number, _, value in _fields(message):
        if number == 1:
            values["dtype"] = value
        elif number == 2:
            values["shape"] = _shape(value)
        elif number == 3:
            values["shard"] = value
        elif number == 4:
            values["offset"] = value
        elif number == 5:
            values["size"] = value
        elif number == 7:
            values["sliced"] = True
    return BundleEntry(**values)


def _block_entries(block: bytes):
    """(key, value) pairs of one table block; keys share prefixes with their predecessor."""
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length


def _read_block(index_bytes: bytes, handle: bytes, source: Path) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    compression = index_bytes[offset + size]
    if compression != 0:
        raise UserError(f"{source} uses a compressed table block (type {compression}); only uncompressed is supported")
    return index_bytes[offset : offset + size]


class TensorBundle:
    """The tensors of a TensorFlow checkpoint, read on demand."""

    def __init__(self, prefix: str | Path) -> None:
        prefix = str(prefix)
        for suffix in (".index", ".meta"):
            prefix = prefix.removesuffix(suffix)
        self.prefix = prefix
        index_path = Path(prefix + ".index")
        if not index_path.is_file():
            raise UserError(
                f"convert.source={prefix!r}: no TensorFlow checkpoint there ({index_path.name} is missing); "
                "give the prefix of the model.index / model.data-* pair, e.g. .../efficientnetv2-s/model"
            )
        data = index_path.read_bytes()
        try:
            self.entries, self.num_shards = self._parse(data, index_path)
        except (IndexError, ValueError, struct.error) as exc:
            raise UserError(f"{index_path} is not a TensorFlow checkpoint index ({exc})") from None

    @staticmethod
    def _parse(data: bytes, source: Path) -> tuple[dict[str, BundleEntry], int]:
        if len(data) < _FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
            raise ValueError("bad table magic number")
        footer = data[-_FOOTER_SIZE:]
        _, pos = _varint(footer, 0)  # metaindex handle: offset, size (unused)
        _, pos = _varint(footer, pos)
        index_block = _read_block(data, footer[pos:], source)
        entries: dict[str, BundleEntry] = {}
        num_shards = 1
        for _, handle in _block_entries(index_block):
            for key, value in _block_entries(_read_block(data, handle, source)):
                if key == b"":  # BundleHeaderProto { int32 num_shards = 1; Endianness endianness = 2; ... }
                    for number, _, field in _fields(value):
                        if number == 1:
                            num_shards = field
                        elif number == 2 and field != 0:
                            raise ValueError("big-endian checkpoints are not supported")
                    continue
                entries[key.decode("utf-8")] = _entry(value)
        return entries, num_shards

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def read(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        if entry.sliced:
            raise UserError(f"{self.prefix}: tensor {name!r} is stored in slices (partitioned); not supported")
        if entry.dtype not in _DTYPES:
            raise UserError(f"{self.prefix}: tensor {name!r} has TensorFlow dtype {entry.dtype}, not a numeric one")
        dtype = np.dtype(_DTYPES[entry.dtype]).newbyteorder("<")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise UserError(f"{self.prefix}: tensor {name!r} has {entry.size} bytes for shape {entry.shape}")
        shard = Path(f"{self.prefix}.data-{entry.shard:05d}-of-{self.num_shards:05d}")
        if not shard.is_file():
            raise UserError(f"{shard} is missing: a TensorFlow checkpoint needs its .index and every .data-* file")
        with shard.open("rb") as handle:
            handle.seek(entry.offset)
            raw = handle.read(entry.size)
        if len(raw) != entry.size:
            raise UserError(f"{shard} is truncated: tensor {name!r} needs {entry.size} bytes at {entry.offset}")
        return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
