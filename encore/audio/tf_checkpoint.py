"""Read a TensorFlow (V2 bundle) checkpoint with numpy alone: the `.index` table and the `.data-*` shard.

The index is a LevelDB-style SSTable (uncompressed blocks of prefix-compressed keys, a block index and a
48-byte footer). Each key is a tensor name and each value a serialized BundleEntryProto (dtype, shape,
shard, offset, size); the empty key holds the BundleHeaderProto. Tensor bytes are raw little-endian at
that offset in the data shard. Only what TF writes for plain dense variables is supported; anything else
(compressed blocks, sliced or string tensors, several shards) is a CheckpointError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, the footer's last 8 bytes
_FOOTER_SIZE = 48
_BLOCK_TRAILER = 5  # 1 byte compression type + 4 bytes masked crc32c after each block
# tensorflow/core/framework/types.proto DataType -> numpy (little-endian)
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "<u1", 5: "<i2", 6: "<i1", 9: "<i8", 10: "?", 19: "<f2"}


class CheckpointError(ValueError):
    """The bytes are not a TF checkpoint this reader understands; the message says what is wrong."""


@dataclass(frozen=True)
class TensorEntry:
    """One BundleEntryProto: where the tensor's bytes are and how to read them."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as int, length-delimited as bytes."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _shape(proto: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated dim (field 2) whose size is field 1."""
    dims = []
    for number, value in _proto_fields(proto):
        if number == 2:
            dims.append(next((int(v) for n, v in _proto_fields(value) if n == 1), 0))
        elif number == 3 and value:
            raise CheckpointError("tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, proto: bytes) -> TensorEntry:
    """BundleEntryProto: 1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c, 7 slices."""
    dtype_code, shape, shard, offset, size = 0, (), 0, 0, 0
    for number, value in _proto_fields(proto):
        if number == 1:
            dtype_code = int(value)
        elif number == 2:
            shape = _shape(value)
        elif number == 3:
            shard = int(value)
        elif number == 4:
            offset = int(value)
        elif number == 5:
            size = int(value)
        elif number == 7:
            raise CheckpointError(f"tensor {name!r} is stored in slices (not supported)")
    if dtype_code not in _DTYPES:
        raise CheckpointError(f"tensor {name!r} has unsupported dtype code {dtype_code}")
    return TensorEntry(name, np.dtype(_DTYPES[dtype_code]), shape, shard, offset, size)


def _block(table: bytes, handle: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the block a BlockHandle (offset, size varints) points at."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + _BLOCK_TRAILER > len(table):
        raise CheckpointError("block handle points past the end of the index")
    if table[offset + size] != 0:
        raise CheckpointError("compressed index blocks are not supported")
    block = table[offset : offset + size]
    n_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 * (n_restarts + 1)  # entries stop where the restart-point array begins
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]  # keys are prefix-compressed against the previous
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def read_index(index: bytes) -> dict[str, TensorEntry]:
    """Tensor name -> entry, from the bytes of a `.index` file."""
    if len(index) < _FOOTER_SIZE or int.from_bytes(index[-8:], "little") != _TABLE_MAGIC:
        raise CheckpointError("not a TF checkpoint index (bad table magic)")
    footer = index[-_FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # skip the metaindex handle (offset, size)
    _, pos = _varint(footer, pos)
    entries: dict[str, TensorEntry] = {}
    for _, data_handle in _block(index, footer[pos:]):
        for key, value in _block(index, data_handle):
            if key:  # the empty key is the BundleHeaderProto (shard count, endianness, version)
                name = key.decode()
                entries[name] = _entry(name, value)
    return entries


def read_checkpoint(index: bytes, data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a single-shard checkpoint, as float32/int/bool numpy arrays (copies)."""
    tensors = {}
    for name, entry in read_index(index).items():
        if entry.shard != 0:
            raise CheckpointError(f"tensor {name!r} is in shard {entry.shard}; only single-shard checkpoints")
        expected = int(np.prod(entry.shape, dtype=np.int64)) * entry.dtype.itemsize
        if entry.size != expected or entry.offset + entry.size > len(data):
            raise CheckpointError(f"tensor {name!r}: {entry.size} bytes at {entry.offset} do not fit {entry.shape}")
        raw = np.frombuffer(data, entry.dtype, count=expected // entry.dtype.itemsize, offset=entry.offset)
        tensors[name] = raw.reshape(entry.shape).astype(entry.dtype.newbyteorder("="))
    return tensors
