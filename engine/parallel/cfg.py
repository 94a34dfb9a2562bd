"""CFG parallel: the conditional and unconditional passes of a step on two ranks at once.

Classifier-free guidance needs two forwards per step that differ only in the text
context. On two ranks (two GPUs), rank 0 runs the conditional pass and rank 1 the
unconditional one at the same time; one all-gather of the two float32 velocities lets
both ranks form ``v_u + cfg * (v_c - v_u)``, so both continue in step with the same
latent. The wrapped model may itself be a ``SequenceParallel`` over another group (four
ranks: two CFG halves of two sequence ranks each, see :func:`split_groups`).

The wrapper offers ``guided_velocity``, which ``engine.sampling.loop.guided_velocity``
calls instead of its own guidance, so the one loop is unchanged. With ``cfg == 1``
there is one pass, and both ranks run it (no traffic).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .sequence import ParallelError, Traffic, WrapsModel


class CfgParallel(WrapsModel):
    """``model`` with its two guidance passes split over the two ranks of ``group``."""

    def __init__(self, model: nn.Module, group: Any = None) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise ParallelError("CFG parallel needs torch.distributed: call init_process_group first")
        ranks = dist.get_world_size(group)
        if ranks != 2:
            raise ParallelError(f"CFG parallel runs on exactly 2 ranks (a conditional and an unconditional "
                                f"pass); this group has {ranks}")
        self.model = model
        self.group = group
        self.rank = dist.get_rank(group)
        self.traffic = Traffic()

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, context)

    def guided_velocity(self, x_in: torch.Tensor, t: torch.Tensor, positive: torch.Tensor,
                        negative: torch.Tensor, cfg: float) -> torch.Tensor:
        if cfg == 1.0:
            return self.model(x_in, t, positive).float()
        mine = self.model(x_in, t, positive if self.rank == 0 else negative).float().contiguous()
        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine, group=self.group)
        self.traffic.gather += mine.numel() * mine.element_size()
        self.traffic.calls += 1
        v_cond, v_uncond = both
        return v_uncond + cfg * (v_cond - v_uncond)


def split_groups(cfg_parallel: bool) -> tuple[Any, Any]:
    """``(sequence_group, cfg_group)`` for this rank of the default group.

    Without CFG parallel every rank is one sequence group (``cfg_group`` None). With
    it, ranks ``[0, P/2)`` run the conditional pass and ``[P/2, P)`` the unconditional
    one, each half a sequence group; rank ``r`` and ``r + P/2`` form a CFG pair. Every
    rank must call this, in the same order (``new_group`` is collective).
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    if not cfg_parallel:
        return None, None
    if world % 2:
        raise ParallelError(f"CFG parallel halves the ranks; {world} ranks do not halve")
    half = world // 2
    sequence_groups = [dist.new_group(list(range(s, s + half))) for s in (0, half)]
    cfg_groups = [dist.new_group([r, r + half]) for r in range(half)]
    return sequence_groups[rank // half], cfg_groups[rank % half]
