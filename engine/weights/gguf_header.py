"""A bounded GGUF header parser: every declared count is checked against the bytes left first.

The ``gguf`` package's ``GGUFReader`` walks a metadata array item by item, allocating a
numpy view per item, without comparing the declared count with the file's size: a header
that declares 2^40 items (or a 2^63-byte string) makes it loop past the end of the file for
hours while its memory grows without bound, and one such file in ``diffusion_models/`` hangs
a ComfyUI server as soon as the UI asks the pack to describe it. This parser reads the same
format (GGUF v2 and v3, either byte order) but:

* before it reads or skips anything it checks that the declared size fits in the bytes left
  (an array of n items of type T needs at least ``n * MIN_SIZE[T]`` bytes), and otherwise
  raises :class:`GGUFError` naming the file, the field and both numbers;
* it allocates nothing per array item: a value is kept as (type, count, offset) and decoded
  only when asked for (:meth:`GGUFMetadata.string`, :meth:`GGUFMetadata.ints`), so a scalar
  array is skipped in one step and a string array in one step per string;
* arrays nest at most ``MAX_NESTING`` deep, so no recursion limit is reached.

Bound: time is linear in the header's real size (each loop step consumes at least 8 checked
bytes: a string's length, a key/value of 13 or more, a tensor entry of 24 or more) and memory
linear in the number of keys and tensors, which the same checks bound by header bytes / 13;
a count that the file's bytes do not back is refused before anything is allocated for it.
``bench/bench_gguf_header.py`` measures it (``bench/results_gguf_header.md``).
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .dit_file import CheckpointError
from ..errors import public
from .safetensors_header import clip, quote

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_NESTING = 3  # arrays of arrays of arrays (llama.cpp writes none)
MAX_DIMS = 8  # ggml tensors have at most 4
MAX_SHAPE_ITEMS = 8  # an orig_shape array is a tensor shape

STRING, ARRAY = 8, 9
SCALARS = {0: ("UINT8", "B"), 1: ("INT8", "b"), 2: ("UINT16", "H"), 3: ("INT16", "h"), 4: ("UINT32", "I"),
           5: ("INT32", "i"), 6: ("FLOAT32", "f"), 7: ("BOOL", "?"), 10: ("UINT64", "Q"), 11: ("INT64", "q"),
           12: ("FLOAT64", "d")}
INTEGERS = {0, 1, 2, 3, 4, 5, 10, 11}
TYPE_NAMES = {**{k: v[0] for k, v in SCALARS.items()}, STRING: "STRING", ARRAY: "ARRAY"}
MIN_SIZE = {**{k: struct.calcsize(v[1]) for k, v in SCALARS.items()}, STRING: 8, ARRAY: 12}  # bytes per item, at least
KV_MIN = 8 + 4 + 1  # key length, value type, a 1-byte value
TENSOR_MIN = 8 + 4 + 4 + 8  # name length, dims count, type, offset


@public
class GGUFError(CheckpointError):
    """A GGUF file that cannot be loaded as a Wan 2.2 DiT; the message names the file and says why."""


@public
class UnsupportedQuantization(GGUFError):
    """A GGUF file using a tensor type this loader cannot decode."""


@dataclass(frozen=True)
class Value:
    """One metadata value, not decoded: ``type`` (and ``item_type`` for an array), ``count`` items at ``offset``."""
    type: int
    count: int
    offset: int
    item_type: Optional[int] = None

    @property
    def type_name(self) -> str:
        inner = f"[{TYPE_NAMES.get(self.item_type, self.item_type)}]" if self.type == ARRAY else ""
        return TYPE_NAMES[self.type] + inner


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dims: tuple[int, ...]  # as stored: innermost first
    type_id: int
    offset: int  # relative to the data section


@dataclass
class GGUFMetadata:
    """A parsed header: the values by key (undecoded), the tensor table and where the data starts."""
    path: Path
    size: int
    order: str  # struct byte order, "<" or ">"
    values: dict[str, Value]
    tensors: list[TensorEntry]
    data_start: int

    def string(self, key: str) -> Optional[str]:
        """The STRING value of ``key`` (None when absent); another type raises ``GGUFError``."""
        value = self.values.get(key)
        if value is None:
            return None
        if value.type != STRING:
            raise GGUFError(f"{clip(self.path.name)}: metadata {key} is of type {value.type_name}, expected a string "
                            f"such as 'wan'")
        with _mapped(self.path) as m:
            return bytes(m[value.offset:value.offset + value.count]).decode("utf-8", errors="replace")

    def ints(self, key: str, limit: int) -> Optional[list[int]]:
        """The integer array ``key`` (None when absent, or when it is not an integer array of at most ``limit``)."""
        value = self.values.get(key)
        if value is None:
            return None
        if value.type != ARRAY or value.item_type not in INTEGERS or not 0 < value.count <= limit:
            return []
        code = SCALARS[value.item_type][1]
        with _mapped(self.path) as m:
            return list(struct.unpack_from(f"{self.order}{value.count}{code}", m, value.offset))


def _mapped(path: Path):
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class _Cursor:
    """Reads a mapped header front to back; every read checks its size against the bytes left."""

    def __init__(self, buf, size: int, name: str):
        self.buf, self.size, self.name, self.pos, self.order = buf, size, name, 0, "<"

    def fail(self, field: str, problem: str) -> GGUFError:
        return GGUFError(f"{clip(self.name)} is a truncated or damaged GGUF file: {field} {problem}. Download or "
                         "copy it again.")

    def need(self, nbytes: int, field: str, what: str) -> None:
        left = self.size - self.pos
        if nbytes > left:
            raise self.fail(field, f"declares {what} ({nbytes} bytes at least) but only {left} bytes are left in the "
                                   f"{self.size}-byte file")

    def unpack(self, code: str, field: str):
        n = struct.calcsize(code)
        self.need(n, field, f"a {n}-byte value")
        (value,) = struct.unpack_from(self.order + code, self.buf, self.pos)
        self.pos += n
        return value

    def skip(self, nbytes: int, field: str, what: str) -> int:
        self.need(nbytes, field, what)
        start, self.pos = self.pos, self.pos + nbytes
        return start

    def string(self, field: str) -> tuple[int, int]:
        """(offset, length) of a length-prefixed string, skipped."""
        length = self.unpack("Q", field)
        return self.skip(length, field, f"a string of {length} bytes"), length

    def text(self, field: str) -> str:
        offset, length = self.string(field)
        try:
            return bytes(self.buf[offset:offset + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(field, "is not UTF-8 text") from None

    def value(self, kind: int, field: str, depth: int = 0) -> Value:
        if kind in SCALARS:
            return Value(kind, 1, self.skip(MIN_SIZE[kind], field, f"a {TYPE_NAMES[kind]} value"))
        if kind == STRING:
            offset, length = self.string(field)
            return Value(kind, length, offset)
        if kind != ARRAY:
            raise self.fail(field, f"has value type {kind}, which GGUF does not define (0-12)")
        if depth >= MAX_NESTING:
            raise self.fail(field, f"nests arrays more than {MAX_NESTING} deep")
        item = self.unpack("I", field)
        count = self.unpack("Q", field)
        if item not in MIN_SIZE:
            raise self.fail(field, f"is an array of value type {item}, which GGUF does not define (0-12)")
        self.need(count * MIN_SIZE[item], field, f"an array of {count} {TYPE_NAMES[item]} items")
        start = self.pos
        if item in SCALARS:
            self.pos += count * MIN_SIZE[item]
        elif item == STRING:
            self.skip_strings(count, field)
        else:
            for _ in range(count):
                self.value(item, field, depth + 1)
        return Value(ARRAY, count, start, item)

    def skip_strings(self, count: int, field: str) -> None:
        """Step over ``count`` length-prefixed strings (a tokenizer's vocabulary: the one long loop)."""
        unpack, buf, pos, size = struct.Struct(self.order + "Q").unpack_from, self.buf, self.pos, self.size
        for i in range(count):
            if pos + 8 > size:
                break
            (length,) = unpack(buf, pos)
            if length > size - pos - 8:
                self.pos = pos + 8
                raise self.fail(f"{field} item #{i}", f"declares a string of {length} bytes but only "
                                                      f"{size - self.pos} bytes are left in the {size}-byte file")
            pos += 8 + length
        else:
            self.pos = pos
            return
        self.pos = pos
        raise self.fail(f"{field} item #{i}", f"is cut off by the end of the {size}-byte file")


def parse_gguf_header(path: Path) -> GGUFMetadata:
    """Parse ``path``'s GGUF header (see the module doc); raise ``GGUFError`` naming the file and field."""
    size = path.stat().st_size
    if size < 24:
        raise GGUFError(f"{clip(path.name)} is a truncated or damaged GGUF file ({size} bytes; a GGUF header alone "
                        "takes at least 24). Download or copy it again.")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return _parse(_Cursor(m, size, path.name), path)


def _parse(c: _Cursor, path: Path) -> GGUFMetadata:
    if c.buf[:4] != MAGIC:
        raise GGUFError(f"{clip(path.name)} is not a GGUF file (it does not start with 'GGUF').")
    c.pos = 4
    version = c.unpack("I", "the version")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        c.order, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in VERSIONS:
        raise c.fail("the version", f"is {version}; this reader knows GGUF versions {VERSIONS}")
    tensor_count = c.unpack("Q", "the tensor count")
    kv_count = c.unpack("Q", "the metadata key count")
    c.need(kv_count * KV_MIN + tensor_count * TENSOR_MIN, "the header",
           f"{kv_count} metadata keys and {tensor_count} tensors")
    values: dict[str, Value] = {}
    for i in range(kv_count):
        key = c.text(f"metadata key #{i}")
        field = f"metadata {quote(key)}"
        if key in values:
            raise c.fail(field, "appears twice")
        values[key] = c.value(c.unpack("I", field), field)
    tensors = [_tensor_entry(c, i) for i in range(tensor_count)]
    data_start = _aligned(c.pos, _alignment(c, values))
    return GGUFMetadata(path, c.size, c.order, values, tensors, data_start)


def _tensor_entry(c: _Cursor, i: int) -> TensorEntry:
    name = c.text(f"tensor #{i}'s name")
    field = f"tensor {quote(name)}"
    n_dims = c.unpack("I", field)
    if n_dims > MAX_DIMS:
        raise c.fail(field, f"has {n_dims} dimensions (at most {MAX_DIMS})")
    c.need(8 * n_dims, field, f"{n_dims} dimensions")
    dims = struct.unpack_from(f"{c.order}{n_dims}Q", c.buf, c.pos)
    c.pos += 8 * n_dims
    return TensorEntry(name, tuple(dims), c.unpack("I", field), c.unpack("Q", field))


def _alignment(c: _Cursor, values: dict[str, Value]) -> int:
    value = values.get("general.alignment")
    if value is None:
        return DEFAULT_ALIGNMENT
    if value.type != 4:
        raise c.fail("metadata 'general.alignment'", f"is of type {value.type_name}, expected UINT32")
    (alignment,) = struct.unpack_from(c.order + "I", c.buf, value.offset)
    if alignment == 0 or alignment & (alignment - 1):
        raise c.fail("metadata 'general.alignment'", f"is {alignment}, expected a power of two")
    return alignment


def _aligned(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment
