"""Worker processes, one per device, that run jobs together in one ``torch.distributed`` group.

ComfyUI (or a test) is the *driver*: it starts a :class:`WorkerGroup` once, sends it
jobs and gets rank 0's answer back. The workers are spawned (``torch.multiprocessing``,
start method ``spawn``, which CUDA needs), join a process group (NCCL when the devices
are GPUs, gloo on CPU) over a free localhost port, and stay alive across jobs, so each
loads its weights (memory-mapped from the file) once. A job is a picklable function
``fn(ctx, **kwargs)`` that every rank runs with the same arguments; for a video that
is :func:`run_sample`, which calls the one sampling loop on every rank with the
experts wrapped for sequence (and optionally CFG) parallel.

Failure is loud and leaves nothing behind: when a worker dies (killed, out of memory,
a crash in NCCL) or a job raises on any rank, the driver stops every worker of the
group (the others may be blocked in a collective waiting for the dead one) and raises
:class:`WorkerError` naming the rank, its device and exit code or traceback. The group
is then closed; :func:`shared_group` starts a fresh one for the next job. Groups are
closed when the process exits (``atexit``) and when the device list changes; a driver
killed outright (no ``atexit``) is noticed by its idle workers, which then exit.

Spawned children start a fresh interpreter in which the pack's package name (a folder
name chosen by ComfyUI, or ``wan22duo`` in the tests) is not importable, so the child
runs a stdlib entry point (``runpy.run_path`` of ``_boot.py``) that registers the pack
folder under the driver's package name first; everything else reaches it by queue.
Spawn would also re-run the driver's main script in each child (ComfyUI's ``main.py``
loads every custom node on import); :func:`main_script_hidden` keeps it from doing so.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import runpy
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import public
from .sequence import ParallelError

log = logging.getLogger(__name__)

PACKAGE = __package__.rsplit(".", 2)[0]  # the pack's name here ("wan22duo", or ComfyUI's "custom_nodes.<folder>")
PACK_ROOT = Path(__file__).resolve().parents[2]
BOOT = Path(__file__).with_name("_boot.py")
POLL_S = 0.2
PARENT_CHECK_S = 1.0  # how often an idle worker checks that its driver is still alive
DEATH_GRACE_S = 2.0  # how long a rank's error waits for a peer's death to show before it is the cause
JOB_TIMEOUT_S: Optional[float] = None  # a job's limit when run() is given none (a long video may take hours)


@public
class WorkerError(RuntimeError):
    """A worker of a parallel group died or a job failed on it; the group was shut down."""


@dataclass
class Context:
    """What a job sees on its rank: rank, world size, device, and a dict kept across jobs."""

    rank: int
    world: int
    device: torch.device
    state: dict = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_devices(devices: Sequence[str]) -> list[str]:
    """The device names, checked: at least one, all CPU or all CUDA, no repeats."""
    devices = [str(torch.device(d)) for d in devices]
    if not devices:
        raise ValueError("a parallel group needs at least one device; got an empty list")
    kinds = {torch.device(d).type for d in devices}
    if len(kinds) > 1 or not kinds <= {"cpu", "cuda"}:
        raise ValueError(f"devices {devices}: expected all 'cpu' or all 'cuda:N'")
    if kinds == {"cuda"} and len(set(devices)) != len(devices):
        raise ValueError(f"devices {devices} name a GPU twice; give each rank its own GPU")
    return devices


@contextmanager
def main_script_hidden():
    """While starting a spawned child, hide ``__main__``'s file and spec so the child does not import it."""
    main = sys.modules.get("__main__")
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if main and name in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


# ---------------------------------------------------------------- worker side


