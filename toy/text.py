"""A deterministic toy text encoder with umT5-XXL's output layout: ``[1, 512, 4096]``, rows past the prompt zero.

Each word of a caption becomes one row: a fixed pseudo-random unit vector for the word plus a smaller one
for its position, so "red ... blue" and "blue ... red" differ (the DiT's cross-attention has no positions
of its own). The vectors come from ``torch.Generator`` seeded by a stable hash of the word, so every
machine gets the same context. The empty caption gives all zeros, as a negative prompt "" would pad.

A demo and test tool, not a product node and no model of language: only the toy's vocabulary means
anything to the toy experts.
"""
from __future__ import annotations

import hashlib

import torch

TEXT_DIM = 4096
TEXT_LEN = 512
POSITION_WEIGHT = 0.5


def _unit(name: str) -> torch.Tensor:
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    v = torch.randn(TEXT_DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (v / v.norm() * TEXT_DIM ** 0.5 * 0.1).float()  # rows of RMS 0.1, like umT5's small activations


def encode_rows(caption: str) -> torch.Tensor:
    """The prompt rows only: ``[words, 4096]`` float32."""
    words = caption.lower().split()
    if len(words) > TEXT_LEN:
        raise ValueError(f"caption has {len(words)} words; the toy encoder takes at most {TEXT_LEN}")
    if not words:
        return torch.zeros(0, TEXT_DIM)
    return torch.stack([_unit("word:" + w) + POSITION_WEIGHT * _unit(f"pos:{i}") for i, w in enumerate(words)])


def encode(caption: str) -> torch.Tensor:
    """``[1, 512, 4096]`` float32: the caption's rows, then zero rows."""
    rows = encode_rows(caption)
    out = torch.zeros(1, TEXT_LEN, TEXT_DIM)
    out[0, : rows.shape[0]] = rows
    return out


def conditioning(caption: str):
    """A ComfyUI CONDITIONING (``[[context, {}]]``) holding the toy encoding of ``caption``."""
    return [[encode(caption), {}]]
