"""The one attention entry point of the DiT.

Every attention call in ``engine.dit`` goes through :func:`attention`, so a faster
kernel (FlashAttention, SageAttention, xformers, ...) can be plugged in later with
:func:`set_attention_backend` without touching the model. The default is torch's
``scaled_dot_product_attention``, which picks a fused kernel per device (flash or
memory-efficient on CUDA, a blocked flash kernel on CPU).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

# (q, k, v) in [B, N, L, d] layout -> [B, N, L_q, d]; full bidirectional, no mask,
# softmax scale 1/sqrt(d).
Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


_backend: Backend = sdpa_backend


def set_attention_backend(backend: Optional[Backend]) -> Backend:
    """Use ``backend`` for every DiT attention from now on (``None``: back to SDPA).

    Returns the previous backend so a caller can restore it.
    """
    global _backend
    previous = _backend
    _backend = sdpa_backend if backend is None else backend
    return previous


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention over ``[B, L, N, d]`` tensors; returns ``[B, L_q, N*d]``.

    q, k and v must share a dtype (the model's compute dtype); the output has it too.
    """
    out = _backend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)
