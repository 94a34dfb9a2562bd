"""Expert weights under a device budget, with the checkpoint file as their host copy.

Two mechanisms, used by ``engine.memory.residency`` when it moves an expert:

**The file is the host copy.** ``engine.weights.checkpoint.load_dit`` memory-maps the file and
records, for every parameter held exactly as the file stores it, the view of the mapped
bytes (:func:`register_file_view`). :func:`to_host` (what offloading does) points those
parameters back at their views instead of copying the device tensors into RAM: the
device copy is freed and the only "RAM copy" is the mapping, i.e. the kernel's page
cache, which it may evict and read again. Coming back to the device copies from the
mapping. Parameters whose host form is *not* the file's bytes (converted on load by
``weight_dtype``, merged with a LoRA) are copied to RAM as before: that costs their size
in anonymous memory, once per expert (a LoRA merged into every Linear of a bf16 14B
expert: about 28 GB). A LoRA on fp8 weights runs beside them (``ops.LoraBranch``): only
the small branches are copied.

**Weight streaming.** :func:`place` moves an expert to its device within a byte budget.
Everything outside ``model.blocks`` and the leading blocks that fit stay resident; each
remaining block lives on the host and is copied to the device by a forward pre-hook just
before it runs and dropped by a forward hook right after. What it computes is the same
module with the same bytes, so outputs are bit-identical to the resident model. How the
bytes travel is a :class:`Link`:

* :class:`SyncLink`: plain ``Tensor.to`` (CPU devices; no overlap machinery);
* :class:`CudaLink`: a side stream and two pinned staging buffers, so the next streamed
  block's copy overlaps the current block's compute (double buffering: a budget must hold
  two streamed blocks at once). Its CUDA calls are :class:`CudaApi`'s; tests and the
  ``--tiny`` bench run it against ``engine.testing.stream_sim.DeferredCuda``, which defers the
  side stream's work until a wait forces it, so a missing wait shows on CPU;
* :class:`CountingLink`: a synchronous link that really copies even from CPU to CPU, so
  tests and ``bench/bench_memory.py`` can count device-side bytes on a machine without
  a GPU; ``asynchronous=True`` makes it defer each copy until it is waited for, which
  exercises the prefetch order (the CUDA link's one) on CPU.

Every move goes through ``Module._apply`` (what ``Module.to`` uses), so any weight form
that moves with ``.to()`` streams unchanged: plain, fp8 with scales, LoRA branches, GGUF's
raw quantized bytes (``engine.weights.gguf``; tested). The hooks are ordinary forward pre-hooks /
hooks on each block, so what replaces a block's ``forward`` (``engine.sampling.fast.compile_blocks``
sets a compiled one) or the attention kernel composes: the hooks run eagerly around it.

``auto`` subtracts the activation estimate of the guidance that will run: one batched
forward of both passes (``engine.sampling.guidance``) doubles the activations; when that leaves
less room, :func:`choose_plan` takes whichever of batched / two passes copies fewer bytes
per step and tells the guidance.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from .estimates import AUTO, BudgetError, gib, parse_budget

log = logging.getLogger(__name__)

FILE_VIEWS = "_wan_file_views"  # per owning module: {attr: view of the mapped file}
STREAMER = "_wan_streamer"  # the Streamer attached to a placed model


# ---------------------------------------------------------------- the file as the host copy


def register_file_view(module: nn.Module, attr: str, view: torch.Tensor) -> None:
    """Record that ``module.<attr>`` holds exactly the bytes of ``view`` (a view of the mapped file)."""
    views = module.__dict__.setdefault(FILE_VIEWS, {})
    views[attr] = view


def forget_file_view(module: nn.Module, attr: str) -> None:
    """``module.<attr>`` no longer equals the file (a LoRA merged into it, say)."""
    views = module.__dict__.get(FILE_VIEWS)
    if views:
        views.pop(attr, None)


def file_backed(module: nn.Module, attr: str) -> Optional[torch.Tensor]:
    """The file view ``module.<attr>`` can be rebound to, or None."""
    view = module.__dict__.get(FILE_VIEWS, {}).get(attr)
    current = getattr(module, attr, None)
    if view is None or current is None or current.shape != view.shape or current.dtype != view.dtype:
        return None
    return view


def rebind_to_file(model: nn.Module) -> tuple[int, int]:
    """Point every file-backed parameter at its file view; returns (bytes rebound, bytes not file-backed)."""
    rebound = other = 0
    for module in model.modules():
        for attr, param in list(module._parameters.items()):
            if param is None:
                continue
            view = file_backed(module, attr)
            if view is None:
                other += param.nbytes
            else:
                if param.data_ptr() != view.data_ptr():
                    param.data = view
                rebound += param.nbytes
    return rebound, other


def to_host(module: Any, device: torch.device) -> Any:
    """Offload: stop streaming, drop the device copies of file-backed weights (the mapping is the
    host copy), copy only what differs from the file to ``device`` (CPU RAM)."""
    if not isinstance(module, nn.Module):
        return module
    streamer = module.__dict__.get(STREAMER)
    if streamer is not None:
        streamer.detach()
    rebound, other = rebind_to_file(module)
    if rebound:
        log.info("offload: %s of weights now read from the file mapping, %s copied to %s", gib(rebound),
                 gib(other), device)
    return module.to(device)


# ---------------------------------------------------------------- bytes


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of the tensors that move with ``module``: parameters, buffers, LoRA branches."""
    total = sum(t.nbytes for t in module.parameters()) + sum(t.nbytes for t in module.buffers())
    for sub in module.modules():
        for branch in getattr(sub, "lora_branches", ()):
            total += branch.up.nbytes + (0 if branch.down is None else branch.down.nbytes)
    return total


