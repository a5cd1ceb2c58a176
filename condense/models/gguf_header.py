"""A GGUF file's header (scalar metadata and tensor table), read without its arrays or tensor data.

``gguf.GGUFReader`` builds a numpy view of every element of every metadata array, so the
vocabulary and merges of a 49k-token tokenizer cost it seconds. The facts condense records (name,
architecture, file type, tensor types, parameter count) need only the scalar keys and the tensor
table, so this walks the header with ``struct`` over a memory map and steps over each array by its
lengths: milliseconds. Layout (GGUF v2/v3): magic, version, tensor count, key count, the keys
(name, type, value), the tensor table (name, dims, ggml type, offset), then the tensor data at the
next multiple of ``general.alignment``. Type names and block sizes come from the ``gguf`` package.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GgufTensorInfo", "GgufHeader", "read_gguf_header"]

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufTensorInfo:
    """One row of the tensor table: ``offset`` counts from the start of the data section."""

    name: str
    ggml_type: int
    elements: int
    offset: int


@dataclass(frozen=True)
class GgufHeader:
    """``metadata``: every key, arrays given as their lengths; ``data_start``: where tensor data begins."""

    version: int
    metadata: dict[str, Any]
    tensors: tuple[GgufTensorInfo, ...]
    data_start: int
    data_end: int


class _Cursor:
    def __init__(self, buffer: mmap.mmap | bytes, order: str) -> None:
        self.buffer, self.order, self.pos = buffer, order, 0

    def unpack(self, code: str) -> Any:
        fmt = self.order + code
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("Q")
        if self.pos + length > len(self.buffer):
            raise ValueError(f"a string of {length} bytes runs past the end of the file")
        text = bytes(self.buffer[self.pos:self.pos + length]).decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:
                self.pos += count * struct.calcsize(self.order + _SCALARS[item])
            elif item == _STRING:
                for _ in range(count):  # variable length: step over each
                    length = self.unpack("Q")
                    self.pos += length
            else:
                for _ in range(count):
                    self.value(item)
            if self.pos > len(self.buffer):
                raise ValueError("a metadata array runs past the end of the file")
            return count
        raise ValueError(f"unknown metadata value type {kind}")


def read_gguf_header(path: str | Path) -> GgufHeader:
    """The header of the GGUF file ``path``; ValueError (or struct.error) when it is cut or not GGUF.

    ``data_end`` is where the last tensor's bytes end; a file shorter than that is cut.
    """
    import gguf  # type names and block sizes, without the reader

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        if bytes(buffer[:4]) != b"GGUF":
            raise ValueError("no GGUF magic")
        version = struct.unpack_from("<I", buffer, 4)[0]
        order = "<" if version & 0xFFFF else ">"  # a big-endian file reads as a huge little-endian version
        cursor = _Cursor(buffer, order)
        cursor.pos = 4
        version = cursor.unpack("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (readable: 2, 3)")
        tensor_count, key_count = cursor.unpack("Q"), cursor.unpack("Q")
        metadata: dict[str, Any] = {}
        for _ in range(key_count):
            key = cursor.string()
            metadata[key] = cursor.value(cursor.unpack("I"))
        tensors = []
        for _ in range(tensor_count):
            name = cursor.string()
            dims = [cursor.unpack("Q") for _ in range(cursor.unpack("I"))]
            tensors.append(GgufTensorInfo(name, cursor.unpack("I"), math.prod(dims), cursor.unpack("Q")))
        alignment = int(metadata.get("general.alignment", 32)) or 32
        data_start = -(-cursor.pos // alignment) * alignment
        size = len(buffer)
    data_end = data_start
    for t in tensors:
        try:
            block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {t.name!r} has unknown ggml type {t.ggml_type}") from None
        data_end = max(data_end, data_start + t.offset + t.elements // block * nbytes)
    if data_end > size:
        raise ValueError(f"the tensor data ends at byte {data_end}, past the end of the file")
    return GgufHeader(version, metadata, tuple(tensors), data_start, data_end)
