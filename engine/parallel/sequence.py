"""Sequence parallel (DeepSpeed-Ulysses style): one DiT forward split over the ranks of a group.

Every rank holds the whole model and runs the same forward on the same inputs. After
the patch embedding, each rank keeps one contiguous slice of the ``L`` video tokens
(``L`` padded up to a multiple of the rank count ``P``), and everything token-wise
stays local: modulation, RoPE (each rank applies the rows of its own positions), the
cross-attention to the text (every rank has the whole context) and the FFN. Only
self-attention needs every token: its q, k and v ``[B, L/P, N, d]`` go through one
all-to-all each that trades tokens for heads, giving every rank all ``L`` tokens of
``N/P`` heads; the padding rows are dropped, attention runs, and one more all-to-all
brings the output back to ``[B, L/P, N, d]``. The head's output is all-gathered so that
every rank returns the whole velocity, and the sampler (the one loop) runs unchanged and
in step on every rank. This is the design of the official ``wan/distributed``
(sequence_parallel.py, ulysses.py) in the ``wan22`` package, written anew here; padding
is removed before attention instead of masked with key lengths.

Traffic per forward and rank (what :class:`Traffic` counts and :func:`all_to_all_bytes`
computes): ``4 * layers`` all-to-alls of ``B * L_pad/P * D`` elements in the compute
dtype, of which a rank sends ``(P-1)/P`` to the others, plus the gathered head output.

The number of heads must divide by the rank count (A14B: 40 heads; TI2V-5B: 24).
``torch.distributed`` carries the data (NCCL on GPUs, gloo on CPU); the group is made
by the caller (``torch.distributed.init_process_group`` / ``new_group``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import public
from ..model.attention import attention
from ..model.dit import WanConfig, WanModel


@public
class ParallelError(ValueError):
    """A model or input that cannot be split over this group."""


@dataclass
class Traffic:
    """Bytes this rank sent to other ranks (its own share of a collective is not counted)."""

    all_to_all: int = 0
    gather: int = 0
    calls: int = 0


def padded_length(length: int, ranks: int) -> int:
    """``length`` rounded up to a multiple of ``ranks``."""
    return math.ceil(length / ranks) * ranks


def all_to_all_bytes(config: WanConfig, tokens: int, ranks: int, batch: int = 1, element_bytes: int = 2) -> int:
    """Bytes one rank sends through all-to-all in one forward of ``tokens`` video tokens.

    Per block: q, k and v go out and the attention output comes back, four tensors of
    ``batch * L_pad/P * dim`` elements, of which ``(P-1)/P`` leave the rank.
    """
    local = padded_length(tokens, ranks) // ranks
    per_tensor = batch * local * config.dim * element_bytes
    return config.num_layers * 4 * per_tensor * (ranks - 1) // ranks


def gather_bytes(config: WanConfig, tokens: int, ranks: int, batch: int = 1) -> int:
    """Bytes one rank sends when the float32 head output ``[B, L_pad/P, 4*out_dim]`` is all-gathered."""
    local = padded_length(tokens, ranks) // ranks
    return batch * local * 4 * config.out_dim * 4 * (ranks - 1)


def step_bytes(config: WanConfig, tokens: int, ranks: int, passes: int = 2, batch: int = 1,
               element_bytes: int = 2) -> int:
    """Bytes one rank sends in one sampling step: ``passes`` forwards (2 with CFG) of all-to-all and gather."""
    forward = all_to_all_bytes(config, tokens, ranks, batch, element_bytes) + gather_bytes(config, tokens, ranks, batch)
    return passes * forward


class UlyssesSplit:
    """This rank's share of the tokens (``engine.model.dit.SequenceSplit``) over ``group``."""

    def __init__(self, group: Any = None, num_heads: Optional[int] = None) -> None:
        if not dist.is_initialized():
            raise ParallelError("sequence parallel needs torch.distributed: call init_process_group first "
                                "(engine.parallel.workers starts the processes and the group)")
        self.group = group
        self.ranks = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        if num_heads is not None and num_heads % self.ranks:
            raise ParallelError(f"the model has {num_heads} attention heads, which do not divide over "
                                f"{self.ranks} ranks; use a rank count that divides {num_heads}")
        self.traffic = Traffic()
        self.length = 0  # tokens of the current forward, without padding

    # ------------------------------------------------------------ split / gather
    def local(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's slice along ``dim`` of ``tensor`` padded (with zeros) to a multiple of the ranks."""
        missing = padded_length(tensor.shape[dim], self.ranks) - tensor.shape[dim]
        if missing:
            pad = [0, 0] * (tensor.ndim - 1 - dim) + [0, missing]
            tensor = F.pad(tensor, pad) if not tensor.is_complex() else torch.cat(
                [tensor, tensor.new_ones(*tensor.shape[:dim], missing, *tensor.shape[dim + 1:])], dim)
        return tensor.chunk(self.ranks, dim)[self.rank]

    def split(self, x: torch.Tensor, e: torch.Tensor, e0: torch.Tensor, freqs: torch.Tensor):
        """Slice tokens ``[B, L, D]``, RoPE rows ``[L, 1, d/2]`` and per-group time embeddings.

        ``e``/``e0`` with one group apply to every token and stay whole; with one group
        per frame or per token they are expanded to one row per token and sliced, so each
        local token keeps its own modulation (as the official code does for every model).
        """
        b, length, _ = x.shape
        self.length = length
        groups = e.shape[1]
        if groups > 1:
            e = e.repeat_interleave(length // groups, dim=1)
            e0 = e0.repeat_interleave(length // groups, dim=1)
            e, e0 = self.local(e, 1), self.local(e0, 1)
        return self.local(x, 1).contiguous(), e, e0, self.local(freqs, 0)

    def gather(self, out: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(out) for _ in range(self.ranks)]
        dist.all_gather(parts, out.contiguous(), group=self.group)
        self.traffic.gather += out.numel() * out.element_size() * (self.ranks - 1)
        return torch.cat(parts, dim=1)[:, :self.length]

    # ------------------------------------------------------------ attention
    def _exchange(self, chunks: torch.Tensor) -> torch.Tensor:
        """All-to-all over the first dim: chunk ``i`` goes to rank ``i``; slot ``i`` comes from rank ``i``."""
        received = torch.empty_like(chunks)
        dist.all_to_all_single(received, chunks, group=self.group)
        self.traffic.all_to_all += chunks.numel() * chunks.element_size() * (self.ranks - 1) // self.ranks
        self.traffic.calls += 1
        return received

    def heads_to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L/P, N, d]`` (local tokens, all heads) -> ``[B, L_pad, N/P, d]`` (all tokens, local heads)."""
        b, local, n, d = x.shape
        chunks = x.reshape(b, local, self.ranks, n // self.ranks, d).permute(2, 0, 1, 3, 4).contiguous()
        return self._exchange(chunks).permute(1, 0, 2, 3, 4).reshape(b, self.ranks * local, n // self.ranks, d)

    def sequence_to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`heads_to_sequence`."""
        b, padded, heads, d = x.shape
        local = padded // self.ranks
        chunks = x.reshape(b, self.ranks, local, heads, d).transpose(0, 1).contiguous()
        return self._exchange(chunks).permute(1, 2, 0, 3, 4).reshape(b, local, self.ranks * heads, d)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.shape[2] % self.ranks:
            raise ParallelError(f"{q.shape[2]} attention heads do not divide over {self.ranks} ranks")
        q, k, v = (self.heads_to_sequence(a) for a in (q, k, v))
        n = self.length
        out = attention(q[:, :n], k[:, :n], v[:, :n])  # the padding rows take no part
        out = F.pad(out.unflatten(-1, (q.shape[2], -1)), (0, 0, 0, 0, 0, q.shape[1] - n))
        return self.sequence_to_heads(out).flatten(2)


class WrapsModel(nn.Module):
    """A wrapper that answers for the model it runs: its ``config``, ``compute_dtype`` and ``blocks``
    (what ``ModelHandle``, the memory estimates and the loop read from an expert)."""

    model: nn.Module

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.model.compute_dtype

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.blocks


class SequenceParallel(WrapsModel):
    """A ``WanModel`` whose forward runs split over the ranks of ``group`` (the module doc).

    Called like the model (``(x, t, context) -> velocity``) and with its ``config``,
    ``compute_dtype`` and ``blocks``, so a ``ModelHandle`` of it is an expert of
    ``engine.sampling.loop.sample`` like any other. Every rank must call it with the
    same inputs, in the same order.
    """

    pads_context = True  # as the WanModel it runs: guidance may batch contexts of different lengths

    def __init__(self, model: WanModel, group: Any = None) -> None:
        super().__init__()
        if not isinstance(model, WanModel):
            raise ParallelError(f"sequence parallel runs a WanModel; got {type(model).__name__}")
        self.model = model
        self.split = UlyssesSplit(group, model.config.num_heads)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def traffic(self) -> Traffic:
        return self.split.traffic

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, context, sequence=self.split)
