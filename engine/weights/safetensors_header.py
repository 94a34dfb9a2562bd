"""The safetensors header, read strictly: one parser for every ``.safetensors`` file the pack opens.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``)
and the tensor bytes, with offsets counted from the end of the header. The checks are
the format's own rules, applied before any tensor is read, so a damaged or crafted file
fails here with the file and the tensor named instead of reading one tensor's bytes as
another's (or the JSON as weights) or failing later inside torch:

* the header length fits the file and the JSON is an object without duplicate names;
* every entry has a known ``dtype``, a ``shape`` of integers >= 0 and two integer offsets
  with ``0 <= begin <= end <= data size`` and ``end - begin == numel * itemsize``;
* no two tensors' byte ranges overlap;
* ``__metadata__``, when present, maps strings to strings.

Loaders pass their own error class and "what to use instead" sentence
(``CheckpointError`` for the DiT, ``VAEFileError`` for the VAE). Every message bounds
what it quotes from the file (``quote``), so a huge tensor name cannot make a huge error.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Type, Union

import torch

PathLike = Union[str, os.PathLike]

ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
MAX_HEADER = 100 * 1024 * 1024
QUOTE_LIMIT = 80  # characters of file content one message quotes per item


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


@dataclass
class Header:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    size: int


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of a string from a file, cut to about ``limit`` characters (with its full length said)."""
    text = value if isinstance(value, str) else str(value)
    shown = repr(text)
    if len(shown) <= limit + 2:
        return shown
    return f"{repr(text[:limit])[:-1]}...' ({len(text)} characters)"


def clip(text, limit: int = 2 * QUOTE_LIMIT) -> str:
    """``text`` unquoted (a file name or path), cut in the middle to about ``limit`` characters.

    The end is what names the file (its basename and extension), so it is kept: a long path
    keeps its whole basename when that fits in ``limit`` and loses part of its folders instead.
    """
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return text
    base = text.replace("\\", "/").rsplit("/", 1)[-1]
    tail = len(base) + 1 if 0 < len(base) <= limit - 16 and len(base) < len(text) else limit // 2
    head = max(limit - tail, 8)
    return f"{text[:head]}...{text[len(text) - tail:]} ({len(text)} characters)"


