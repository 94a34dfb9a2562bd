"""Wan22DuoParallel: run one video on several devices (sequence / CFG parallel).

The node only states where: a list of devices and whether the two guidance passes go
to two halves of them. Wan22DuoSampler, given it on its ``parallel`` input, sends the
job to a group of worker processes (``engine.parallel.workers``), one per device,
started on first use and kept for the next job; each worker loads the experts from
their files itself. A new device list replaces the group; a worker that dies fails
that job with an error naming it, and the next job starts a fresh group.
"""
from __future__ import annotations

import torch

from . import _comfy

DEVICES_TIP = ("Comma-separated devices, one worker process each: cuda:0,cuda:1 (or cpu,cpu to try it without "
               "GPUs, slowly). The attention heads (40 for A14B, 24 for TI2V-5B) must divide by the number of "
               "devices (by half of it with cfg_parallel).")
CFG_TIP = ("Run the conditional and unconditional guidance passes at the same time on two halves of the devices "
           "(needs an even count). Off: every device works on every pass, split by tokens.")


def parse_devices(text: str) -> list[str]:
    """``"cuda:0, cuda:1"`` -> checked device names (each must exist here)."""
    from ..engine.parallel.workers import check_devices

    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise ValueError(f"Wan22DuoParallel: devices {text!r} lists no device; expected e.g. 'cuda:0,cuda:1'")
    return check_devices([str(_comfy.resolve_device(n)) for n in names])


class Wan22DuoParallel:
    CATEGORY = "Wan22Duo/sampling"
    DESCRIPTION = ("Splits each sampling step of Wan22DuoSampler over several devices: the video's tokens are "
                   "divided between worker processes (one per device) that exchange attention heads, so one video "
                   "runs faster on several GPUs. Connect it to the sampler's parallel input.")
    RETURN_TYPES = ("WAN22DUO_PARALLEL",)
    RETURN_NAMES = ("parallel",)
    OUTPUT_TOOLTIPS = ("Where Wan22DuoSampler runs: connect to its parallel input.",)
    FUNCTION = "options"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "devices": ("STRING", {"default": "cuda:0,cuda:1", "tooltip": DEVICES_TIP}),
            "cfg_parallel": ("BOOLEAN", {"default": False, "tooltip": CFG_TIP}),
        }}

    def options(self, devices: str = "cuda:0,cuda:1", cfg_parallel: bool = False):
        names = parse_devices(devices)
        if cfg_parallel and len(names) % 2:
            raise ValueError(f"Wan22DuoParallel: cfg_parallel needs an even number of devices; got {len(names)} "
                             f"({', '.join(names)})")
        return ({"devices": names, "cfg_parallel": bool(cfg_parallel)},)


def run_parallel(parallel: dict, high, low, **sample_kwargs):
    """``engine.sampling.loop.sample`` run on the group of ``parallel["devices"]``; rank 0's result."""
    from ..engine.parallel.workers import ExpertFile, run_sample, shared_group

    experts = {"high": ExpertFile.of(high), "low": None if low is None else ExpertFile.of(low)}
    weights = sum(int(h.info.get("weight_bytes", 0)) for h in (high, low) if h is not None)
    for device in parallel["devices"]:  # a worker may hold both experts; ComfyUI's own models make room
        _comfy.free_memory(weights, torch.device(device))
    group = shared_group(parallel["devices"])
    return group.run(run_sample, cfg_parallel=parallel["cfg_parallel"], **experts, **sample_kwargs)


NODE_CLASS_MAPPINGS = {"Wan22DuoParallel": Wan22DuoParallel}
NODE_DISPLAY_NAME_MAPPINGS = {"Wan22DuoParallel": "Wan 2.2 Duo Parallel (several devices)"}
