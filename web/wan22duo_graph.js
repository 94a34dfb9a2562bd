// Wan 2.2 Duo: reading the sampler node and its neighbours in the LiteGraph graph, and the run's
// report. Duck-typed on the node objects (widgets, inputs, getInputNode), no ComfyUI imports, so
// node tests can drive it with plain objects. Auto-loaded by ComfyUI: no side effects.

export const MODEL_SOCKET = "WAN22DUO_MODEL";
// Wan22DuoModelSampler takes ComfyUI's own MODEL (UNETLoader, UnetLoaderGGUF, LoRA and patch chains).
export const MODEL_SOCKETS = Object.freeze([MODEL_SOCKET, "MODEL"]);
// Mirrors nodes/comfy_model.py OFFICIAL_SHIFT: what shift -1 means when no ModelSampling* node sets one.
export const OFFICIAL_SHIFT = Object.freeze({ t2v_a14b: 12.0, i2v_a14b: 5.0, ti2v_5b: 5.0 });
export const WATCHED = Object.freeze(["steps", "shift", "boundary", "switch_step", "scheduler"]);
const MAX_HOPS = 16; // LoRA loaders, reroutes... between the sampler and the file loader

export function widgetValue(node, name) {
  return node?.widgets?.find((w) => w?.name === name)?.value;
}

export function inputIndex(node, name) {
  return node?.inputs?.findIndex((input) => input?.name === name) ?? -1;
}

/**
 * Walk the model chain behind a model input (LoRA loaders, ModelSamplingSD3 and other MODEL
 * patches, one-input reroutes) towards the file loader; `visit(origin)` returns a value to stop
 * with, or undefined to go on. null when unconnected, not found or cyclic.
 */
function walkModelChain(node, inputName, visit) {
  const seen = new Set();
  let current = node;
  let slot = inputIndex(node, inputName);
  for (let hop = 0; hop < MAX_HOPS && slot >= 0; hop++) {
    if (current.inputs?.[slot]?.link == null) return null;
    const origin = current.getInputNode?.(slot);
    if (!origin || seen.has(origin.id)) return null;
    seen.add(origin.id);
    const found = visit(origin);
    if (found !== undefined) return found;
    const inputs = origin.inputs ?? [];
    let next = inputs.findIndex((input) => MODEL_SOCKETS.includes(input?.type) && input.link != null);
    if (next < 0 && inputs.length === 1) next = 0; // a plain reroute
    current = origin;
    slot = next;
  }
  return null;
}

/** The loader's `unet_name` behind a model input. null when unconnected or not found. */
export function upstreamModelName(node, inputName) {
  return walkModelChain(node, inputName, (origin) => {
    const unet = origin.widgets?.find((w) => w?.name === "unet_name");
    if (unet) return typeof unet.value === "string" && unet.value ? unet.value : null;
    return undefined;
  });
}

/**
 * The shift a ModelSampling* node (ModelSamplingSD3, ...) puts on the MODEL behind an input, the
 * nearest one winning as in ComfyUI (each patch replaces the last); null when there is none.
 */
export function upstreamShift(node, inputName) {
  return walkModelChain(node, inputName, (origin) => {
    const kind = String(origin.comfyClass ?? origin.type ?? "");
    if (origin.widgets?.some((w) => w?.name === "unet_name")) return null; // reached the loader
    if (!kind.startsWith("ModelSampling")) return undefined;
    const shift = widgetValue(origin, "shift");
    return typeof shift === "number" ? shift : undefined;
  });
}

/**
 * What Wan22DuoModelSampler's shift resolves to (nodes/comfy_model.py resolve_shift): a positive
 * widget value as is; -1: the experts' ModelSampling* shift (they must agree), else the official one.
 * Returns {shift, source} or {error}.
 */
export function resolveShift(widgetShift, variant, highShift, lowShift) {
  if (widgetShift > 0) return { shift: widgetShift, source: "sampler" };
  const carried = [highShift, lowShift].filter((s) => typeof s === "number");
  if (carried.length === 2 && carried[0] !== carried[1]) {
    return { error: `the experts carry different ModelSamplingSD3 shifts (${carried[0]} and ${carried[1]}); ` +
      "give both the same shift or set the sampler's shift" };
  }
  if (carried.length) return { shift: carried[0], source: "ModelSamplingSD3" };
  return { shift: OFFICIAL_SHIFT[variant ?? "t2v_a14b"], source: "official" };
}

/** planSwitch's inputs from the sampler node; `variant` from the model behind high_noise_model. */
export function samplerInputs(node, variant) {
  const lowSlot = inputIndex(node, "low_noise_model");
  return {
    scheduler: widgetValue(node, "scheduler"),
    steps: widgetValue(node, "steps"),
    shift: widgetValue(node, "shift"),
    boundary: widgetValue(node, "boundary"),
    switchStep: widgetValue(node, "switch_step"),
    variant: variant ?? null,
    hasLow: lowSlot >= 0 ? node.inputs[lowSlot]?.link != null : null,
  };
}

/**
 * The run's report, ui {"wan22duo_switch": [{switch_step, steps, boundary, sigmas, timesteps}]}, or null.
 * A run with a step cache adds `reused` (the 0-based steps that reused the cache); one with leading
 * phases adds `stages` ([{role, start, stop}], "lead1".., "high", "low").
 */
export function parseReport(message) {
  const report = message?.wan22duo_switch?.[0];
  if (!report || !Number.isInteger(report.switch_step) || !Number.isInteger(report.steps)) return null;
  const out = {
    switch_step: report.switch_step,
    steps: report.steps,
    boundary: typeof report.boundary === "number" ? report.boundary : null,
    sigmas: Array.isArray(report.sigmas) ? report.sigmas : [],
    timesteps: Array.isArray(report.timesteps) ? report.timesteps : [],
  };
  const reused = report.cache?.reused;
  if (Array.isArray(reused)) out.reused = reused.filter((i) => Number.isInteger(i));
  if (Array.isArray(report.stages)) {
    out.stages = report.stages
      .filter((s) => s && Number.isInteger(s.start) && Number.isInteger(s.stop))
      .map((s) => ({ role: String(s.role ?? ""), start: s.start, stop: s.stop }));
  }
  return out;
}
