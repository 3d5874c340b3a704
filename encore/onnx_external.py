"""Where an ONNX graph reads external tensor data from, read from the protobuf wire format.

The services do not install the `onnx` package (it is a training extra), and ONNX Runtime opens external
data files by itself when it loads a graph. So the bundle check reads the serialized ModelProto directly:
every TensorProto reachable from the graph (initializers, node attributes, subgraphs, functions) with a
`location` entry in its external_data.
"""

from __future__ import annotations


class OnnxParseError(ValueError):
    """The bytes are not a well-formed protobuf message."""


# (message kind, field number) -> the kind of the embedded message; field numbers from onnx.proto3.
_CHILDREN: dict[tuple[str, int], str] = {
    ("model", 7): "graph",  # ModelProto.graph
    ("model", 25): "function",  # ModelProto.functions
    ("graph", 1): "node",  # GraphProto.node
    ("graph", 5): "tensor",  # GraphProto.initializer
    ("graph", 15): "sparse",  # GraphProto.sparse_initializer
    ("function", 7): "node",  # FunctionProto.node
    ("node", 5): "attribute",  # NodeProto.attribute
    ("attribute", 5): "tensor",  # AttributeProto.t
    ("attribute", 6): "graph",  # AttributeProto.g
    ("attribute", 10): "tensor",  # AttributeProto.tensors
    ("attribute", 11): "graph",  # AttributeProto.graphs
    ("attribute", 22): "sparse",  # AttributeProto.sparse_tensor
    ("attribute", 23): "sparse",  # AttributeProto.sparse_tensors
    ("sparse", 1): "tensor",  # SparseTensorProto.values
    ("sparse", 2): "tensor",  # SparseTensorProto.indices
}
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data: repeated StringStringEntryProto (key 1, value 2)
_TENSOR_DATA_LOCATION = 14  # TensorProto.data_location: 1 = EXTERNAL
_MAX_DEPTH = 64


def external_data_locations(model: bytes) -> list[str]:
    """Every external-data `location` a serialized ModelProto names (relative to the model's folder)."""
    found: list[str] = []
    _walk(memoryview(model), "model", found, 0)
    return found


def _walk(data: memoryview, kind: str, found: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxParseError("messages nested too deeply")
    external, location = False, None
    for number, wire, value in _fields(data):
        child = _CHILDREN.get((kind, number))
        if child is not None and wire == 2:
            _walk(value, child, found, depth + 1)
        elif kind == "tensor" and number == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == 1
        elif kind == "tensor" and number == _TENSOR_EXTERNAL_DATA and wire == 2:
            entry = {n: bytes(v) for n, w, v in _fields(value) if w == 2}
            if entry.get(1) == b"location":
                location = entry.get(2, b"").decode("utf-8", "replace")
    if location is not None:
        found.append(location)
    elif external:
        raise OnnxParseError("a tensor is marked external but names no location")


def _fields(data: memoryview):  # -> Iterator[tuple[int, int, int | memoryview]]
    """(field number, wire type, value) of each field: ints for varint/fixed, memoryviews for bytes."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos : pos + size], "little"), pos + size
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise OnnxParseError(f"unsupported wire type {wire}")
        if pos > end or number == 0:
            raise OnnxParseError("truncated or malformed message")
        yield number, wire, value


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return result, pos
    raise OnnxParseError("truncated varint")
