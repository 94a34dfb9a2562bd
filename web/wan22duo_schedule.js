// Wan 2.2 Duo: noise schedules and the expert-switch rule, bit for bit as engine/sampling/schedule.py.
//
// Pure math, no DOM and no ComfyUI imports: the browser extension and `node --test` both load it.
// ComfyUI also imports every .js file in web/ as an extension script, so this module must have
// no side effects at load time.
//
// float32 arithmetic is emulated with Math.fround. For + - * / of two float32 operands the exact
// result rounded to float64 and then to float32 equals the float32 result (float64 has more than
// 2*24+2 bits), so `fround(a op b)` is exact here.

const fround = Math.fround;

export const NUM_TRAIN_TIMESTEPS = 1000;
// The official training grid tops out at float32(0.999); its inference grid starts there.
export const OFFICIAL_SIGMA_MAX = fround(0.999);
export const SCHEDULES = Object.freeze(["wan", "simple"]);

/** Resolution shift of flow matching, in float64 and in the engine's operation order. */
export function shiftSigma(sigma, shift) {
  return (shift * sigma) / (1 + (shift - 1) * sigma);
}

function checkArgs(name, steps, shift) {
  if (!SCHEDULES.includes(name)) {
    throw new RangeError(`unknown scheduler ${JSON.stringify(name)}; expected one of ${SCHEDULES.join(", ")}`);
  }
  if (!Number.isInteger(steps) || steps < 1) {
    throw new RangeError(`steps must be a positive integer, got ${steps}`);
  }
  if (!(shift > 0)) {
    throw new RangeError(`shift must be positive, got ${shift} (official: 12.0 for T2V-A14B, 5.0 otherwise)`);
  }
}

/**
 * The official FlowUniPC grid: numpy float64 linspace from float32(0.999) to 0 (steps + 1 points,
 * the last dropped), shifted in float64; the model gets int(sigma * 1000), truncated.
 */
function wanSchedule(steps, shift) {
  // numpy.linspace computes arange(num) * ((stop - start) / div) + start.
  const delta = 0 - OFFICIAL_SIGMA_MAX;
  const step = delta / steps;
  const sigmas = new Array(steps + 1);
  const timesteps = new Array(steps);
  for (let i = 0; i < steps; i++) {
    const shifted = shiftSigma(i * step + OFFICIAL_SIGMA_MAX, shift);
    timesteps[i] = Math.trunc(shifted * NUM_TRAIN_TIMESTEPS);
    sigmas[i] = fround(shifted);
  }
  sigmas[steps] = 0;
  return { name: "wan", steps, shift, sigmas, timesteps };
}

const tableCache = new Map();

/**
 * ComfyUI's ModelSamplingDiscreteFlow table in float32: shift_fn((k + 1) / 1000), k = 0..999.
 * torch rounds the Python scalars `shift` and `shift - 1` to float32 before each operation.
 */
export function comfyFlowSigmaTable(shift) {
  const cached = tableCache.get(shift);
  if (cached) return cached;
  const table = new Float64Array(NUM_TRAIN_TIMESTEPS);
  const shift32 = fround(shift);
  const shiftMinus1 = fround(shift - 1);
  for (let k = 1; k <= NUM_TRAIN_TIMESTEPS; k++) {
    // torch.arange(1, 1001) / 1000 * 1000, then / 1000 inside the sigma function, all float32.
    let t = fround(k / NUM_TRAIN_TIMESTEPS);
    t = fround(t * NUM_TRAIN_TIMESTEPS);
    t = fround(t / NUM_TRAIN_TIMESTEPS);
    if (shift === 1) {
      table[k - 1] = t;
      continue;
    }
    const numerator = fround(shift32 * t);
    const denominator = fround(1 + fround(shiftMinus1 * t));
    table[k - 1] = fround(numerator / denominator);
  }
  if (tableCache.size > 32) tableCache.clear();
  tableCache.set(shift, table);
  return table;
}

/** ComfyUI's "simple" scheduler: evenly strided picks from the top of the table; t = sigma * 1000. */
function simpleSchedule(steps, shift) {
  const table = comfyFlowSigmaTable(shift);
  const stride = table.length / steps;
  const sigmas = new Array(steps + 1);
  const timesteps = new Array(steps);
  for (let i = 0; i < steps; i++) {
    const sigma = table[table.length - 1 - Math.trunc(i * stride)];
    sigmas[i] = sigma;
    timesteps[i] = sigma * NUM_TRAIN_TIMESTEPS;
  }
  sigmas[steps] = 0;
  return { name: "simple", steps, shift, sigmas, timesteps };
}

/**
 * Build the named schedule: `sigmas` (steps + 1 float32 values as numbers, last 0) and
 * `timesteps` (steps values fed to the model). Bad arguments throw a RangeError naming the value.
 */
export function makeSchedule(name, steps, shift) {
  checkArgs(name, steps, shift);
  return name === "wan" ? wanSchedule(steps, shift) : simpleSchedule(steps, shift);
}

/**
 * Number of leading steps routed to the high-noise expert: those whose timestep is at least
 * boundary * 1000 (inclusive, on the timestep the model gets).
 */
export function boundarySwitchStep(timesteps, boundary) {
  if (!(boundary >= 0 && boundary <= 1)) {
    throw new RangeError(`boundary must lie in [0, 1], got ${boundary} (official: 0.875 T2V-A14B, 0.900 I2V-A14B)`);
  }
  const boundaryT = boundary * NUM_TRAIN_TIMESTEPS;
  for (let i = 0; i < timesteps.length; i++) {
    if (!(timesteps[i] >= boundaryT)) return i;
  }
  return timesteps.length;
}

/**
 * The step index where the low-noise expert takes over. switchStep -1 applies the boundary rule;
 * any other value is an explicit index in [0, steps].
 */
export function resolveSwitchStep(timesteps, boundary, switchStep = -1) {
  if (switchStep === -1) return boundarySwitchStep(timesteps, boundary);
  const steps = timesteps.length;
  if (!Number.isInteger(switchStep) || switchStep < 0 || switchStep > steps) {
    throw new RangeError(`switch_step must be -1 (use the boundary) or a step index in [0, ${steps}], got ${switchStep}`);
  }
  return switchStep;
}
