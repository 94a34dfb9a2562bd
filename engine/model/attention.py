"""The one attention entry point of the DiT, and the registry of attention kernels.

Every attention call in ``engine.model.dit`` goes through :func:`attention`. Which kernel
runs it is chosen by name (:func:`select_backend`, or per model through
``engine.sampling.fast.apply_fast_options`` and the loader nodes' ``attention`` input):

* ``"sdpa"``: torch's ``scaled_dot_product_attention``, which picks a fused kernel per
  device (flash or memory-efficient on CUDA, a blocked flash kernel on CPU). It is the
  reference every other kernel is checked against;
* any kernel added with :func:`register_kernel` (an adapter for SageAttention or
  FlashAttention plugs in here; none ships yet, see ``WAITING_KERNELS``);
* ``"auto"`` (default): the fastest registered kernel that passed its check on this
  device and dtype, SDPA when none did.

Before a kernel other than SDPA is used on a (device, dtype) it is checked once per
process against SDPA on a small random input (:func:`check_kernel`). A kernel that
raises, returns the wrong shape or dtype, or is further from SDPA than
``CHECK_TOLERANCE`` is not used; the log says why, and SDPA runs instead.

:func:`set_attention_backend` still takes a raw callable that overrides the choice
(no check: the caller vouches for it), as tests and experiments use it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# (q, k, v) in [B, N, L, d] layout -> [B, N, L_q, d]; full bidirectional, no mask,
# softmax scale 1/sqrt(d).
Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (device, dtype) -> None when the kernel can run there, else the reason it cannot.
Supports = Callable[[torch.device, torch.dtype], Optional[str]]

# Kernels the issue asks for whose adapters wait for a session with a GPU to run them
# (a kernel path no run has exercised stays out of the pack).
WAITING_KERNELS = ("sageattention", "flash_attn")

# Relative L2 distance to SDPA a kernel may have on the check input. A correct kernel
# differs from SDPA by rounding only: written-out attention is 5e-7 from SDPA in fp32,
# 2.3e-3 in bf16 and 3e-4 in fp16 on this input (TF32 matmuls would add about 5e-4 in
# fp32); a quantising kernel such as SageAttention (int8 Q/K, fp8/fp16 P@V) is
# expected near 1e-2 (not measured here: no GPU), which the 16-bit bound leaves room
# for. The bugs the check is
# for are far above: softmax scale 1/d for 1/sqrt(d) 0.77, no softmax 0.79, heads
# mixed 1.4, a causal mask 1.4, and the [B, L, N, d] / [B, N, L, d] mix-up raises on
# the uneven query/key lengths (tests/test_attention.py measures each).
CHECK_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 3e-2, torch.float16: 3e-2}
# Check input: [B, N, L, d] with real head dim 128 and a query length different from
# the key length (cross-attention's shape), so a q/k mix-up cannot pass.
CHECK_SHAPE = (1, 2, 192, 128)
CHECK_KEYS = 136
# Query length ``auto`` times its candidates at: a real step's order, where kernel
# launch costs no longer dominate.
AUTO_TIMING_TOKENS = 4096


def sdpa_backend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


@dataclass(frozen=True)
class Kernel:
    name: str
    fn: Backend
    supports: Optional[Supports] = None  # None: any device and dtype


_kernels: dict[str, Kernel] = {}
_checked: dict[tuple, Optional[str]] = {}  # (name, device, dtype) -> None (passed) or why not
_resolved: dict[tuple, Backend] = {}  # (selection, device, dtype) -> the backend that runs
_selection: str = "auto"
_override: Optional[Backend] = None


# ---------------------------------------------------------------- registry


def register_kernel(name: str, fn: Backend, supports: Optional[Supports] = None) -> None:
    """Make ``fn`` selectable as ``name`` (and a candidate for ``"auto"``).

    ``supports(device, dtype)`` returns None when the kernel can run there, else a short
    reason (package missing, compute capability too low, dtype not handled).
    Re-registering a name replaces the kernel and forgets its earlier checks.
    """
    if name in ("auto", "sdpa"):
        raise ValueError(f"attention backend name {name!r} is reserved; pick another name")
    _kernels[name] = Kernel(name, fn, supports)
    _forget(name)


def unregister_kernel(name: str) -> None:
    _kernels.pop(name, None)
    _forget(name)


def _forget(name: str) -> None:
    for key in [k for k in _checked if k[0] == name]:
        del _checked[key]
    _resolved.clear()


def backend_names() -> tuple[str, ...]:
    """Every name :func:`select_backend` accepts: ``"auto"``, ``"sdpa"``, then the registered kernels."""
    return ("auto", "sdpa", *sorted(_kernels))


def check_name(name: str) -> None:
    if name not in backend_names():
        waiting = f" ({name} is not available in this version of the pack)" if name in WAITING_KERNELS else ""
        raise ValueError(f"attention backend {name!r} is unknown{waiting}; expected one of {backend_names()}")


def select_backend(name: str) -> str:
    """Use the kernel ``name`` for every DiT attention from now on; returns the previous name."""
    global _selection
    check_name(name)
    previous, _selection = _selection, name
    return previous


def selected_backend() -> str:
    return _selection


def set_attention_backend(backend: Optional[Backend]) -> Optional[Backend]:
    """Run every DiT attention through ``backend``, unchecked (``None``: back to the selection).

    Returns the previous override (None when there was none) so a caller can restore it.
    """
    global _override
    previous, _override = _override, backend
    return previous


# ---------------------------------------------------------------- check and choice


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def check_input(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed random (q, k, v) of the check, on ``device`` in ``dtype``."""
    g = torch.Generator().manual_seed(1234)
    b, n, lq, d = CHECK_SHAPE
    q = torch.randn(b, n, lq, d, generator=g)
    k = torch.randn(b, n, CHECK_KEYS, d, generator=g)
    v = torch.randn(b, n, CHECK_KEYS, d, generator=g)
    return tuple(t.to(device, dtype) for t in (q, k, v))


