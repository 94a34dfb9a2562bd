"""Write web/tests/vectors.json: schedules and switch steps computed by the Python engine.

The web extension re-implements engine/sampling/schedule.py in JavaScript (web/wan22duo_schedule.js) to
draw the expert switch on the canvas. These vectors pin the two together:

* ``node --test web/tests/`` checks the JavaScript against this file;
* ``tests/test_web_vectors.py`` rebuilds the vectors from the engine and compares them with the
  committed file, so any drift of the engine fails a test until this script is re-run.

Usage: ``python scripts/make_web_vectors.py [--check]`` (``--check`` exits 1 if the file is stale).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS_PATH = ROOT / "web" / "tests" / "vectors.json"

# Official step counts and shifts, small and odd counts (simple's stride truncation), and shifts
# that are not exact in float32 (they catch a float32/float64 mix-up in the simple table).
STEPS = (1, 2, 3, 4, 5, 7, 10, 20, 30, 40, 50)
SHIFTS = (0.5, 1.0, 3.0, 5.0, 5.1, 8.0, 12.0, 12.3)
# More cases: 100 steps at the official shifts, the whole 1000-entry table (simple, also with
# more steps than entries, where picks repeat), a fine linspace (wan), and wan grids where
# truncating the float32 sigma instead of the float64 one would change a timestep.
EXTRA = {
    "wan": ((100, 5.0), (100, 12.0), (1000, 12.3), (37, 1.0), (111, 3.5)),
    "simple": ((100, 5.0), (100, 12.0), (1000, 5.1), (1200, 2.7182818)),
}
# Boundaries: both official ones, the extremes (above the first / below the last timestep) and
# values in between.
BOUNDARIES = (0.0, 0.3, 0.5, 0.875, 0.9, 0.95, 0.999, 1.0)


def _load_schedule_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    from packpath import load_pack

    load_pack()
    from wan22duo.engine.sampling import schedule

    return schedule


def _exact_boundaries(timesteps: list[float]) -> list[float]:
    """Boundaries that land exactly on, or just around, a timestep of the schedule.

    The rule is inclusive (t >= boundary*1000), so these probe the edge where a float64
    rounding difference would move the switch by one step.
    """
    picks = sorted({timesteps[len(timesteps) // 2], timesteps[-1], timesteps[0]})
    out = []
    for t in picks:
        for b in (t / 1000, (t + 0.5) / 1000, (t - 0.5) / 1000):
            if 0.0 <= b <= 1.0:
                out.append(b)
    return out


def _switch_cases(schedule_mod, timesteps_tensor) -> list[list]:
    """``[boundary, switch_step, expected]`` triples, expected from the engine."""
    timesteps = [float(t) for t in timesteps_tensor]
    steps = len(timesteps)
    cases = []
    for b in list(BOUNDARIES) + _exact_boundaries(timesteps):
        cases.append([b, -1, schedule_mod.resolve_switch_step(timesteps_tensor, b, -1)])
    for k in sorted({0, 1, steps // 2, steps}):
        cases.append([0.875, k, schedule_mod.resolve_switch_step(timesteps_tensor, 0.875, k)])
    return cases


def _number(x: float):
    """Integers stay integers in JSON (wan timesteps); everything else is the exact float."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _schedule_entry(schedule_mod, name: str, steps: int, shift: float) -> dict:
    sched = schedule_mod.make_schedule(name, steps, shift)
    return {
        "scheduler": name,
        "steps": steps,
        "shift": shift,
        # float32 values written as the float64 they convert to: exact, and exact in JS.
        "sigmas": [_number(s) for s in sched.sigmas.tolist()],
        "timesteps": [_number(t) for t in sched.timesteps.tolist()],
        "switches": _switch_cases(schedule_mod, sched.timesteps),
    }


def _rejected(fn) -> bool:
    try:
        fn()
    except ValueError:
        return True
    return False


def _error_cases(schedule_mod) -> list[dict]:
    """Inputs the engine rejects; the JavaScript must reject them too (not draw nonsense)."""
    ok = schedule_mod.make_schedule("wan", 10, 5.0).timesteps
    candidates = [
        {"scheduler": "karras", "steps": 10, "shift": 5.0},
        {"scheduler": "wan", "steps": 0, "shift": 5.0},
        {"scheduler": "simple", "steps": -3, "shift": 5.0},
        {"scheduler": "wan", "steps": 10, "shift": 0.0},
        {"scheduler": "simple", "steps": 10, "shift": -1.0},
        {"scheduler": "wan", "steps": 10, "shift": 5.0, "boundary": 1.5},
        {"scheduler": "wan", "steps": 10, "shift": 5.0, "boundary": -0.5},
        {"scheduler": "wan", "steps": 10, "shift": 5.0, "boundary": 0.875, "switch_step": 11},
        {"scheduler": "wan", "steps": 10, "shift": 5.0, "boundary": 0.875, "switch_step": -2},
    ]
    out = []
    for case in candidates:
        if "boundary" in case:
            fn = lambda c=case: schedule_mod.resolve_switch_step(ok, c["boundary"], c.get("switch_step", -1))
        else:
            fn = lambda c=case: schedule_mod.make_schedule(c["scheduler"], c["steps"], c["shift"])
        if _rejected(fn):
            out.append(case)
    return out