def device_total(device: torch.device) -> Optional[int]:
    """Total memory of an accelerator, or None for the CPU (the budget concerns accelerators)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def device_free(device: torch.device) -> Optional[int]:
    """Bytes a new allocation can get on ``device`` now: free memory plus the caching allocator's slack."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


# ---------------------------------------------------------------- links


class Link:
    """How tensors get to a device. Synchronous unless ``asynchronous``."""

    asynchronous = False

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def move(self, t: torch.Tensor) -> torch.Tensor:
        """A device copy of ``t``, ready when this returns (resident parts)."""
        return t.to(self.device)

    def begin(self, nbytes: int) -> None:
        """A batch of :meth:`copy` calls for one block (``nbytes`` in all) starts."""

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        return self.move(t)

    def end(self) -> Any:
        """The batch is issued; returns a ticket :meth:`wait` takes before the tensors are read."""
        return None

    def wait(self, ticket: Any) -> None:
        pass

    def total(self) -> Optional[int]:
        return device_total(self.device)

    def free(self) -> Optional[int]:
        return device_free(self.device)


class SyncLink(Link):
    """``Tensor.to``; on a CPU device this copies nothing (the host tensor is used as is)."""


class CountingLink(Link):
    """Copies every tensor (CPU to CPU too) so the "device side" is separate memory that can be
    counted; ``total_bytes``/``free_bytes`` play the device's size. ``asynchronous=True`` defers
    each batch's copies to :meth:`wait`, like a copy engine, and logs the order of events."""

    def __init__(self, device: torch.device = torch.device("cpu"), total_bytes: Optional[int] = None,
                 free_bytes: Optional[int] = None, asynchronous: bool = False):
        super().__init__(device)
        self.total_bytes, self.free_bytes = total_bytes, free_bytes
        self.asynchronous = asynchronous
        self.events: list[tuple[str, int]] = []  # ("copy", batch) / ("wait", batch)
        self._batch: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._count = 0

    def move(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, copy=True)

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        if not self.asynchronous or not _plain(t):
            return self.move(t)
        out = torch.empty_like(t, device=self.device)  # filled when waited for, as a copy engine would
        self._batch.append((out, t.detach()))  # t may be a Parameter about to point at out
        return out

    def end(self) -> Any:
        self._count += 1
        ticket = (self._count, self._batch)
        self._batch = []
        self.events.append(("copy", self._count))
        return ticket

    def wait(self, ticket: Any) -> None:
        if ticket is None or not ticket[1]:
            return  # synchronous, or already complete
        number, pairs = ticket
        for out, src in pairs:
            out.copy_(src)
        pairs.clear()
        self.events.append(("wait", number))

    def total(self) -> Optional[int]:
        return self.total_bytes

    def free(self) -> Optional[int]:
        return self.free_bytes


