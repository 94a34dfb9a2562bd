"""Step caching that knows the experts: skip a model call when the run itself predicts little change.

The criterion follows EasyCache (Zhou et al. 2025, "Less is Enough: Training-Free Video
Diffusion Acceleration via Runtime-Adaptive Caching", arXiv 2507.02860), written for
this loop. Let ``x_i`` be the latent fed at step ``i`` and ``v_i`` the guided velocity
the step integrates (after CFG). For the last two steps that ran, ``a`` then ``b``,
the *transformation rate*

    k = mean|v_b - v_a| / mean|x_b - x_a|

says how strongly the output followed the input. At a later step ``i`` the predicted
relative output change is ``k * mean|x_i - x_{i-1}| / mean|v_b|``; these are summed
over the steps since the model last ran, and while the sum stays below ``threshold``
the step is *reused*: ``v_i = x_i + (v_b - x_b)``, the cached output change (the
transformation vector) applied to the new input, never the old output itself. Once
the sum reaches the threshold the model runs and the sum restarts from 0. Nothing is
profiled offline; the rate comes from the run.

What the published caches do not know, and this one does:

* **per stage** (each expert, and each leading phase of a phase plan): every stage
  starts with a fresh state, so no rate, sum or cached change ever crosses the switch
  from the high-noise to the low-noise expert (two different networks);
* **warm-up**: the first ``warmup`` steps of each stage always run (at least 2: the
  rate needs two calls of the same model), so the first step after a switch is never
  reused; the warm-up is counted by the stage's own state, which the switch resets;
* **the last step of each stage runs**: it is the last output the stage hands on (and
  the final step of the run lands on the data estimate);
* **CFG**: the decision is made once per step on the guided velocity, so the
  conditional and unconditional passes (or the one batched forward, or ComfyUI's own
  CFG on a MODEL) run or are reused together and cannot drift apart. Reusing the guided
  change is the same as reusing each pass's change, since CFG is linear in the passes;
* **a minimum**: no step is reused in a plan of fewer than ``MIN_STEPS`` (10) steps.
  Below that lie the distilled recipes (Lightning, 4-8 steps), whose every step is a
  large jump the model was trained to make in one call, so one step's rate does not
  predict the next; and with two warm-up steps and the last step protected in each
  expert, six of at most nine steps would run anyway. A stage shorter than
  ``warmup + 2`` steps has no step to reuse either.

``threshold`` 0 reuses nothing (the sum is never below 0); the run is then bit for bit
the uncached one, although the rates are still measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import public
from .phases import Stage

MIN_STEPS = 10
DEFAULT_WARMUP = 2
# Chosen on the trained toy MoE (bench/results_cache.md): the largest tested threshold whose worst final-latent
# deviation from the uncached run stays under 5 % in every T2V/I2V, 20/40-step configuration (0.2 passes the
# bench's score and pixel criteria too, but moves T2V 20-step latents by up to 15 %). A toy number, not Wan's.
DEFAULT_THRESHOLD = 0.1


@public
class StepCacheError(ValueError):
    """Step-cache settings out of range; the message names the value and the fix."""


@dataclass(frozen=True)
class StepCache:
    """Settings: ``threshold`` on the summed predicted change (0: reuse nothing), ``warmup`` steps per stage."""

    threshold: float = DEFAULT_THRESHOLD
    warmup: int = DEFAULT_WARMUP

    def __post_init__(self):
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise StepCacheError(f"step cache threshold is {self.threshold!r}; it must be a finite number >= 0 "
                                 "(0 reuses no step; the Wan22DuoStepCache node's tooltip gives the measured default)")
        if not isinstance(self.warmup, int) or self.warmup < 2:
            raise StepCacheError(f"step cache warmup is {self.warmup!r}; it must be an integer >= 2 (the rate needs "
                                 "two model calls of the same expert before any step can be reused)")


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.abs().mean())


class _StageState:
    """What one stage has seen: the last two calls that ran, the previous input, the running sum."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.ran = 0  # model calls of this stage so far (the warm-up counter)
        self.x_ran: Optional[torch.Tensor] = None  # input and output of the last call that ran
        self.v_ran: Optional[torch.Tensor] = None
        self.rate: Optional[float] = None  # k, from the last two calls that ran
        self.x_prev: Optional[torch.Tensor] = None  # the previous step's input, ran or reused
        self.total = 0.0  # summed predicted change since the model last ran

    def predicted_change(self, x: torch.Tensor) -> Optional[float]:
        if self.rate is None or self.x_prev is None or self.v_ran is None:
            return None
        scale = _mean_abs(self.v_ran)
        if scale == 0.0:
            return None
        return self.rate * _mean_abs(x - self.x_prev) / scale

    def record(self, x: torch.Tensor, v: torch.Tensor) -> None:
        if self.x_ran is not None:
            moved = _mean_abs(x - self.x_ran)
            self.rate = _mean_abs(v - self.v_ran) / moved if moved > 0.0 else None
        self.x_ran, self.v_ran = x, v
        self.ran += 1
        self.total = 0.0


class CacheRun:
    """One run's cache: ask :meth:`reuse` before a step's model call, :meth:`record` after it.

    ``ran`` lists, per step, whether the model ran (True) or its change was reused.
    """

    def __init__(self, settings: StepCache, stages: Sequence[Stage], steps: int):
        self.settings = settings
        self.stages = tuple(stages)
        self.steps = steps
        self.active = steps >= MIN_STEPS
        self.ran: list[bool] = []
        self._state: Optional[_StageState] = None

    def _stage(self, i: int) -> Stage:
        for stage in self.stages:
            if stage.start <= i < stage.stop:
                return stage
        raise IndexError(f"step {i} lies in no stage of {self.stages}")

    def reuse(self, i: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The velocity to use at step ``i`` without a model call, or None: the model must run."""
        if i != len(self.ran):
            raise RuntimeError(f"step cache expected step {len(self.ran)}, got {i}; steps must run in order")
        stage = self._stage(i)
        if self._state is None or self._state.stage != stage:
            self._state = _StageState(stage)  # a new expert or phase: nothing carries over
        state = self._state
        change = state.predicted_change(x)
        state.x_prev = x
        protected = not self.active or state.ran < self.settings.warmup or i == stage.stop - 1
        if protected or change is None:
            return None
        state.total += change
        if not state.total < self.settings.threshold:
            return None
        self.ran.append(False)
        return x + (state.v_ran - state.x_ran)

    def record(self, i: int, x: torch.Tensor, v: torch.Tensor) -> None:
        """The model ran at step ``i`` on input ``x`` and gave the guided velocity ``v``."""
        if i != len(self.ran) or self._state is None:
            raise RuntimeError(f"step cache: record({i}) without reuse({i}) first")
        self._state.record(x, v)
        self.ran.append(True)

    def report(self) -> dict:
        """JSON-ready: the settings, whether the plan was long enough, and the reused steps (0-based)."""
        return {"threshold": self.settings.threshold, "warmup": self.settings.warmup, "active": self.active,
                "min_steps": MIN_STEPS, "reused": [i for i, ran in enumerate(self.ran) if not ran]}