def worker_main(rank: int, world: int, device: str, port: int, inbox: Any, outbox: Any, threads: int,
                timeout_s: float) -> None:
    """One worker's life: join the group, then run jobs from ``inbox`` until it gets None."""
    import datetime

    torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    ctx = Context(rank, world, dev)
    driver = os.getppid()
    outbox.put((rank, "ready", None))
    try:
        while True:
            try:
                job = inbox.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != driver:  # the driver died without closing us (SIGKILL): leave too
                    break
                continue
            if job is None:
                break
            fn, kwargs = job
            try:
                result = fn(ctx, **kwargs)
                outbox.put((rank, "ok", result if rank == 0 else None))
            except BaseException:  # reported to the driver, which stops the group
                outbox.put((rank, "error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- driver side


class WorkerGroup:
    """Processes on ``devices`` (one rank each) in one process group; see the module doc."""

    def __init__(self, devices: Sequence[str], threads: int = 1, start_timeout_s: float = 120.0,
                 collective_timeout_s: float = 600.0) -> None:
        self.devices = check_devices(devices)
        self.world = len(self.devices)
        context = mp.get_context("spawn")
        self.outbox = context.Queue()
        self.inboxes = [context.Queue() for _ in self.devices]
        port = free_port()
        self.processes = []
        for rank, device in enumerate(self.devices):
            boot = {"package": PACKAGE, "root": str(PACK_ROOT), "rank": rank, "world": self.world,
                    "device": device, "port": port, "inbox": self.inboxes[rank], "outbox": self.outbox,
                    "threads": threads, "timeout_s": collective_timeout_s}
            process = context.Process(target=runpy.run_path, args=(str(BOOT),),
                                      kwargs={"init_globals": {"BOOT": boot}, "run_name": "__wan22duo_worker__"},
                                      daemon=True, name=f"wan22duo-rank{rank}")
            with main_script_hidden():
                process.start()
            self.processes.append(process)
        self.closed = False
        atexit.register(self.close)
        self._collect("ready", start_timeout_s, "starting the group")
        log.info("parallel group of %d ranks on %s started (pids %s)", self.world, self.devices, self.pids)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def alive(self) -> bool:
        return not self.closed and all(p.is_alive() for p in self.processes)

    def run(self, fn: Callable, timeout_s: Optional[float] = None, **kwargs: Any) -> Any:
        """Run ``fn(ctx, **kwargs)`` on every rank; rank 0's return value.

        Raises :class:`WorkerError` (after shutting the group down) when a rank raises,
        a worker dies, or ``timeout_s`` passes.
        """
        if self.closed:
            raise WorkerError("this parallel group was shut down; start a new one (shared_group does)")
        timeout_s = JOB_TIMEOUT_S if timeout_s is None else timeout_s
        for inbox in self.inboxes:
            inbox.put((fn, kwargs))
        return self._collect("ok", timeout_s, f"running {getattr(fn, '__name__', fn)}")

    def _collect(self, expected: str, timeout_s: Optional[float], doing: str) -> Any:
        waiting, result = set(range(self.world)), None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while waiting:
            try:
                rank, status, payload = self.outbox.get(timeout=POLL_S)
            except queue.Empty:
                self._fail_if_dead(doing)
                if deadline is not None and time.monotonic() > deadline:
                    self._fail(f"ranks {sorted(waiting)} gave no answer within {timeout_s:g} s while {doing}")
                continue
            if status == "error":
                # A rank whose peer died fails in its collective ("connection reset"): name the dead one.
                grace = time.monotonic() + DEATH_GRACE_S
                while time.monotonic() < grace:
                    self._fail_if_dead(doing, f"; rank {rank} then failed: {payload.strip().splitlines()[-1]}")
                    time.sleep(POLL_S / 4)
                self._fail(f"worker rank {rank} (device {self.devices[rank]}) failed while {doing}:\n{payload}")
            if status == expected:
                waiting.discard(rank)
                if rank == 0:
                    result = payload
        return result

    def _fail_if_dead(self, doing: str, then: str = "") -> None:
        for r, process in enumerate(self.processes):
            if not process.is_alive():
                code = process.exitcode
                how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
                self._fail(f"worker rank {r} (pid {process.pid}, device {self.devices[r]}) {how} while {doing}{then}")

    def _fail(self, what: str) -> None:
        self.close(force=True)
        raise WorkerError(f"{what}. The parallel group ({self.world} ranks on {', '.join(self.devices)}) was "
                          "shut down; the next job starts a fresh one.")

    def close(self, force: bool = False, timeout_s: float = 10.0) -> None:
        """Stop every worker: politely (None job, then join), else terminate, then kill."""
        if self.closed:
            return
        self.closed = True
        if not force:
            for process, inbox in zip(self.processes, self.inboxes):
                if process.is_alive():
                    inbox.put(None)
            deadline = time.monotonic() + timeout_s
            for process in self.processes:
                process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
        for q in (*self.inboxes, self.outbox):
            q.cancel_join_thread()
            q.close()
        atexit.unregister(self.close)
        log.info("parallel group on %s closed", self.devices)


_shared: Optional[WorkerGroup] = None


def shared_group(devices: Sequence[str], threads: int = 1) -> WorkerGroup:
    """The process-wide group on ``devices``: kept across jobs, replaced when dead or the devices change."""
    global _shared
    devices = check_devices(devices)
    if _shared is not None and (not _shared.alive or _shared.devices != devices):
        _shared.close(force=not _shared.alive)
        _shared = None
    if _shared is None:
        _shared = WorkerGroup(devices, threads=threads)
    return _shared


def close_shared_group() -> None:
    global _shared
    if _shared is not None:
        _shared.close()
        _shared = None


# ---------------------------------------------------------------- the video job


@dataclass(frozen=True)
class ExpertFile:
    """What a worker needs to load one expert itself: its file and the loader's settings (picklable)."""

    path: str
    compute_dtype: torch.dtype = torch.float32
    weight_dtype: Optional[str] = None  # None / "default": as stored
    attention: str = "auto"
    loras: tuple = ()  # ((path, strength), ...) applied in one pass, as engine.weights.lora.with_lora does

    @classmethod
    def of(cls, handle: Any) -> "ExpertFile":
        """The file behind a loader node's ``ModelHandle`` (refused when there is none)."""
        info = getattr(handle, "info", None)
        if not isinstance(info, dict) or not info.get("path"):
            raise ParallelError(f"{getattr(handle, 'name', type(handle).__name__)} has no model file the parallel "
                                "workers could load (a ComfyUI MODEL, or a model built in memory); load the "
                                "experts with Wan22DuoExpertLoader / Wan22DuoTI2VLoader to run them in parallel")
        weight = info.get("weight_dtype")
        return cls(str(info["path"]), handle.compute_dtype, None if weight in (None, "default") else weight,
                   info.get("attention") or "auto", tuple(info.get("loras", ())))


def parallel_expert(spec: ExpertFile, sequence_group: Any, cfg_group: Any):
    """A ``ModelHandle`` that loads ``spec`` on demand and wraps it for sequence / CFG parallel."""
    from ..memory.residency import ModelHandle
    from ..sampling.fast import apply_fast_options
    from ..weights.checkpoint import detect_dit, load_dit
    from ..weights.lora import apply_loras
    from .cfg import CfgParallel
    from .sequence import SequenceParallel

    def load(device: torch.device):
        model = load_dit(spec.path, compute_dtype=spec.compute_dtype, device=device, weight_dtype=spec.weight_dtype)
        if spec.loras:
            apply_loras(model, spec.loras, keep_backup=False)
        model = apply_fast_options(model, attention=spec.attention)  # compile stays off: collectives inside
        if dist.get_world_size(sequence_group) > 1:
            model = SequenceParallel(model, sequence_group)
        return model if cfg_group is None else CfgParallel(model, cfg_group)

    return ModelHandle(load, "cpu", spec.compute_dtype, {"config": detect_dit(spec.path), "path": spec.path})


def run_sample(ctx: Context, high: Any, low: Any = None, cfg_parallel: bool = False, **sample_kwargs: Any):
    """Job: ``engine.sampling.loop.sample`` on every rank with parallel experts.

    ``high`` / ``low``: :class:`ExpertFile` (or a plain path: fp32, as stored). The
    experts stay loaded in ``ctx.state`` for the next job with the same files and
    settings. Returns rank 0's ``SampleResult`` (every rank computes the same one).
    """
    from ..sampling.loop import sample
    from .cfg import split_groups

    specs = tuple(ExpertFile(p) if isinstance(p, str) else p for p in (high, low))
    key = (specs, cfg_parallel)
    if ctx.state.get("experts_key") != key:
        ctx.state.pop("experts", None)
        groups = ctx.state.setdefault("groups", {})
        if cfg_parallel not in groups:  # new_group is collective: every rank makes the same groups
            groups[cfg_parallel] = split_groups(cfg_parallel)
        sequence_group, cfg_group = groups[cfg_parallel]
        ctx.state["experts"] = tuple(None if s is None else parallel_expert(s, sequence_group, cfg_group)
                                     for s in specs)
        ctx.state["experts_key"] = key
    high_handle, low_handle = ctx.state["experts"]
    sample_kwargs.setdefault("memory", "keep_both")
    return sample(high_handle, low_handle, placement=(ctx.device, ctx.device), **sample_kwargs)


def boot(spec: dict) -> None:
    """Entry of a spawned worker (called from ``_boot.py`` once the pack is importable)."""
    worker_main(spec["rank"], spec["world"], spec["device"], spec["port"], spec["inbox"], spec["outbox"],
                spec["threads"], spec["timeout_s"])
