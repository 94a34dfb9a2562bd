"""Where each expert's weights live during a run: lazy model handles and memory policies.

A14B runs two 14B experts, but only one of them works at any step. Keeping both on
the compute device (or both in RAM) is what makes users run out of memory at the
switch (landscape §2, pain point 2). So a model travels through the pack as a
:class:`ModelHandle`: a loader callable plus the device it computes on. The weights
are read when first needed, moved aside or dropped when the other expert takes over,
and read again from the file if they were dropped.

Memory policies (``MEMORY_POLICIES``), applied by :class:`Residency` whenever an
expert is about to run, to the *other* experts that share its compute device:

* ``"offload_cpu"`` (default): move them off the device. Weights held as the file
  stores them fall back to the memory-mapped file (``streaming.to_host``: the page
  cache is their host copy, no RAM of their own); weights that differ from the file
  (converted on load, LoRA-merged) are copied to CPU RAM. The next run copies them back
  without reading the disk, unless the kernel evicted the pages. On a CPU-only machine
  this changes nothing (the weights are read from the mapping in place).

An expert may also be placed under a weight budget (``streaming.Budget``, passed to
:meth:`ModelHandle.acquire` through :class:`Residency`): one that does not fit is
loaded to the host and its blocks are streamed to the device as they run.
* ``"release"``: drop their weights entirely, on the device *and* in RAM. The handle
  keeps its loader and reloads from the file the next time it is needed.
* ``"keep_both"``: move nothing; both experts stay where they are (fastest, needs
  memory for both).

Experts placed on different devices (``cuda:0`` and ``cuda:1``) never share one, so
nothing moves between them under any policy.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import sys
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import nn

from .streaming import Budget, needs_streaming, place, to_host

log = logging.getLogger(__name__)

MEMORY_POLICIES = ("offload_cpu", "release", "keep_both")
DeviceLike = Union[str, torch.device]
# A loader builds the module with its weights already on the given device, so a GPU
# expert never needs a full CPU copy on the way in.
LoadFn = Callable[[torch.device], Any]


def canonical_device(device: DeviceLike) -> torch.device:
    """``torch.device`` with an explicit index for CUDA (``"cuda"`` -> ``cuda:<current>``)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def free_cached_memory(device: Optional[torch.device] = None, collect: bool = True) -> None:
    """Give freed memory back: the CUDA caching allocator's blocks, and glibc's heap.

    Dropping the last reference to a weight only returns it to an allocator. Without
    this, a released expert's CPU memory can stay in glibc's arenas, so the process's
    resident size never shrinks (and the next load may not fit). ``collect`` first runs
    the garbage collector, for weights only reachable through reference cycles.
    """
    if collect:
        gc.collect()
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim
            pass


class ModelHandle:
    """A model that may or may not be loaded yet, and knows how to (re)load itself.

    ``load_fn(device)`` returns the module with its weights on ``device`` (for example
    ``lambda d: load_dit(path, compute_dtype=dtype, device=d)``). ``info`` carries what
    is known without loading: ``"config"`` (a ``WanConfig``, e.g. from ``detect_dit``),
    ``"role"`` (``"high_noise"``/``"low_noise"``), ``"path"``, ... The handle holds the
    only long-lived reference to the module, so :meth:`release` really frees it;
    callers should not keep the module returned by :meth:`acquire` beyond their use.
    """

    def __init__(
        self,
        load_fn: Optional[LoadFn],
        device: DeviceLike = "cpu",
        compute_dtype: torch.dtype = torch.float32,
        info: Optional[dict] = None,
        *,
        module: Any = None,
        offload_device: DeviceLike = "cpu",
    ):
        if load_fn is None and module is None:
            raise ValueError("a ModelHandle needs a load_fn, a module, or both")
        self.load_fn = load_fn
        self.device = canonical_device(device)
        self.compute_dtype = compute_dtype
        self.info = dict(info or {})
        self.offload_device = canonical_device(offload_device)
        self._module = module
        self._location: Optional[torch.device] = (_module_device(module) or self.device) if module is not None else None
        self._budget: Optional[Budget] = None  # the budget the module was placed under

    @classmethod
    def from_module(cls, module: Any, device: Optional[DeviceLike] = None, info: Optional[dict] = None) -> "ModelHandle":
        """Wrap an already-built module. It cannot be reloaded, so "release" only offloads it."""
        here = _module_device(module) or torch.device("cpu")
        info = dict(info or {})
        if "config" not in info and getattr(module, "config", None) is not None:
            info["config"] = module.config
        return cls(None, device or here, _module_dtype(module), info, module=module)

    # ------------------------------------------------------------------ state
    @property
    def loaded(self) -> bool:
        return self._module is not None

    @property
    def location(self) -> Optional[torch.device]:
        """Where the weights sit now (None when not loaded)."""
        return self._location if self.loaded else None

    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.info.get("path") or self.info.get("role") or "model")

    @property
    def config(self) -> Any:
        """The model's config; read from ``info`` when known, otherwise by loading the model."""
        if self.info.get("config") is None:
            self.info["config"] = getattr(self.acquire(), "config", None)
        return self.info["config"]

    def __repr__(self) -> str:
        where = self.location or "not loaded"
        return f"ModelHandle({self.name!r}, device={self.device}, weights: {where})"

    # --------------------------------------------------------------- movement
    def acquire(self, device: Optional[DeviceLike] = None, budget: Optional[Budget] = None) -> Any:
        """The module with its weights on ``device`` (default: the handle's device), loading if needed.

        ``budget`` (``engine.memory.streaming.Budget``) bounds the bytes its weights may take on
        the device; an expert larger than that is loaded to the host (the file mapping)
        and streamed block by block.
        """
        target = canonical_device(device) if device is not None else self.device
        if self._module is None:
            streamed = needs_streaming(self.info.get("weight_bytes"), target, budget)
            where = self.offload_device if streamed else target
            log.info("loading %s onto %s", self.name, where)
            self._module = self.load_fn(where)
            self._location = _module_device(self._module) or where
            self._budget = None if streamed else budget  # placed by place() below when streamed
        if self._location != target or self._budget != budget:
            log.info("moving %s from %s to %s", self.name, self._location, target)
            self._module = place(self._module, target, budget)
            self._location, self._budget = target, budget
        return self._module

    def offload(self) -> None:
        """Move the weights to ``offload_device`` (CPU RAM); they stay loaded."""
        if self._module is None or self._location == self.offload_device:
            return
        left = self._location
        log.info("offloading %s from %s to %s", self.name, left, self.offload_device)
        self._module = to_host(self._module, self.offload_device)  # file-backed weights: just the mapping
        self._location, self._budget = self.offload_device, None
        free_cached_memory(left, collect=False)  # the weights moved; only the device cache is stale

    def release(self) -> bool:
        """Drop the weights everywhere; the next :meth:`acquire` reloads them from the file.

        A handle built from a module has nothing to reload from, so its weights are
        offloaded instead and False is returned.
        """
        if self._module is None:
            return True
        if self.load_fn is None:
            log.warning("%s has no loader to reload it from; offloading instead of releasing", self.name)
            self.offload()
            return False
        left = self._location
        log.info("releasing %s (weights on %s)", self.name, left)
        self._module = None
        self._location = None
        free_cached_memory(left)
        return True

    def derive(self, transform: Callable[[Any], Any], **info_updates: Any) -> "ModelHandle":
        """A new handle whose loader loads this model and then applies ``transform`` (e.g. a LoRA).

        ``transform(module)`` may patch in place and return None, or return a new module.
        The derived handle loads its own copy, so reloads after "release" re-apply it.
        """
        if self.load_fn is None:
            raise ValueError(f"{self.name} was built from a module and has no loader to derive from")
        base_load = self.load_fn

        def load(device: torch.device) -> Any:
            module = base_load(device)
            out = transform(module)
            return module if out is None else out

        info = {**self.info, **info_updates}
        return ModelHandle(load, self.device, self.compute_dtype, info, offload_device=self.offload_device)