PLAN_VARIANTS = ("t2v_a14b", "i2v_a14b", "ti2v_5b")
PLAN_SCHEDULES = (("wan", 40, 12.0), ("wan", 40, 5.0), ("simple", 20, 8.0), ("wan", 1, 5.0))
PLAN_BOUNDARIES = (-1.0, -0.5, 0.0, 0.5, 0.9, 1.0, 1.5)


def _plan_cases() -> list[list]:
    """The sampler's routing plan (engine/sampling/loop.py): auto boundary per model, TI2V-5B single.

    Each case is ``[variant, scheduler, steps, shift, boundary, switch_step, has_low,
    switch_step_or_None, boundary_or_None, error]``; ``error`` is true when the engine refuses.
    """
    _load_schedule_module()
    from wan22duo.engine.sampling import loop

    cases = []
    for variant in PLAN_VARIANTS:
        for name, steps, shift in PLAN_SCHEDULES:
            for boundary in PLAN_BOUNDARIES:
                for switch_step in sorted({-1, 0, steps // 2, steps, steps + 1}):
                    for has_low in (True, False):
                        low = object() if has_low else None
                        try:
                            plan = loop.plan_switch(variant, low, steps, shift, boundary, switch_step, name)
                        except ValueError:  # SamplingError is a ValueError
                            cases.append([variant, name, steps, shift, boundary, switch_step, has_low, None, None, True])
                            continue
                        cases.append([variant, name, steps, shift, boundary, switch_step, has_low,
                                      plan.switch_step, plan.boundary, False])
    return cases


# File names as users have them (Comfy-Org repackaged, official shards, LoRA-merged, odd ones).
NAMES = (
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
    "wan2.2_i2v_high_noise_14B_fp16.safetensors",
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
    "wan2.2_ti2v_5B_fp16.safetensors",
    "Wan2_2-T2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors",
    "Wan2_2-I2V-A14B-LOW_bf16.safetensors",
    "subdir/Wan2.2-TI2V-5B.safetensors",
    "wan22_5b_turbo.safetensors",
    "wan2.2_t2v_14B_highnoise.safetensors",
    "wan2.2-i2v-lownoise.safetensors",
    "my_model_high_low_mix.safetensors",
    "wan2.1_t2v_14B_bf16.safetensors",
    "flux1-dev.safetensors",
    "model_15b_test.safetensors",
    "highlight_t2v.safetensors",
    "",
)


def _name_cases() -> list[list]:
    """``[name, variant_or_None, role]`` from the route's file-name fallback (nodes/routes.py)."""
    _load_schedule_module()
    from wan22duo.nodes import routes

    out = []
    for name in NAMES:
        variant = routes.guess_variant(name)
        out.append([name, variant, routes.guess_role(name, variant)])
    return out


def build_vectors() -> dict:
    """All vectors, computed now from engine/sampling/schedule.py."""
    schedule_mod = _load_schedule_module()
    schedules = []
    for name in schedule_mod.SCHEDULES:
        for steps in STEPS:
            for shift in SHIFTS:
                schedules.append(_schedule_entry(schedule_mod, name, steps, shift))
        for steps, shift in EXTRA[name]:
            schedules.append(_schedule_entry(schedule_mod, name, steps, shift))
    return {
        "about": "Generated by scripts/make_web_vectors.py from engine/sampling/schedule.py; do not edit by hand.",
        "schedules": schedules,
        "errors": _error_cases(schedule_mod),
        "plans": _plan_cases(),
        "names": _name_cases(),
    }


def dumps(vectors: dict) -> str:
    """Stable text: one schedule per line keeps diffs readable."""
    lines = ["{", f'  "about": {json.dumps(vectors["about"])},', '  "schedules": [']
    entries = [json.dumps(s, separators=(",", ":")) for s in vectors["schedules"]]
    lines.append(",\n".join("    " + e for e in entries))
    lines.append("  ],")
    lines.append('  "errors": [')
    lines.append(",\n".join("    " + json.dumps(e, separators=(",", ":")) for e in vectors["errors"]))
    lines.append("  ],")
    lines.append('  "plans": [')
    lines.append(",\n".join("    " + json.dumps(c, separators=(",", ":")) for c in vectors["plans"]))
    lines.append("  ],")
    lines.append('  "names": [')
    lines.append(",\n".join("    " + json.dumps(c) for c in vectors["names"]))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    text = dumps(build_vectors())
    if args.check:
        current = VECTORS_PATH.read_text() if VECTORS_PATH.exists() else ""
        if current != text:
            print(f"{VECTORS_PATH} is stale; run python scripts/make_web_vectors.py", file=sys.stderr)
            return 1
        print(f"{VECTORS_PATH} is up to date")
        return 0
    VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
    VECTORS_PATH.write_text(text)
    print(f"wrote {VECTORS_PATH} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
