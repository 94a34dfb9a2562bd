// Wan 2.2 Duo: reading the sampler node and its neighbours in the LiteGraph graph, and the run's
// report. Duck-typed on the node objects (widgets, inputs, getInputNode), no ComfyUI imports, so
// node tests can drive it with plain objects. Auto-loaded by ComfyUI: no side effects.

export const MODEL_SOCKET = "WAN22DUO_MODEL";
export const WATCHED = Object.freeze(["steps", "shift", "boundary", "switch_step", "scheduler"]);
const MAX_HOPS = 16; // LoRA loaders, reroutes... between the sampler and the file loader

export function widgetValue(node, name) {
  return node?.widgets?.find((w) => w?.name === name)?.value;
}

export function inputIndex(node, name) {
  return node?.inputs?.findIndex((input) => input?.name === name) ?? -1;
}

/**
 * The loader's `unet_name` behind a model input, following pass-through nodes (a LoRA loader's
 * WAN22DUO_MODEL input, a one-input reroute). null when unconnected or not found.
 */
export function upstreamModelName(node, inputName) {
  const seen = new Set();
  let current = node;
  let slot = inputIndex(node, inputName);
  for (let hop = 0; hop < MAX_HOPS && slot >= 0; hop++) {
    if (current.inputs?.[slot]?.link == null) return null;
    const origin = current.getInputNode?.(slot);
    if (!origin || seen.has(origin.id)) return null;
    seen.add(origin.id);
    const unet = origin.widgets?.find((w) => w?.name === "unet_name");
    if (unet) return typeof unet.value === "string" && unet.value ? unet.value : null;
    const inputs = origin.inputs ?? [];
    let next = inputs.findIndex((input) => input?.type === MODEL_SOCKET && input.link != null);
    if (next < 0 && inputs.length === 1) next = 0; // a plain reroute
    current = origin;
    slot = next;
  }
  return null;
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

/** The run's report, ui {"wan22duo_switch": [{switch_step, steps, boundary, sigmas, timesteps}]}, or null. */
export function parseReport(message) {
  const report = message?.wan22duo_switch?.[0];
  if (!report || !Number.isInteger(report.switch_step) || !Number.isInteger(report.steps)) return null;
  return {
    switch_step: report.switch_step,
    steps: report.steps,
    boundary: typeof report.boundary === "number" ? report.boundary : null,
    sigmas: Array.isArray(report.sigmas) ? report.sigmas : [],
    timesteps: Array.isArray(report.timesteps) ? report.timesteps : [],
  };
}
