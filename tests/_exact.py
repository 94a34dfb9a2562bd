"""Bit-for-bit comparisons of float outputs that hold on any CPU, and the reference that makes them hold.

Equal bytes are not enough for equal float outputs: a CPU kernel may pick its code path (vector
width, peeling, blocking, and so the summation order) from the shapes, the dtype *and the
alignment* of its operands. Weights loaded from a file are views into its memory map, aligned as
the file lays them out; weights placed on a device (or streamed there, ``engine.memory.streaming``)
are fresh allocations, which PyTorch's CPU allocator aligns to 64 bytes (cudaMalloc to 256). So a
streamed forward is compared bit for bit with a resident forward whose weights are fresh copies
too (:func:`resident_copies`): the same bytes, shapes, dtypes and alignment meet the same kernels,
on every machine. Comparing it with a forward over the file mapping instead is not guaranteed:
that is the pattern (a GGUF-decoded conv weight against one viewed in a safetensors mapping) that
failed on an AMD EPYC CPU (issue 26).
"""
import torch

from wan22duo.engine.memory.streaming import Budget, CountingLink, place, tensor_bytes, to_host

GIB = 1 << 30


def copies_budget(model) -> Budget:
    """A budget four times ``model``'s size: nothing streams, every tensor is placed as a fresh copy
    (also for ``sample(..., budget=...)`` references)."""
    return Budget(4 * tensor_bytes(model) / GIB, link=lambda device, block: CountingLink())


def resident_copies(model, run):
    """``run()`` with every tensor of ``model`` placed resident as a fresh allocation, then ``model`` back on
    its host tensors (the file mapping)."""
    place(model, torch.device("cpu"), copies_budget(model))
    try:
        return run()
    finally:
        to_host(model, torch.device("cpu"))
