"""Flow-matching noise schedules and the expert-switch rule (spec §1.3, §5).

A schedule is the list of sigmas a solver walks (``steps + 1`` values ending in 0)
plus the timestep fed to the model at each of the ``steps`` starting sigmas. The
expert for a step is chosen from that same timestep, exactly as the official code
does, so the switch can never disagree with what the model is told.

Two schedules:

* ``"wan"``: the official FlowUniPC grid. Unshifted sigmas run linearly from
  float32(0.999) (not 1.0) towards 0 in float64, are shifted, and the model gets
  ``int(sigma * 1000)`` (truncated). Solver sigmas are the same values in float32.
* ``"simple"``: ComfyUI's ``simple`` scheduler over ``ModelSamplingDiscreteFlow``
  (a 1000-entry float32 table of shifted sigmas, sampled evenly from the top). The
  model gets the float ``sigma * 1000``, as ComfyUI feeds it.
"""
from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000
# The official training grid tops out at float32(0.999); its inference grid starts there.
OFFICIAL_SIGMA_MAX = float(np.float32(0.999))
SCHEDULES = ("wan", "simple")


@dataclass(frozen=True)
class Schedule:
    """Solver sigmas (float32, ``steps + 1``, last is 0) and model timesteps (float64, ``steps``)."""

    name: str
    shift: float
    sigmas: torch.Tensor
    timesteps: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())


def shift_sigma(sigma, shift: float):
    """Resolution shift of flow matching: ``shift * s / (1 + (shift - 1) * s)``."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def make_schedule(name: str, steps: int, shift: float) -> Schedule:
    """Build the named schedule; bad arguments raise ValueError naming the value."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {SCHEDULES}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be positive, got {shift!r} (the official values are 12.0 for T2V-A14B, 5.0 otherwise)")
    build = _wan_schedule if name == "wan" else _simple_schedule
    sched = build(steps, float(shift))
    return _check_not_degenerate(sched, build(steps, 1.0))


def _check_not_degenerate(sched: Schedule, unshifted: Schedule) -> Schedule:
    """Every step that lowers sigma without a shift must still lower it after the shift. A shift far from 1
    pushes the float32 sigmas together (to 1 when large; NaN past about 1e300), so steps would stand still or
    divide by zero: say the shift is why. (Steps the grid itself repeats, as ``simple`` does with more steps
    than its 1000-entry table, are not the shift's doing and stay allowed.)"""
    sigmas, falls = sched.sigmas, unshifted.sigmas[1:] < unshifted.sigmas[:-1]
    if bool(torch.isfinite(sigmas).all()) and bool((sigmas[1:] < sigmas[:-1])[falls].all()):
        return sched
    which = "large" if sched.shift > 1 else "small"
    shown = ", ".join(f"{float(v):.9g}" for v in sigmas[:4])
    raise ValueError(
        f"shift {sched.shift:g} is too {which}: the {sched.steps}-step {sched.name} schedule degenerates (its float32 "
        f"sigmas {shown}, ... no longer fall at every step), so the sampler could not denoise. Use a shift near the "
        "official values (12.0 for T2V-A14B, 5.0 otherwise; at most 100 in the node).")


def _wan_schedule(steps: int, shift: float) -> Schedule:
    unshifted = np.linspace(OFFICIAL_SIGMA_MAX, 0.0, steps + 1)[:-1]
    shifted = shift_sigma(unshifted, shift)
    # int64 truncation, not rounding: the official scheduler casts sigma*1000 to int64.
    timesteps = (shifted * NUM_TRAIN_TIMESTEPS).astype(np.int64).astype(np.float64)
    sigmas = np.concatenate([shifted, [0.0]]).astype(np.float32)
    return Schedule("wan", shift, torch.from_numpy(sigmas), torch.from_numpy(timesteps))


def comfy_flow_sigma_table(shift: float, table_size: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """ComfyUI's ModelSamplingDiscreteFlow table: ``shift_fn((k + 1) / 1000)`` in float32."""
    t = torch.arange(1, table_size + 1, 1) / table_size * NUM_TRAIN_TIMESTEPS
    t = t / NUM_TRAIN_TIMESTEPS
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def _simple_schedule(steps: int, shift: float) -> Schedule:
    table = comfy_flow_sigma_table(shift)
    stride = len(table) / steps
    picked = [float(table[-(1 + int(i * stride))]) for i in range(steps)]
    sigmas = torch.tensor(picked + [0.0], dtype=torch.float32)
    timesteps = sigmas[:-1].to(torch.float64) * NUM_TRAIN_TIMESTEPS
    return Schedule("simple", shift, sigmas, timesteps)


def boundary_switch_step(timesteps: torch.Tensor, boundary: float) -> int:
    """Number of leading steps routed to the high-noise expert.

    Official rule: the high-noise expert runs while the timestep fed to the model is
    at least ``boundary * 1000``. Timesteps decrease, so those steps are a prefix.
    A boundary above the first timestep gives 0; one at or below the last gives all.
    """
    if not 0.0 <= boundary <= 1.0:
        raise ValueError(
            f"boundary must lie in [0, 1], got {boundary!r} (official: 0.875 for T2V-A14B, 0.900 for I2V-A14B)"
        )
    boundary_t = boundary * NUM_TRAIN_TIMESTEPS
    high = timesteps >= boundary_t
    return int(high.sum().item()) if bool(high.all()) else int(torch.nonzero(~high)[0].item())


def resolve_switch_step(timesteps: torch.Tensor, boundary: float, switch_step: int = -1) -> int:
    """The step index where the low-noise expert takes over.

    ``switch_step == -1`` applies the boundary rule; any other value is an explicit
    step index in ``[0, steps]`` (0: low-noise expert only; ``steps``: high only).
    """
    steps = int(timesteps.numel())
    if switch_step == -1:
        return boundary_switch_step(timesteps, boundary)
    if not 0 <= switch_step <= steps:
        raise ValueError(
            f"switch_step must be -1 (use the boundary) or a step index in [0, {steps}], got {switch_step!r}"
        )
    return int(switch_step)
