"""Phase plans: more than two stages on one sigma schedule, in the one loop.

A Wan 2.2 A14B run has two stages, the high-noise expert then the low-noise expert,
split by the boundary rule (``engine.sampling.schedule``). The Lightning recipes add
stages in front: for example the base high-noise expert with CFG for the first steps
(to keep the motion), then the high-noise expert with the Lightning LoRA at cfg 1,
then the low-noise expert with its Lightning LoRA. Here such leading stages are
:class:`Phase` objects (a model, its cfg, how many steps it runs). They take the first
steps of the high-noise segment, in order; the hand-over to the low-noise expert is
still the boundary rule's (or the explicit ``switch_step``). Every stage walks the same
sigma list with the same solver object, so the trajectory is one: nothing is
re-noised between stages, exactly as between the two experts.

:class:`Stage` is one contiguous run of steps on one model; the loop, the step cache
(each stage has its own cache state) and the switch report all read the stages from
:func:`stages`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Phase:
    """A leading stage: ``model`` (a model handle) runs ``steps`` steps with guidance scale ``cfg``."""

    model: Any
    cfg: float
    steps: int


@dataclass(frozen=True)
class Stage:
    """Steps ``[start, stop)`` on the model the loop knows as ``role``."""

    role: str  # "lead1", "lead2", ... (leading phases), "high", "low"
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def as_dict(self) -> dict:
        return {"role": self.role, "start": self.start, "stop": self.stop}


def lead_role(n: int) -> str:
    """The loop's name of the ``n``-th leading phase (1-based), as the report shows it."""
    return f"lead{n}"


def stages(steps: int, switch_step: int, lead_steps: Sequence[int] = ()) -> tuple[Stage, ...]:
    """The non-empty stages of a run: the leading phases, then the high- and low-noise experts."""
    out, start = [], 0
    for n, count in enumerate(lead_steps, 1):
        out.append(Stage(lead_role(n), start, start + count))
        start += count
    out.append(Stage("high", start, switch_step))
    out.append(Stage("low", switch_step, steps))
    return tuple(s for s in out if s.stop > s.start)


def check_lead_steps(lead_steps: Sequence[int], switch_step: int, steps: int) -> str:
    """Why these leading phases do not fit the plan ("" when they do)."""
    for n, count in enumerate(lead_steps, 1):
        if not isinstance(count, int) or count < 1:
            return f"phase {n} runs {count!r} steps; each phase must run at least 1 step"
    total = sum(lead_steps)
    if total > switch_step:
        where = (f"the boundary hands over to the low-noise expert after step {switch_step} of {steps}"
                 if switch_step < steps else f"the run has only {steps} steps")
        return (f"the leading phases run {total} steps ({' + '.join(str(c) for c in lead_steps)}), but {where}. "
                "Leading phases run before the high-noise expert, inside its steps: give them fewer steps, or "
                "raise steps, or set switch_step (on the sampler) to where the low-noise expert should take over")
    return ""
