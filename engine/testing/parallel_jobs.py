"""Jobs for a ``engine.parallel.workers.WorkerGroup`` that tests and benches send.

They are module-level functions so the driver can pickle them by name; each runs on
every rank with the same arguments and rank 0's return value comes back.
"""
from __future__ import annotations

import time

import torch

from ..parallel.cfg import CfgParallel, split_groups
from ..parallel.sequence import SequenceParallel
from ..parallel.workers import Context
from ..sampling.loop import StepInfo, guided_velocity
from ..weights.checkpoint import load_dit


def forward_job(ctx: Context, path: str, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> dict:
    """One sequence-parallel forward of the DiT at ``path``; the velocity and this rank's traffic."""
    model = SequenceParallel(load_dit(path, compute_dtype=torch.float32, device=ctx.device))
    with torch.no_grad():
        velocity = model(x, t, context)
    return {"velocity": velocity, "traffic": model.traffic}


def guided_job(ctx: Context, path: str, x: torch.Tensor, t: torch.Tensor, positive: torch.Tensor,
               negative: torch.Tensor, cfg: float) -> dict:
    """The sampler's guidance (``engine.sampling.loop.guided_velocity``) on a sequence-parallel model."""
    model = SequenceParallel(load_dit(path, compute_dtype=torch.float32, device=ctx.device))
    with torch.no_grad():
        velocity = guided_velocity(model, x, t, positive, negative, cfg)
    return {"velocity": velocity, "traffic": model.traffic}


def cfg_job(ctx: Context, path: str, x: torch.Tensor, t: torch.Tensor, positive: torch.Tensor,
            negative: torch.Tensor, cfg: float) -> dict:
    """The guided velocity with the two passes on two halves of the group (each half sequence-parallel when >1)."""
    sequence_group, cfg_group = split_groups(True)
    model = load_dit(path, compute_dtype=torch.float32, device=ctx.device)
    if ctx.world > 2:
        model = SequenceParallel(model, sequence_group)
    guided = CfgParallel(model, cfg_group)
    with torch.no_grad():
        velocity = guided.guided_velocity(x, t, positive, negative, cfg)
    return {"velocity": velocity, "traffic": guided.traffic}


def slow_step(info: StepInfo) -> None:
    """A sampler callback that makes each step last a while, so a test can kill a worker mid-run."""
    time.sleep(0.25)


def sleep_job(ctx: Context, seconds: float) -> int:
    """A job that takes ``seconds`` (for the driver's timeout)."""
    time.sleep(seconds)
    return ctx.rank