def check_kernel(name: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None if kernel ``name`` may run on ``device``/``dtype``, else why not (once per process)."""
    device = torch.device(device)
    key = (name, device, dtype)
    if key not in _checked:
        _checked[key] = _run_check(_kernels[name], device, dtype)
        if _checked[key] is None:
            log.info("attention kernel %s passed its check against SDPA on %s %s", name, device, dtype)
        else:
            log.warning("attention kernel %s is not used on %s %s: %s", name, device, dtype, _checked[key])
    return _checked[key]


def _run_check(kernel: Kernel, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    if kernel.supports is not None:
        why = kernel.supports(device, dtype)
        if why:
            return why
    q, k, v = check_input(device, dtype)
    ref = sdpa_backend(q, k, v)
    try:
        with torch.no_grad():
            out = kernel.fn(q, k, v)
    except Exception as err:  # any failure means "do not use it"; the reason goes to the log
        return f"it raised {type(err).__name__}: {err}"
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(ref.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return f"it returned shape {shape} for queries {tuple(q.shape)}; expected {tuple(ref.shape)}"
    if out.dtype != dtype:
        return f"it returned {out.dtype} for {dtype} inputs"
    err = rel_l2(out, ref)
    bound = CHECK_TOLERANCE.get(dtype, 3e-2)
    if not err <= bound:  # NaN fails too
        return f"its result is {err:.3g} (relative L2) from SDPA's, above the bound {bound:g}"
    return None


def _timer(fn: Backend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, repeats: int = 3) -> float:
    """Best wall time of ``fn`` on (q, k, v), after one warm-up call."""
    sync = torch.cuda.synchronize if q.device.type == "cuda" else (lambda: None)
    fn(q, k, v)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(q, k, v)
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def resolve(selection: str, device: torch.device, dtype: torch.dtype) -> Backend:
    """The backend that runs attention for ``selection`` on ``device``/``dtype`` (cached)."""
    device = torch.device(device)
    key = (selection, device, dtype)
    if key not in _resolved:
        _resolved[key] = _choose(selection, device, dtype)
    return _resolved[key]


def _choose(selection: str, device: torch.device, dtype: torch.dtype) -> Backend:
    check_name(selection)
    if selection == "sdpa":
        return sdpa_backend
    if selection != "auto":
        return _kernels[selection].fn if check_kernel(selection, device, dtype) is None else sdpa_backend
    passed = [kn for kn in sorted(_kernels) if check_kernel(kn, device, dtype) is None]
    if not passed:
        return sdpa_backend
    q, _, _ = check_input(device, dtype)
    q = q.repeat(1, 1, AUTO_TIMING_TOKENS // q.shape[2] + 1, 1)[:, :, :AUTO_TIMING_TOKENS]
    timings = {"sdpa": _timer(sdpa_backend, q, q, q)}
    for kn in passed:
        timings[kn] = _timer(_kernels[kn].fn, q, q, q)
    best = min(timings, key=timings.get)
    log.info("attention auto on %s %s: %s (%s)", device, dtype, best,
             ", ".join(f"{kn} {t * 1e3:.2f} ms" for kn, t in timings.items()))
    return sdpa_backend if best == "sdpa" else _kernels[best].fn


def chosen_name(selection: str, device: torch.device, dtype: torch.dtype) -> str:
    """The name of the kernel :func:`resolve` picked (``"sdpa"`` or a registered name)."""
    fn = resolve(selection, device, dtype)
    return next((kn for kn, kernel in _kernels.items() if kernel.fn is fn), "sdpa")


# ---------------------------------------------------------------- entry point


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention over ``[B, L, N, d]`` tensors; returns ``[B, L_q, N*d]``.

    q, k and v must share a dtype (the model's compute dtype); the output has it too.
    """
    backend = _override
    if backend is None:
        backend = _resolved.get((_selection, q.device, q.dtype)) or resolve(_selection, q.device, q.dtype)
    out = backend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)
