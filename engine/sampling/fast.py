"""Speed options of a loaded DiT: its attention kernel and ``torch.compile`` of its blocks.

:func:`apply_fast_options` sets them on a ``WanModel`` after loading (the loader nodes
call it inside their load function, so a reload after ``memory=release`` gets them
again). Nothing in ``engine.model.dit`` changes:

* ``attention``: a forward pre-hook selects the kernel by name
  (``engine.model.attention.select_backend``) for the duration of the model's forward (a
  forward hook that also runs when the forward raises puts the previous one back) and
  resolves it for the model's device and compute dtype *before* the blocks run, so
  the once-per-process kernel check never runs inside a compiled region;
* ``compile``: every block's ``forward`` becomes a call of one compiled function per
  block class, shared by all blocks of all models in the process. Dynamo lifts the
  block's parameters into graph inputs (``inline_inbuilt_nn_modules``), so its guards
  are on shapes and dtypes, not on which block or which expert runs: the 40 blocks of
  an expert, and the other expert of the same shape after the switch, reuse the one
  compiled graph (tests/test_fast.py counts compilations). A new latent size or
  dtype compiles once more, as torch.compile does.

If the compiler backend fails (no C++ compiler for inductor, say), the log says why
and the blocks run eagerly from then on; results are the same, only slower.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..model import attention as attn

log = logging.getLogger(__name__)

# Node choices of the ``compile`` input: "off", or a torch.compile backend.
COMPILE_CHOICES = ("off", "inductor")

_compiled: dict[tuple, Callable] = {}  # (block class, backend) -> compiled forward
_compile_count = 0
_failed: dict[str, str] = {}  # backend -> why it was given up in this process


def compile_count() -> int:
    """How many graphs the compiler backend has compiled in this process (all blocks, all models)."""
    return _compile_count


def _counting(backend: str) -> Callable:
    from torch._dynamo.backends.registry import lookup_backend

    inner = lookup_backend(backend)

    def compile_graph(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        global _compile_count
        _compile_count += 1
        log.info("torch.compile (%s): compiling DiT block graph #%d", backend, _compile_count)
        return inner(gm, example_inputs)

    return compile_graph


def compiled_forward(block_class: type, backend: str) -> Callable:
    """The process-wide compiled ``block_class.forward`` for ``backend``."""
    key = (block_class, backend)
    if key not in _compiled:
        _compiled[key] = torch.compile(block_class.forward, backend=_counting(backend))
    return _compiled[key]


def _block_forward(block: nn.Module, fn: Callable, backend: str) -> Callable:
    eager = type(block).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if backend not in _failed:
            try:
                return fn(block, *args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as err:
                # Raised before the graph ran, so nothing was half-done: run eagerly.
                cause = getattr(err, "inner_exception", None) or err
                _failed[backend] = (f"{type(cause).__name__}: {cause}".strip().splitlines() or ["?"])[0]
                log.warning("torch.compile (%s) failed; the DiT blocks run without it from now on (%s)",
                            backend, _failed[backend])
        return eager(block, *args, **kwargs)

    forward.compiled = True
    return forward


def compile_blocks(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """Run every block of ``model`` through the shared compiled forward of its class."""
    for block in model.blocks:
        block.forward = _block_forward(block, compiled_forward(type(block), backend), backend)
    return model


def uncompile_blocks(model: nn.Module) -> nn.Module:
    for block in model.blocks:
        if getattr(block.__dict__.get("forward"), "compiled", False):
            del block.forward
    return model


def is_compiled(model: nn.Module) -> bool:
    return any(getattr(block.__dict__.get("forward"), "compiled", False) for block in model.blocks)


def compile_failure(backend: str = "inductor") -> Optional[str]:
    """Why compiling with ``backend`` was given up in this process, or None."""
    return _failed.get(backend)


# ---------------------------------------------------------------- attention per model


def _select_attention(model: nn.Module, args: tuple) -> None:
    name = model.attention_backend
    model._previous_attention = attn.select_backend(name)
    attn.resolve(name, model.device, model.compute_dtype)  # check / time kernels outside any compiled code


def _restore_attention(model: nn.Module, args: tuple, output: Any) -> None:
    attn.select_backend(model.__dict__.pop("_previous_attention", "auto"))


def set_model_attention(model: nn.Module, name: str) -> nn.Module:
    """Run ``model``'s attention with kernel ``name`` (see ``engine.model.attention``)."""
    attn.check_name(name)
    model.attention_backend = name
    if not hasattr(model, "_attention_hooks"):
        model._attention_hooks = (model.register_forward_pre_hook(_select_attention),
                                  model.register_forward_hook(_restore_attention, always_call=True))
    return model


def apply_fast_options(model: nn.Module, attention: str = "auto", compile: str = "off",
                       fp8_matmul: Optional[bool] = None) -> nn.Module:
    """Set the attention kernel, the compile option and (when not None) fp8 matmul of a ``WanModel``.

    ``fp8_matmul`` True switches the blocks' e4m3fn layers to ``torch._scaled_mm``
    (``engine.weights.fp8``: checked once against the upcast path; off by default).
    """
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile {compile!r} is not one of {COMPILE_CHOICES}")
    set_model_attention(model, attention)
    if fp8_matmul is not None:
        from ..weights.fp8 import set_fp8_matmul

        set_fp8_matmul(model, fp8_matmul)
    if compile == "off":
        uncompile_blocks(model)
    else:
        compile_blocks(model, compile)
    return model