class CudaApi:
    """The CUDA calls :class:`CudaLink` makes, one line each, so that its logic (buffer turns,
    fences, waits) can also run on CPU against ``engine.testing.stream_sim.DeferredCuda``, a stand-in
    that runs the side stream's work as late as CUDA allows. Streams and events are used
    through their own methods (``wait_event``, ``record``, ``synchronize``)."""

    def stream(self, device: torch.device):
        return torch.cuda.Stream(device)

    def current_stream(self, device: torch.device):
        return torch.cuda.current_stream(device)

    def event(self):
        return torch.cuda.Event()

    def pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def copy_on(self, side, compute, stage: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A device copy of the pinned ``stage``, allocated and copied on ``side``. Marked as used by
        ``compute``, so the caching allocator reuses its memory only after the compute that reads it."""
        with torch.cuda.stream(side):
            out = torch.empty_like(stage, device=device)
            out.copy_(stage, non_blocking=True)
        out.record_stream(compute)
        return out

    def total(self, device: torch.device) -> Optional[int]:
        return device_total(device)

    def free(self, device: torch.device) -> Optional[int]:
        return device_free(device)


class CudaLink(Link):
    """Copies on a side stream through two pinned staging buffers (CUDA, or its CPU stand-in).

    The host tensors are views of the mapped file (pageable memory), which CUDA can only
    copy synchronously; so each block is first copied by the CPU into a pinned staging
    buffer and from there to the device on the side stream, while the compute stream
    runs the current block. Two buffers alternate; before a buffer is refilled, the CPU
    waits for the copy that last read it. Device tensors are allocated on the side stream
    and marked as used by the compute stream, so the caching allocator frees them only
    after the compute that reads them. ``api``: :class:`CudaApi` (the default) or a stand-in.
    """

    asynchronous = True

    def __init__(self, device: torch.device, block_bytes: int, api: Optional[CudaApi] = None):
        super().__init__(device)
        self.api = api or CudaApi()
        self.block_bytes = block_bytes
        self.stream: Any = None
        self.buffers: list[torch.Tensor] = []  # made on first use: a fully resident expert needs none
        self.fences: list[Any] = [None, None]
        self._turn, self._offset = 1, 0

    def begin(self, nbytes: int) -> None:
        if not self.buffers:
            self.stream = self.api.stream(self.device)
            size = self.block_bytes + 64 * 1024  # room for 64-byte alignment of every tensor
            self.buffers = [self.api.pinned(size) for _ in range(2)]
        self._turn ^= 1
        self._offset = 0
        fence = self.fences[self._turn]
        if fence is not None:
            fence.synchronize()  # the copy that last read this buffer is done

    def copy(self, t: torch.Tensor) -> torch.Tensor:
        if not _plain(t) or not t.is_contiguous():
            return t.to(self.device)  # a tensor subclass (a quantised form) moves its own way, synchronously
        start = -(-self._offset // 64) * 64
        if start + t.nbytes > self.buffers[self._turn].numel():
            raise RuntimeError(f"streamed block larger than its staging buffer ({self.block_bytes} bytes); "
                               f"the link was made for a smaller block")
        stage = self.buffers[self._turn][start:start + t.nbytes].view(t.dtype).view(t.shape)
        self._offset = start + t.nbytes
        stage.copy_(t)
        return self.api.copy_on(self.stream, self.api.current_stream(self.device), stage, self.device)

    def end(self) -> Any:
        event = self.api.event()
        event.record(self.stream)
        self.fences[self._turn] = event
        return event

    def wait(self, ticket: Any) -> None:
        if ticket is not None:
            self.api.current_stream(self.device).wait_event(ticket)

    def total(self) -> Optional[int]:
        return self.api.total(self.device)

    def free(self) -> Optional[int]:
        return self.api.free(self.device)


def _plain(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter)


def default_link(device: torch.device, block_bytes: int) -> Link:
    return CudaLink(device, block_bytes) if device.type == "cuda" else SyncLink(device)


# ---------------------------------------------------------------- budget


@dataclass(frozen=True)
class Budget:
    """What the weights of one expert may occupy on its device.

    ``spec``: ``"auto"`` (free device memory minus ``activations``), a number of GiB, or
    None (no budget: the whole expert goes to the device, as without streaming).
    ``activations``: the run's activation estimate (``memory.activation_bytes``);
    ``fallback``: a smaller estimate ``auto`` may use when ``activations`` leaves too
    little for streaming (two guidance passes instead of one batched forward: the
    guidance then runs out of memory once and keeps to two passes, ``engine.sampling.guidance``).
    ``on_two_passes``: called with the model when :func:`choose_plan` picks two passes, so
    the guidance does not first try the batched forward (the sampler passes
    ``guidance.prefer_two_passes``; this package is told, it never asks the guidance).
    ``link``: a factory ``(device, block_bytes) -> Link`` (tests pass a ``CountingLink``).
    """

    spec: Any = AUTO
    activations: int = 0
    fallback: int = 0
    link: Optional[Callable[[torch.device, int], Link]] = None
    on_two_passes: Optional[Callable[[nn.Module], None]] = None

    def __post_init__(self):
        object.__setattr__(self, "spec", parse_budget(self.spec))

    def make_link(self, device: torch.device, block_bytes: int) -> Link:
        return (self.link or default_link)(device, block_bytes)


@dataclass
class Plan:
    resident_blocks: list[int]
    streamed_blocks: list[int]
    resident_bytes: int  # outside the blocks plus the resident blocks
    block_bytes: list[int]
    budget_bytes: Optional[int]

    @property
    def streams(self) -> bool:
        return bool(self.streamed_blocks)


def weight_budget_bytes(budget: Budget, link: Link, held: int = 0, fallback: bool = False) -> Optional[int]:
    """The budget in bytes on the link's device, or None when nothing limits it.

    ``held``: bytes this expert already has on the device (they count as free for it).
    Raises :class:`BudgetError` for a budget larger than the device.
    """
    total = link.total()
    if budget.spec is None:
        return None
    if budget.spec == AUTO:
        free = link.free()
        if free is None:
            return None  # a CPU device: the weights are read from the mapping, nothing to stream
        return max(0, free + held - (budget.fallback if fallback else budget.activations))
    want = int(budget.spec * 1024 ** 3)
    if total is not None and want > total:
        raise BudgetError(f"memory budget {budget.spec:g} GB is larger than {link.device} ({gib(total)} in all); "
                          f"use auto or at most {total / 1024 ** 3:.1f}")
    return want


def plan(model: nn.Module, budget_bytes: Optional[int], double_buffer: bool) -> Plan:
    """Which blocks stay resident: everything outside the blocks, then blocks in order while they fit."""
    blocks = list(model.blocks)
    sizes = [tensor_bytes(b) for b in blocks]
    outside = tensor_bytes(model) - sum(sizes)
    if budget_bytes is None or outside + sum(sizes) <= budget_bytes:
        return Plan(list(range(len(blocks))), [], outside + sum(sizes), sizes, budget_bytes)
    window = (2 if double_buffer else 1) * max(sizes)
    need = outside + window
    if budget_bytes < need:
        raise BudgetError(
            f"memory budget {gib(budget_bytes)} for the weights is smaller than the least streaming needs: "
            f"{gib(outside)} outside the blocks plus {'two blocks' if double_buffer else 'one block'} of "
            f"{gib(max(sizes))} in flight ({gib(need)}); raise the budget, use an fp8 file, or a smaller model")
    resident, used = [], outside
    for i, size in enumerate(sizes):
        if used + size + window > budget_bytes:
            break
        resident.append(i)
        used += size
    streamed = [i for i in range(len(blocks)) if i not in resident]
    return Plan(resident, streamed, used, sizes, budget_bytes)


def choose_plan(model: nn.Module, budget: Budget, link: Link) -> tuple[Optional[int], Plan]:
    """The budget in bytes and the layout; under ``auto`` with a ``fallback`` estimate, the one of
    (batched guidance, two passes) that copies fewer bytes per step, or the only one that fits.

    Choosing two passes calls ``budget.on_two_passes(model)`` (the sampler's hook into
    ``engine.sampling.guidance``), so the guidance does not first try the batched forward the
    budget left no room for.
    """
    limit = weight_budget_bytes(budget, link)
    try:
        layout = plan(model, limit, link.asynchronous)
    except BudgetError:
        layout = None
        if budget.spec != AUTO or not 0 < budget.fallback < budget.activations:
            raise
    if budget.spec != AUTO or not 0 < budget.fallback < budget.activations:
        return limit, layout
    two_limit = weight_budget_bytes(budget, link, fallback=True)
    two = plan(model, two_limit, link.asynchronous)
    copied = sum(layout.block_bytes[i] for i in layout.streamed_blocks) if layout else None
    two_copied = 2 * sum(two.block_bytes[i] for i in two.streamed_blocks)  # two forwards a step
    if layout is not None and copied <= two_copied:
        return limit, layout
    if budget.on_two_passes is not None:
        budget.on_two_passes(model)
    log.info("auto budget: two guidance passes (activations %s, %s streamed per step) instead of one batched "
             "forward (activations %s, %s)", gib(budget.fallback), gib(two_copied), gib(budget.activations),
             "too little room to stream" if layout is None else gib(copied))
    return two_limit, two


# ---------------------------------------------------------------- streaming


@dataclass
class _Loaded:
    ticket: Any
    back: dict = field(default_factory=dict)  # device tensor key -> (device tensor, host tensor)


def _key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), t.dtype, t.device)


class Streamer:
    """Forward hooks on ``model.blocks`` that bring streamed blocks in and out (see the module doc)."""

    def __init__(self, model: nn.Module, link: Link, plan_: Plan):
        self.model, self.link, self.plan = model, link, plan_
        self.streamed = set(plan_.streamed_blocks)
        self.loaded: dict[int, _Loaded] = {}
        self.device_bytes = plan_.resident_bytes
        self.peak_bytes = self.device_bytes
        self.copied_bytes = 0  # bytes streamed in so far
        self.observers: list[Callable[[int, "Streamer"], None]] = []  # called before each block runs
        order = plan_.streamed_blocks
        self._next = {i: _next_streamed(i, order, len(plan_.block_bytes)) for i in range(len(plan_.block_bytes))}
        self._hooks = []
        for i, block in enumerate(model.blocks):
            self._hooks.append(block.register_forward_pre_hook(self._pre(i)))
            if i in self.streamed:
                self._hooks.append(block.register_forward_hook(self._post(i)))

    def _pre(self, i: int):
        def hook(module, args):
            if i in self.streamed:
                self._load(i)
                self.link.wait(self.loaded[i].ticket)
            following = self._next[i]
            if self.link.asynchronous and following is not None and following != i:
                self._load(following)  # overlaps this block's compute
            for observe in self.observers:
                observe(i, self)
        return hook

    def _post(self, i: int):
        def hook(module, args, output):
            self._unload(i)
        return hook

    def _load(self, i: int) -> None:
        if i in self.loaded:
            return
        loaded = _Loaded(None)
        link = self.link
        link.begin(self.plan.block_bytes[i])

        def up(t: torch.Tensor) -> torch.Tensor:
            out = link.copy(t)
            loaded.back[_key(out)] = (out, t.data if isinstance(t, nn.Parameter) else t)
            return out

        self.model.blocks[i]._apply(up)
        loaded.ticket = link.end()
        self.loaded[i] = loaded
        self.device_bytes += self.plan.block_bytes[i]
        self.copied_bytes += self.plan.block_bytes[i]
        self.peak_bytes = max(self.peak_bytes, self.device_bytes)

    def _unload(self, i: int) -> None:
        loaded = self.loaded.pop(i, None)
        if loaded is None:
            return
        self.link.wait(loaded.ticket)  # never drop a copy still in flight

        def down(t: torch.Tensor) -> torch.Tensor:
            return loaded.back.pop(_key(t))[1]

        self.model.blocks[i]._apply(down)
        loaded.back.clear()
        self.device_bytes -= self.plan.block_bytes[i]

    def detach(self) -> None:
        """Bring every streamed block back to the host and remove the hooks."""
        for i in list(self.loaded):
            self._unload(i)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.model.__dict__.pop(STREAMER, None)


def _next_streamed(i: int, order: list[int], count: int) -> Optional[int]:
    """The first streamed block after block ``i``, wrapping to the next forward's first."""
    if not order:
        return None
    later = [j for j in order if j > i]
    return later[0] if later else order[0]


def place(module: Any, device: torch.device, budget: Optional[Budget] = None) -> Any:
    """Put ``module`` on ``device``: whole, or streamed within ``budget`` (see the module doc).

    Without a budget, or when the expert fits, this is ``module.to(device)`` through the
    link (nothing stays behind on the host but the file mapping). Returns the module.
    """
    device = torch.device(device)
    if not isinstance(module, nn.Module):
        return module
    old = module.__dict__.get(STREAMER)
    if old is not None:
        old.detach()
    if device.type == "cpu" and (budget is None or budget.link is None):
        return to_host(module, device)  # computing on the CPU reads file-backed weights where they are
    blocks = getattr(module, "blocks", None)
    if budget is None or not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        return module.to(device)
    module = to_host(module, torch.device("cpu"))  # the host copies the streamed blocks will be read from
    block_max = max(tensor_bytes(b) for b in blocks)
    link = budget.make_link(device, block_max)
    limit, layout = choose_plan(module, budget, link)
    move = link.move
    for name, child in module.named_children():
        if child is blocks:
            for i in layout.resident_blocks:
                blocks[i]._apply(move)
        else:
            child._apply(move)
    for key, param in module._parameters.items():
        if param is not None:
            param.data = move(param.data)
    for key, buf in module._buffers.items():
        if buf is not None:
            module._buffers[key] = move(buf)
    if layout.streams:
        log.info("streaming %d of %d blocks (%s resident of a %s budget, %s per block)", len(layout.streamed_blocks),
                 len(blocks), gib(layout.resident_bytes), gib(limit), gib(block_max))
    module.__dict__[STREAMER] = Streamer(module, link, layout)
    return module


def needs_streaming(weight_bytes: Optional[int], device: torch.device, budget: Optional[Budget]) -> bool:
    """Whether an expert of ``weight_bytes`` must load to the host and be placed by :func:`place`
    (True), or may load straight onto ``device`` (False: no budget, a CPU device, or it fits).

    Checks the budget against the device, so a bad one fails before anything is read.
    """
    device = torch.device(device)
    if budget is None:
        return False
    if budget.link is not None:
        return True  # a counting (test / bench) device: always through its link
    if device.type == "cpu":
        return False
    limit = weight_budget_bytes(budget, default_link(device, 0))
    return limit is not None and (weight_bytes is None or int(weight_bytes) > limit)


def streamer_of(module: Any) -> Optional[Streamer]:
    return module.__dict__.get(STREAMER) if isinstance(module, nn.Module) else None


def budget_fraction(model: nn.Module, fraction: float) -> float:
    """A budget in GiB that is ``fraction`` of the model's weight bytes (bench and tests)."""
    if not (0 < fraction and math.isfinite(fraction)):
        raise BudgetError(f"fraction {fraction!r} must be positive")
    return tensor_bytes(model) * fraction / 1024 ** 3
