"""The bounded GGUF header parser (issue 26, item 1): declared counts the file's bytes cannot hold are refused
before anything is allocated for them, with an error naming the file and the field; valid headers read as the
``gguf`` package reads them."""
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest

from wan22duo.engine.testing import tiny_gguf
from wan22duo.engine.weights.gguf import GGUFError, describe_gguf, read_gguf_header
from wan22duo.engine.weights.gguf_header import parse_gguf_header

ROOT = Path(__file__).resolve().parent.parent
SIZES = dict(dim=256, ffn_dim=512, num_layers=2, text_dim=256)
UINT8, UINT32, STRING, ARRAY = 0, 4, 8, 9


def _str(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def header(kvs=(), tensors=0, kv_count=None) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs) if kv_count is None else kv_count) + b"".join(kvs)


def array(key: bytes, item: int, count: int) -> bytes:
    return _str(key) + struct.pack("<IIQ", ARRAY, item, count)


def tensor_entry(name: bytes, dims, kind=0, offset=0, n_dims=None) -> bytes:
    return _str(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims) + struct.pack(
        f"<{len(dims)}Q", *dims) + struct.pack("<IQ", kind, offset)


BAD = {
    "array of 2^40 UINT8": (header([array(b"tokenizer.ggml.scores", UINT8, 1 << 40)]) + bytes(16),
                            "metadata 'tokenizer.ggml.scores' declares an array of 1099511627776 UINT8 items"),
    "array of 2^40 strings": (header([array(b"tokenizer.ggml.tokens", STRING, 1 << 40)]) + bytes(64),
                              "metadata 'tokenizer.ggml.tokens' declares an array of 1099511627776 STRING items"),
    "string of 2^63 bytes": (header([_str(b"general.name") + struct.pack("<IQ", STRING, 1 << 63)]) + bytes(8),
                             "metadata 'general.name' declares a string of 9223372036854775808 bytes"),
    "key of 2^62 bytes": (header([struct.pack("<Q", 1 << 62)]) + bytes(32), "metadata key #0 declares a string"),
    "2^40 keys": (header(kv_count=1 << 40) + bytes(64), "the header declares 1099511627776 metadata keys"),
    "2^40 tensors": (header(tensors=1 << 40) + bytes(64), "1099511627776 tensors"),
    "2^31 dims": (header(tensors=1) + _str(b"w") + struct.pack("<I", 1 << 31) + bytes(64),
                  "tensor 'w' has 2147483648 dimensions"),
    "nested arrays": (header([_str(b"deep") + struct.pack("<I", ARRAY) + struct.pack("<IQ", ARRAY, 1) * 5])
                      + bytes(64), "metadata 'deep' nests arrays more than 3 deep"),
    "unknown value type": (header([_str(b"odd") + struct.pack("<I", 77)]) + bytes(64),
                           "metadata 'odd' has value type 77"),
    "array in a string array": (header([array(b"toks", STRING, 3) + _str(b"a") + struct.pack("<Q", 1 << 50)])
                                + bytes(16), "metadata 'toks' item #1 declares a string of 1125899906842624 bytes"),
    "duplicate key": (header([_str(b"k") + struct.pack("<IB", UINT8, 1)] * 2) + bytes(32),
                      "metadata 'k' appears twice"),
    "alignment 0": (header([_str(b"general.alignment") + struct.pack("<II", UINT32, 0)]) + bytes(32),
                    "'general.alignment' is 0, expected a power of two"),
    "version 9": (b"GGUF" + struct.pack("<IQQ", 9, 0, 0) + bytes(8), "the version is 9"),
    "short file": (b"GGUF\x03\x00", "(6 bytes; a GGUF header alone takes at least 24)"),
    "tensor past the end": (header(tensors=1) + tensor_entry(b"w", (1 << 20, 1 << 20)) + bytes(40),
                            "tensor 'w' (F32, shape [1048576, 1048576]) needs bytes"),
    "rows not whole blocks": (header(tensors=1) + tensor_entry(b"w", (33, 2), kind=8) + bytes(200),
                              "has rows of 33 weights, not a whole number of Q8_0 blocks of 32"),
    "unknown tensor type": (header(tensors=1) + tensor_entry(b"w", (4,), kind=999) + bytes(64),
                            "tensor 'w' has GGML type id 999"),
    "duplicate tensor": (header(tensors=2) + tensor_entry(b"w", (4,)) * 2 + bytes(64), "tensor 'w' appears twice"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_header_is_refused_naming_the_file_and_the_field(tmp_path, case):
    data, needle = BAD[case]
    path = tmp_path / "expert-Q4_K.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError) as info:
        read_gguf_header(path)
    message = str(info.value)
    assert message.startswith(path.name) and needle in message, message
    assert describe_gguf(path) == message  # what the models-folder route shows: the same error, no hang


def test_a_2_40_item_array_is_refused_in_a_fresh_process_without_hanging(tmp_path):
    """The issue's case, end to end in a new interpreter (before: a loop past the end of the file that grows
    memory until killed). A hang fails here through the subprocess limit instead of stalling the suite."""
    path = tmp_path / "hostile.gguf"
    path.write_bytes(header([array(b"tokenizer.ggml.scores", UINT8, 1 << 40)]) + bytes(8 << 20))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from packpath import load_pack; load_pack(); "
            "from wan22duo.engine.weights.gguf import describe_gguf; print(describe_gguf(sys.argv[2]))")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts"), str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "hostile.gguf is a truncated or damaged GGUF file" in done.stdout and "1099511627776" in done.stdout


def test_parsing_allocates_nothing_per_array_item(tmp_path):
    """Memory is bounded by the keys and tensors, not by the items of the arrays they hold."""
    items = 1 << 20
    path = tmp_path / "big-arrays.gguf"
    strings = b"".join(_str(b"") for _ in range(items // 8))
    path.write_bytes(header([array(b"scores", UINT8, items) + bytes(items), array(b"tokens", STRING, items // 8)
                             + strings]))
    tracemalloc.start()
    try:
        meta = parse_gguf_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert meta.values["scores"].count == items and meta.values["tokens"].count == items // 8
    assert peak < 64 << 10, peak  # 1 MiB of UINT8 items and 131072 strings: far below one byte per item


@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])
def test_valid_headers_read_as_the_gguf_package_reads_them(tmp_path, endian):
    path = tiny_gguf.write_tiny_gguf(tmp_path / "t.gguf", qtype="Q4_K", patch="orig_shape", **SIZES)
    if endian == "BIG":  # the same tensors and metadata written in the other byte order
        src = gguf.GGUFReader(path)
        path = tmp_path / "big.gguf"
        writer = gguf.GGUFWriter(str(path), arch="wan", endianess=gguf.GGUFEndian.BIG)
        for f in src.fields.values():
            if f.name.startswith("comfy.gguf.orig_shape."):
                writer.add_array(f.name, [int(f.parts[i][0]) for i in f.data])
        for t in src.tensors:
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    ours = read_gguf_header(path)
    reader = gguf.GGUFReader(path)
    assert ours.arch == "wan"
    assert len(ours.tensors) == len(reader.tensors) > 10
    for t in reader.tensors:
        mine = ours.tensors[t.name]
        field = reader.get_field("comfy.gguf.orig_shape." + t.name)
        shape = tuple(int(field.parts[i][0]) for i in field.data) if field else tuple(reversed(t.shape.tolist()))
        assert (mine.type, mine.shape, mine.start, mine.end) == (t.tensor_type.name, shape, t.data_offset,
                                                                 t.data_offset + t.n_bytes), t.name