def quote_list(values, limit: int = 8) -> str:
    """Up to ``limit`` quoted names, comma-separated, with how many more there are."""
    values = list(values)
    shown = ", ".join(quote(v) for v in values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


def what_is(path: Path) -> Optional[str]:
    """What a non-safetensors file looks like from its first bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive, most likely a PyTorch .pt/.pth/.ckpt checkpoint; convert it to .safetensors"
    if head.startswith(b"\x80") and len(head) > 1 and head[1] <= 5:
        return "a pickled PyTorch checkpoint; convert it to .safetensors"
    if head.startswith(b"GGUF"):
        return "a GGUF file, not .safetensors"
    if head.lstrip().startswith((b"{", b"[", b"<")):
        return "a text (JSON/HTML) file, perhaps a download error page or a config.json"
    return None


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


class _Duplicate(ValueError):
    pass


def read_header(path: PathLike, error: Type[Exception] = ValueError, expected: str = "",
                sniff: Callable[[Path], Optional[str]] = what_is) -> Header:
    """Parse and check the header of the safetensors file ``path``; read no tensor data.

    Raises ``error`` with a message naming the file (and the tensor), ending with
    ``expected`` (which file to use instead). ``sniff(path)`` names what a file that is
    not safetensors at all looks like.
    """
    path = Path(path)
    name = clip(path.name)
    tail = f" {expected}" if expected else ""
    if not path.is_file():
        raise error(f"{path}: no such file.{tail}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        n = int.from_bytes(raw_len, "little") if len(raw_len) == 8 else -1
        fits = 2 <= n <= MAX_HEADER and 8 + n <= size
        raw = f.read(n) if fits else b""
    parsed = None
    if fits:
        try:
            parsed = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except _Duplicate as dup:
            raise error(f"{name} is damaged: its safetensors header names the tensor {quote(dup.args[0])} "
                        f"twice. Download it again.{tail}") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            parsed = None
    if not isinstance(parsed, dict):
        what = sniff(path)
        if what:
            raise error(f"{name} is not a .safetensors file: it looks like {what}.{tail}")
        if 2 <= n <= MAX_HEADER and 8 + n > size:
            raise error(f"{name} is truncated: its header alone needs {8 + n} bytes but the file has {size}; "
                        f"download it again.{tail}")
        raise error(f"{name} is not a .safetensors file ({size} bytes, no valid header).{tail}")
    metadata = _metadata(parsed.pop("__metadata__", None), name, error, tail)
    return Header(path, _tensor_table(parsed, 8 + n, size, name, error, tail), metadata, size)


def _metadata(meta, name: str, error, tail: str) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        bad = next((k for k, v in meta.items() if not isinstance(v, str)), None) if isinstance(meta, dict) else None
        which = f" (entry {quote(bad)} is not a string)" if bad is not None else ""
        raise error(f"{name} has a malformed safetensors header: __metadata__ must map strings to strings"
                    f"{which}. The file is damaged or was not written by a safetensors library.{tail}")
    return meta


def _tensor_table(parsed: dict, data_start: int, size: int, name: str, error, tail: str) -> dict[str, TensorInfo]:
    data_size = size - data_start
    tensors: dict[str, TensorInfo] = {}
    for key, entry in parsed.items():
        begin, end, shape, dtype = _entry(key, entry, name, error, tail)
        where = f"{name}: tensor {quote(key)}"
        if not 0 <= begin <= end:
            raise error(f"{where} has the byte range [{begin}, {end}), which is reversed or negative; the file "
                        f"is damaged.{tail}")
        if end > data_size:
            raise error(f"{name} is truncated: tensor {quote(key)} ends at byte {data_start + end} but the file "
                        f"has {size}; the download or copy did not finish. Download it again.{tail}")
        numel = 1
        for dim in shape:
            numel *= dim
        need = numel * ST_DTYPES[dtype].itemsize
        if end - begin != need:
            raise error(f"{where} is {dtype} {list(shape)} ({need} bytes) but its byte range [{begin}, {end}) "
                        f"holds {end - begin}; the file is damaged.{tail}")
        tensors[key] = TensorInfo(dtype, shape, data_start + begin, data_start + end)
    _check_overlaps(tensors, data_start, name, error, tail)
    return tensors


def _entry(key: str, entry, name: str, error, tail: str):
    """``(begin, end, shape, dtype)`` of one header entry, checked for type."""
    def malformed(why: str):
        return error(f"{name} has a malformed safetensors header entry for {quote(key)}: {why}.{tail}")

    if not isinstance(entry, dict):
        raise malformed("not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise malformed("no dtype")
    if dtype not in ST_DTYPES:
        raise error(f"{name}: tensor {quote(key)} has dtype {quote(dtype)}, which this loader cannot read.{tail}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise malformed("shape is not a list of integers")
    if any(d < 0 for d in shape):
        raise malformed(f"shape {shape} has a negative dimension")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise malformed("data_offsets is not a pair of integers")
    return offsets[0], offsets[1], tuple(shape), dtype


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_overlaps(tensors: dict[str, TensorInfo], data_start: int, name: str, error, tail: str) -> None:
    ranges = sorted((info.start, info.end, key) for key, info in tensors.items() if info.end > info.start)
    for (_, end_a, a), (start_b, _, b) in zip(ranges, ranges[1:]):
        if start_b < end_a:
            raise error(f"{name} is damaged: the bytes of tensors {quote(a)} and {quote(b)} overlap "
                        f"(data offsets {tensors[a].start - data_start}-{end_a - data_start} and "
                        f"{start_b - data_start}-{tensors[b].end - data_start}).{tail}")
