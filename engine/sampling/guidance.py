"""Classifier-free guidance's two model passes as one forward of twice the batch.

The conditional and unconditional passes see the same latent and timestep and differ
only in the text context, so ``model(cat[x, x], cat[t, t], cat[c_pos, c_neg])`` gives
both velocities in one forward: each weight is read once per step instead of twice,
and the launches and Python overhead of the second forward go away. Every operation
of the DiT is per sample, so the result equals two passes up to float summation order.

It applies when the contexts can share one tensor: equal lengths, or (for a model
whose ``pads_context`` is true, as ``WanModel`` and the parallel wrappers of it, which
pad every context with zero rows to ``text_len`` themselves) both no longer than
``text_len``, padded here in the same way. Otherwise, when the batched
forward runs out of memory (that model then keeps two passes for the rest of the
process), or when switched off with :func:`set_batched_guidance`, the sampler runs
the two passes one after the other.
"""
from __future__ import annotations

import logging
import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..memory.residency import free_cached_memory

log = logging.getLogger(__name__)

_enabled = True
_two_pass: "weakref.WeakSet" = weakref.WeakSet()  # models whose batch-2B forward ran out of memory


def set_batched_guidance(enabled: bool) -> bool:
    """Allow (True, the default) or forbid the batched forward; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def batched_guidance_enabled() -> bool:
    """Whether guidance may batch its two passes (what the activation estimate must count)."""
    return _enabled


def prefer_two_passes(model: Callable) -> None:
    """Run ``model``'s guidance as two passes from now on (its memory budget has no room for batch 2B)."""
    _mark(model)


def shared_contexts(model: Callable, positive: torch.Tensor,
                    negative: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(positive, negative)`` at one common length, or None when they cannot share a batch."""
    if positive.shape == negative.shape:
        return positive, negative
    if not getattr(model, "pads_context", False) or positive.shape[0] != negative.shape[0]:
        return None
    text_len = model.config.text_len
    if max(positive.shape[1], negative.shape[1]) > text_len:
        return None  # the model would use them whole, at different lengths

    def pad(c: torch.Tensor) -> torch.Tensor:
        return F.pad(c, (0, 0, 0, text_len - c.shape[1]))

    return pad(positive), pad(negative)


def batched_passes(model: Callable, x_in: torch.Tensor, t: torch.Tensor, positive: torch.Tensor,
                   negative: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Float32 ``(v_cond, v_uncond)`` from one forward of batch 2B, or None: run two passes."""
    if not _enabled or _marked(model):
        return None
    contexts = shared_contexts(model, positive, negative)
    if contexts is None:
        return None
    b = x_in.shape[0]
    t = torch.as_tensor(t)
    t2 = torch.cat([t, t]) if t.ndim else t
    try:
        v = model(torch.cat([x_in, x_in]), t2, torch.cat(contexts)).float()
    except torch.OutOfMemoryError:
        _mark(model)
        log.warning("classifier-free guidance at batch %d ran out of memory; running the conditional and "
                    "unconditional passes one after the other from now on", 2 * b)
        free_cached_memory(x_in.device, collect=False)
        return None
    return v[:b], v[b:]


def _marked(model: Callable) -> bool:
    try:
        return model in _two_pass
    except TypeError:
        return False


def _mark(model: Callable) -> None:
    try:
        _two_pass.add(model)
    except TypeError:  # not weak-referenceable: it simply retries next step
        pass
