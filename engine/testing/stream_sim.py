"""A CPU stand-in for the CUDA stream API that ``streaming.CudaLink`` uses, for tests and ``--tiny`` benches.

``CudaLink`` overlaps the next block's copy with the current block's compute: a side
stream, two pinned staging buffers, events. Whether it waits where it must cannot be
seen on a machine without a GPU by running it for real, and on a GPU a missing wait
shows only as a rare wrong output. :class:`DeferredCuda` plays the GPU as badly as CUDA
allows: work issued on the side stream runs only when something forces it (an event's
``synchronize``, or the compute stream's ``wait_event``), never earlier (``mode="lazy"``,
the default), or at once (``mode="eager"``). A device tensor starts as NaN bytes (0xFF)
until its copy runs. So

* a compute that reads a block before waiting for its copy reads NaN;
* a staging buffer refilled while a copy that reads it may still be running (the host has
  not synchronized with that copy's event) raises :class:`StagingHazard`: on a GPU the host
  runs ahead of the device, so "the compute stream waited for it" is not enough;
and each shows as an output that differs from the resident model, or an error.
The compute stream is the CPU itself, which runs everything as soon as it is issued.
``log`` keeps the order of events: ``("copy", n)`` when batch ``n`` is issued (its event
recorded), ``("wait", n)`` when the compute stream waits for it, ``("sync", n)`` when the
host does (before a staging buffer is refilled).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..memory.streaming import CudaApi

POISON = 0xFF  # every byte of a device tensor before its copy runs: NaN in fp32, bf16, fp16 and fp8 e4m3


class StagingHazard(AssertionError):
    """The host wrote a staging buffer that a copy it has not seen finish may still read."""


class SimStream:
    """A queue of work; ``run_until(k)`` runs the first ``k`` items issued."""

    def __init__(self, api: "DeferredCuda", name: str):
        self.api, self.name = api, name
        self.work: list[Callable[[], None]] = []
        self.ran = 0
        self.host_knows = 0  # how many items the host has seen finish (an event's synchronize)
        self.reads: list[tuple[int, int, int]] = []  # (position, first byte, end byte) of host memory read

    def issue(self, fn: Callable[[], None]) -> None:
        self.work.append(fn)
        if self.api.mode == "eager":
            self.run_until(len(self.work))

    def run_until(self, count: int) -> None:
        while self.ran < count:
            self.work[self.ran]()
            self.work[self.ran] = None  # done: let its tensors go
            self.ran += 1

    def wait_event(self, event: "SimEvent") -> None:
        """The compute stream waits: on CPU, the side stream's work up to the event runs now."""
        event.complete()
        self.api.log.append(("wait", event.number))


class SimEvent:
    def __init__(self, api: "DeferredCuda"):
        self.api = api
        self.stream: Optional[SimStream] = None
        self.position = 0
        self.number = 0

    def record(self, stream: SimStream) -> None:
        self.api.recorded += 1
        self.stream, self.position, self.number = stream, len(stream.work), self.api.recorded
        self.api.log.append(("copy", self.number))

    def complete(self) -> None:
        if self.stream is not None:
            self.stream.run_until(self.position)

    def synchronize(self) -> None:
        self.complete()
        if self.stream is not None:
            self.stream.host_knows = max(self.stream.host_knows, self.position)
            self.stream.reads = [r for r in self.stream.reads if r[0] > self.stream.host_knows]
        self.api.log.append(("sync", self.number))


class DeferredCuda(CudaApi):
    """The calls of ``streaming.CudaApi`` on CPU tensors, with the side stream deferred (see the module doc).

    ``total_bytes`` / ``free_bytes`` play the device's size (None: unknown, as a CPU device).
    """

    def __init__(self, mode: str = "lazy", total_bytes: Optional[int] = None, free_bytes: Optional[int] = None):
        if mode not in ("lazy", "eager"):
            raise ValueError(f"mode {mode!r} is not 'lazy' or 'eager'")
        self.mode = mode
        self.total_bytes, self.free_bytes = total_bytes, free_bytes
        self.compute = SimStream(self, "compute")
        self.streams: list[SimStream] = []
        self.log: list[tuple[str, int]] = []
        self.recorded = 0
        self.pinned_buffers: list[torch.Tensor] = []
        self.copies = 0  # tensors copied through a staging buffer

    def stream(self, device: torch.device) -> SimStream:
        self.streams.append(SimStream(self, f"side{len(self.streams)}"))
        return self.streams[-1]

    def current_stream(self, device: torch.device) -> SimStream:
        return self.compute

    def event(self) -> SimEvent:
        return SimEvent(self)

    def pinned(self, nbytes: int) -> torch.Tensor:
        self.pinned_buffers.append(torch.empty(nbytes, dtype=torch.uint8))
        return self.pinned_buffers[-1]

    def copy_on(self, side: Any, compute: Any, stage: torch.Tensor, device: torch.device) -> torch.Tensor:
        if not isinstance(side, SimStream) or side is self.compute:
            raise AssertionError(f"copy issued on {side!r}, not on a side stream of this stand-in")
        self._check_refill(stage)
        out = torch.empty_like(stage, device=device)
        out.reshape(-1).view(torch.uint8).fill_(POISON)  # (reshape: 0-d scales too)
        side.issue(lambda: out.copy_(stage))  # reads the staging buffer when it runs, as the copy engine does
        side.reads.append((len(side.work), stage.data_ptr(), stage.data_ptr() + stage.nbytes))
        if compute is not self.compute:
            raise AssertionError("the copy's tensor is not marked as used by the compute stream")
        self.copies += 1
        return out

    def _check_refill(self, stage: torch.Tensor) -> None:
        """``stage`` was just written by the host: no copy the host has not seen finish may read those bytes.

        On a GPU the host runs ahead of the device, so a copy waited for only by the compute
        stream may still be running; only an event's ``synchronize`` tells the host it is done.
        """
        lo, hi = stage.data_ptr(), stage.data_ptr() + stage.nbytes
        for side in self.streams:
            for position, first, end in side.reads:
                if position > side.host_knows and first < hi and lo < end:
                    raise StagingHazard(f"a staging buffer was refilled while copy #{position} on {side.name}, which "
                                        f"reads the same bytes, may still be running (the host never synchronized "
                                        f"with it)")

    def total(self, device: torch.device) -> Optional[int]:
        return self.total_bytes

    def free(self, device: torch.device) -> Optional[int]:
        return self.free_bytes