def _module_device(module: Any) -> Optional[torch.device]:
    if isinstance(module, nn.Module):
        for tensor in _tensors(module):
            return canonical_device(tensor.device)
    return None


def _module_dtype(module: Any) -> torch.dtype:
    dtype = getattr(module, "compute_dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(module, nn.Module):
        for tensor in _tensors(module):
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32


def _tensors(module: nn.Module) -> Iterable[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


class Residency:
    """Applies a memory policy to a set of expert handles while one run switches between them.

    ``use(role)`` returns the module for ``role`` on its compute device, first evicting
    the other handles that share that device (per policy). ``finish()`` applies the
    policy to every expert when the run ends (or fails), as the official code does with
    ``offload_model``: "offload_cpu" moves them off the accelerator so the VAE decode
    that follows has the memory, "release" drops them, "keep_both" leaves them.
    """

    def __init__(self, policy: str, handles: dict[str, ModelHandle], devices: Optional[dict[str, DeviceLike]] = None,
                 budgets: Optional[dict[str, Budget]] = None):
        if policy not in MEMORY_POLICIES:
            raise ValueError(f"unknown memory policy {policy!r}; expected one of {MEMORY_POLICIES}")
        self.policy = policy
        self.handles = handles
        self.budgets = dict(budgets or {})  # role -> weight budget on its device (engine.memory.streaming)
        devices = devices or {}
        self.devices = {role: canonical_device(devices.get(role) or h.device) for role, h in handles.items()}

    def device(self, role: str) -> torch.device:
        return self.devices[role]

    def use(self, role: str) -> Any:
        handle = self.handles[role]
        device = self.devices[role]
        if self.policy != "keep_both":
            for other_role, other in self.handles.items():
                if other is not handle and other.loaded and self._competes(other_role, other, device):
                    self._evict(other)
        budget = self.budgets.get(role)
        # Handles of other kinds (a ComfyUI MODEL, whose memory ComfyUI manages) take no budget.
        return handle.acquire(device) if budget is None else handle.acquire(device, budget)

    def finish(self) -> None:
        if self.policy == "keep_both":
            return
        for handle in _unique(self.handles.values()):
            self._evict(handle)

    def _competes(self, other_role: str, other: ModelHandle, device: torch.device) -> bool:
        # Experts placed on different devices never compete. Otherwise the other one is
        # in the way if its weights sit on our device; under "release" also if it was
        # merely parked in RAM (say by an earlier "offload_cpu" run), since the point
        # of "release" is to hold one expert's weights anywhere.
        if other.location == device:
            return True
        return self.policy == "release" and self.devices[other_role] == device

    def _evict(self, handle: ModelHandle) -> None:
        if self.policy == "release":
            handle.release()
        elif self.policy == "offload_cpu":
            handle.offload()


def _unique(handles: Iterable[ModelHandle]) -> list[ModelHandle]:
    seen: list[ModelHandle] = []
    for handle in handles:
        if all(handle is not s for s in seen):
            seen.append(handle)
    return seen
