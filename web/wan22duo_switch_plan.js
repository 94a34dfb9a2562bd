// Wan 2.2 Duo: what the sampler will do with the current widget values, in words and numbers.
// Mirrors the routing plan in engine/sampling/loop.py (_plan): a negative boundary means the model's
// official one; TI2V-5B is a single model (every step on it, no switch); an explicit switch_step
// overrides the boundary. Pure and side-effect free (auto-loaded by ComfyUI, imported by tests).

import { boundarySwitchStep, makeSchedule, resolveSwitchStep } from "./wan22duo_schedule.js";
import { LABELS, OFFICIAL_BOUNDARY } from "./wan22duo_model_info.js";

// Assumed when the model is unknown (nothing connected yet): the T2V-A14B boundary.
export const FALLBACK_VARIANT = "t2v_a14b";

/** "1–26" or "7" (1-based, inclusive, en dash). */
export function stepRange(first, last) {
  return first === last ? `${first}` : `${first}–${last}`;
}

/** The caption: who runs which steps, 1-based as users count them. */
export function splitCaption(switchStep, steps, single = false) {
  const word = steps === 1 ? "step" : "steps";
  if (single) return `single model: ${word} ${stepRange(1, steps)}`;
  if (switchStep <= 0) return `low-noise ${word} ${stepRange(1, steps)} (high-noise expert unused)`;
  if (switchStep >= steps) return `high-noise ${word} ${stepRange(1, steps)} (low-noise expert unused)`;
  const highWord = switchStep === 1 ? "step" : "steps";
  return `high-noise ${highWord} ${stepRange(1, switchStep)}, low-noise ${stepRange(switchStep + 1, steps)}`;
}

function formatBoundary(b) {
  return Number.isFinite(b) ? b.toFixed(3).replace(/(\.\d\d\d)\d*$/, "$1") : String(b);
}

/**
 * Plan from the node's values. `variant` is the model's ("t2v_a14b" | "i2v_a14b" | "ti2v_5b") or
 * null when unknown; `hasLow` whether low_noise_model is connected (null: don't warn).
 * Returns {schedule, switchStep, boundary, single, caption, note, warning} or {error}.
 * Never throws.
 */
export function planSwitch({ scheduler, steps, shift, boundary, switchStep, variant = null, hasLow = null }) {
  let schedule;
  try {
    schedule = makeSchedule(scheduler, steps, shift);
  } catch (err) {
    return { error: err.message };
  }
  const label = LABELS[variant] ?? null;
  if (variant === "ti2v_5b") {
    if (switchStep !== -1 && switchStep !== steps) {
      return { schedule, error: `TI2V-5B is a single model and has no switch; set switch_step to -1 (got ${switchStep})` };
    }
    return {
      schedule,
      switchStep: steps,
      boundary: null,
      single: true,
      caption: splitCaption(steps, steps, true),
      note: `${label}: one model, no expert switch`,
      warning: hasLow === true ? "TI2V-5B takes no low_noise_model; disconnect it" : null,
    };
  }
  let used = boundary;
  let note;
  if (boundary === null || boundary === undefined || boundary < 0) {
    used = OFFICIAL_BOUNDARY[variant ?? FALLBACK_VARIANT];
    note = label ? `boundary ${formatBoundary(used)} (auto, ${label})` : `boundary ${formatBoundary(used)} (auto; model unknown, T2V-A14B assumed)`;
  } else {
    note = `boundary ${formatBoundary(used)}`;
  }
  let k;
  try {
    k = resolveSwitchStep(schedule.timesteps, used, switchStep);
    if (switchStep !== -1) {
      // The step decides; the engine ignores the boundary then, so only mention it when valid.
      note = used >= 0 && used <= 1
        ? `switch_step ${switchStep} (manual; ${note} would give ${boundarySwitchStep(schedule.timesteps, used)})`
        : `switch_step ${switchStep} (manual)`;
    }
  } catch (err) {
    return { schedule, error: err.message };
  }
  const warning =
    hasLow === false && k < steps ? `steps ${k + 1}–${steps} need the low-noise expert: connect low_noise_model` : null;
  return { schedule, switchStep: k, boundary: used, single: false, caption: splitCaption(k, steps), note, warning };
}
