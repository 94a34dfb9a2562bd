"""GGML block formats (the tensor encodings of GGUF files), decoded in torch on any device.

A quantized GGUF tensor is a run of fixed-size blocks along its innermost dimension:
each block holds ``block`` weights in ``size`` bytes (scales as float16, small integer
codes packed into bits). ``dequantize(raw, fmt, shape, dtype)`` turns the raw bytes (a
uint8 tensor, wherever it lives) into the weight in ``dtype``. The arithmetic runs in
float32 in the same order as the reference decoder (``gguf.quants``, which follows
ggml-quants.c), so the float32 result equals the reference bit for bit and a bf16 / fp16
result is that value rounded once. Large tensors are decoded in slices of
``CHUNK_ELEMENTS`` weights so the float32 temporaries stay small next to the output.

This module needs only torch (the ``gguf`` package is used to read files, in
``engine.weights.gguf``); ``engine.model.ops`` uses :class:`QuantFormat` to run layers on such bytes.

Layouts (bytes of one block, in file order; ``d`` / ``dmin`` / ``m`` float16):

=====  =====  ============================================================================
type   block  bytes
=====  =====  ============================================================================
Q4_0   32     d, 16 codes (low nibbles = weights 0-15, high = 16-31); w = d * (q - 8)
Q4_1   32     d, m, 16 codes as Q4_0; w = d * q + m
Q5_0   32     d, 4 bytes of 5th bits (bit j = weight j), 16 low-nibble bytes; w = d * (q - 16)
Q5_1   32     d, m, 5th bits, low nibbles as Q5_0; w = d * q + m
Q8_0   32     d, 32 int8 codes; w = d * q
Q2_K   256    16 bytes of 4-bit scale / 4-bit min per 16 weights, 64 bytes of 2-bit codes, d, dmin
Q3_K   256    32 bytes of high bits, 64 bytes of 2-bit codes, 12 bytes of 6-bit scales, d
Q4_K   256    d, dmin, 12 bytes of 6-bit scale / min pairs (8 groups of 32), 128 bytes of nibbles
Q5_K   256    d, dmin, 12 scale bytes as Q4_K, 32 bytes of 5th bits, 128 bytes of nibbles
Q6_K   256    128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, d
=====  =====  ============================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

CHUNK_ELEMENTS = 1 << 24  # weights decoded per slice: 64 MiB of float32 temporaries
QK = 256  # weights per K-type super-block

# name -> (torch dtype) for the formats torch holds natively
DENSE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


# ---------------------------------------------------------------- bit helpers


def _split(blocks: torch.Tensor, *sizes: int) -> list[torch.Tensor]:
    """The byte fields of ``blocks`` [n, size]; the last field takes the rest."""
    rest = blocks.shape[1] - sum(sizes)
    return list(torch.split(blocks, [*sizes, rest], dim=1))


def _half(field: torch.Tensor) -> torch.Tensor:
    """A 2-byte little-endian float16 field [n, 2] as float32 [n, 1]."""
    return field.contiguous().view(torch.float16).float()


def _fields(q: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """The ``count`` bit fields of ``width`` bits in each byte, lowest first: [..., k] -> [..., count, k]."""
    mask = (1 << width) - 1
    return torch.stack([(q >> (width * i)) & mask for i in range(count)], dim=-2)


def _bits_in_order(q: torch.Tensor) -> torch.Tensor:
    """Little-endian bit array: bytes [n, k] -> bits [n, 8k], bit j of the array = byte j//8, bit j%8."""
    return _fields(q, 1, 8).transpose(1, 2).reshape(q.shape[0], -1)


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K / Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit mins, each [n, 8] float32.

    Bytes 0-3 hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits; groups 4-7 take
    their low 4 bits from the nibbles of bytes 8-11 and their top 2 bits from the top 2
    bits of bytes 0-3 (scales) and 4-7 (mins).
    """
    lo_sc, lo_mn, nib = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat([lo_sc & 63, (nib & 15) | ((lo_sc >> 6) << 4)], dim=1)
    mins = torch.cat([lo_mn & 63, (nib >> 4) | ((lo_mn >> 6) << 4)], dim=1)
    return scales.float(), mins.float()


# ---------------------------------------------------------------- block decoders: [n, size] -> [n, block] float32


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    d, qs = _split(b, 2)
    q = _fields(qs, 4, 2).reshape(b.shape[0], 32)
    return _half(d) * (q.float() - 8)


def _q4_1(b: torch.Tensor) -> torch.Tensor:
    d, m, qs = _split(b, 2, 2)
    q = _fields(qs, 4, 2).reshape(b.shape[0], 32)
    return _half(d) * q.float() + _half(m)


def _q5_codes(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    low = _fields(qs, 4, 2).reshape(qs.shape[0], 32)
    return (low | (_bits_in_order(qh) << 4)).float()


def _q5_0(b: torch.Tensor) -> torch.Tensor:
    d, qh, qs = _split(b, 2, 4)
    return _half(d) * (_q5_codes(qh, qs) - 16)


def _q5_1(b: torch.Tensor) -> torch.Tensor:
    d, m, qh, qs = _split(b, 2, 2, 4)
    return _half(d) * _q5_codes(qh, qs) + _half(m)


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    d, qs = _split(b, 2)
    return _half(d) * qs.contiguous().view(torch.int8).float()


def _q2_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    sc, qs, d, dmin = _split(b, 16, 64, 2)
    scale = (_half(d) * (sc & 15).float()).unsqueeze(2)  # [n, 16, 1]: one per 16 weights
    low = (_half(dmin) * (sc >> 4).float()).unsqueeze(2)
    # two halves of 128 weights; in each, 2-bit field f of byte i is weight 32 f + i
    q = _fields(qs.reshape(n, 2, 32), 2, 4).reshape(n, 16, 16).float()
    return (scale * q - low).reshape(n, QK)


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    hmask, qs, sc, d = _split(b, 32, 64, 12)
    # 16 6-bit scales: low 4 bits from the nibbles of bytes 0-7, high 2 bits from bytes 8-11
    low4 = _fields(sc[:, :8], 4, 2).reshape(n, 16)
    high2 = _fields(sc[:, 8:], 2, 4).reshape(n, 16)
    scale = (_half(d) * ((low4 | (high2 << 4)).float() - 32)).unsqueeze(2)  # [n, 16, 1]
    low = _fields(qs.reshape(n, 2, 32), 2, 4).reshape(n, 16, 16).float()
    high = _fields(hmask.reshape(n, 1, 32), 1, 8).reshape(n, 16, 16).float()
    # the code is low - 4, raised by 4 where the high-mask bit is set
    return (scale * (low - 4 * (1 - high))).reshape(n, QK)


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin, sc, qs = _split(b, 2, 2, 12)
    scales, mins = _k_scales(sc)
    scale = (_half(d) * scales).unsqueeze(2)  # [n, 8, 1]: one per 32 weights
    low = (_half(dmin) * mins).unsqueeze(2)
    q = _fields(qs.reshape(n, 4, 32), 4, 2).reshape(n, 8, 32).float()
    return (scale * q - low).reshape(n, QK)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin, sc, qh, qs = _split(b, 2, 2, 12, 32)
    scales, mins = _k_scales(sc)
    scale = (_half(d) * scales).unsqueeze(2)
    low = (_half(dmin) * mins).unsqueeze(2)
    q_low = _fields(qs.reshape(n, 4, 32), 4, 2).reshape(n, 8, 32)
    q_high = _fields(qh.reshape(n, 1, 32), 1, 8).reshape(n, 8, 32)
    return (scale * (q_low | (q_high << 4)).float() - low).reshape(n, QK)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql, qh, sc, d = _split(b, 128, 64, 16)
    scale = (_half(d) * sc.contiguous().view(torch.int8).float()).unsqueeze(2)  # [n, 16, 1]
    q_low = _fields(ql.reshape(n, 2, 64), 4, 2).reshape(n, 8, 32)
    q_high = _fields(qh.reshape(n, 2, 32), 2, 4).reshape(n, 8, 32)
    q = (q_low | (q_high << 4)).float().reshape(n, 16, 16) - 32
    return (scale * q).reshape(n, QK)


@dataclass(frozen=True)
class BlockType:
    name: str
    block: int  # weights per block
    size: int  # bytes per block
    decode: Callable[[torch.Tensor], torch.Tensor]


BLOCK_TYPES = {t.name: t for t in (
    BlockType("Q8_0", 32, 34, _q8_0),
    BlockType("Q6_K", QK, 210, _q6_k),
    BlockType("Q5_K", QK, 176, _q5_k),
    BlockType("Q5_1", 32, 24, _q5_1),
    BlockType("Q5_0", 32, 22, _q5_0),
    BlockType("Q4_K", QK, 144, _q4_k),
    BlockType("Q4_1", 32, 20, _q4_1),
    BlockType("Q4_0", 32, 18, _q4_0),
    BlockType("Q3_K", QK, 110, _q3_k),
    BlockType("Q2_K", QK, 84, _q2_k),
)}
SUPPORTED = (*DENSE, *BLOCK_TYPES)


def nbytes(fmt: str, numel: int) -> int:
    """Bytes ``numel`` weights take in ``fmt`` (``numel`` a whole number of blocks)."""
    if fmt in DENSE:
        return numel * DENSE[fmt].itemsize
    t = BLOCK_TYPES[fmt]
    return numel // t.block * t.size


def dequantize(raw: torch.Tensor, fmt: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The weight of logical ``shape`` encoded in ``raw`` (uint8, any shape, C order) as ``dtype``.

    Runs where ``raw`` is. Dense formats are a reinterpretation plus one cast.
    """
    if fmt in DENSE:
        return raw.contiguous().view(DENSE[fmt]).reshape(shape).to(dtype)
    t = BLOCK_TYPES[fmt]
    numel = math.prod(shape)
    if numel % t.block or raw.numel() != numel // t.block * t.size:
        raise ValueError(f"{fmt} data of {raw.numel()} bytes does not encode a tensor of shape {list(shape)} "
                         f"({t.size} bytes per {t.block} weights)")
    blocks = raw.reshape(-1, t.size)
    step = max(1, CHUNK_ELEMENTS // t.block)
    if blocks.shape[0] <= step:  # one slice: no output buffer to copy through
        return t.decode(blocks).to(dtype).view(shape)
    out = torch.empty(blocks.shape[0], t.block, dtype=dtype, device=raw.device)
    for start in range(0, blocks.shape[0], step):
        out[start:start + step] = t.decode(blocks[start:start + step])
    return out.view(shape)


@dataclass(frozen=True)
class QuantFormat:
    """How a layer's uint8 ``weight`` encodes the real weight: a GGML block type and its shape.

    Set as a layer's ``weight_format`` (``engine.model.ops``); the layer decodes at every call.
    It holds no tensors, so it needs nothing when the layer moves between devices.
    """

    name: str
    shape: tuple[int, ...]

    def dequantize(self, raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(raw, self.name, self.shape, dtype)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)
