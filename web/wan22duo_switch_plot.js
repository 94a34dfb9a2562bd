// Wan 2.2 Duo: on every Wan22DuoSampler node, a plot of where the experts switch.
//
// A canvas widget under the node's inputs draws the sigma curve over the steps, colored by expert,
// the boundary, the switch step and a caption ("high-noise steps 1–26, low-noise 27–40"). It is
// recomputed from the widget values whenever the canvas redraws (so it follows steps, shift,
// boundary, switch_step and scheduler live) and from the model file behind high_noise_model
// (asked of GET /wan22duo/model_info, with a file-name fallback). After a run it also shows the
// switch step the Python side reported (ui "wan22duo_switch").
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import { createModelInfoClient } from "./wan22duo_model_info.js";
import { PLOT_HEIGHT, drawSwitchPlot } from "./wan22duo_plot_draw.js";
import { planSwitch } from "./wan22duo_switch_plan.js";

const NODE_CLASS = "Wan22DuoSampler";
const WIDGET_NAME = "wan22duo_switch_plot";
const WATCHED = ["steps", "shift", "boundary", "switch_step", "scheduler"];
const MODEL_SOCKET = "WAN22DUO_MODEL";
const MAX_HOPS = 16; // LoRA loaders, reroutes... between the sampler and the file loader

const plots = new Set(); // live plot widgets, to redraw when a model answer arrives

function redrawAll() {
  try {
    app.graph?.setDirtyCanvas?.(true, false);
    for (const widget of plots) widget.triggerDraw?.(); // Vue-node mode draws on request only
  } catch {
    // redrawing is best effort
  }
}

async function fetchJson(url) {
  const response = await api.fetchApi(url);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, body };
}

const modelInfo = createModelInfoClient(fetchJson, redrawAll);

function widgetValue(node, name) {
  return node.widgets?.find((w) => w.name === name)?.value;
}

function inputIndex(node, name) {
  return node.inputs?.findIndex((input) => input?.name === name) ?? -1;
}

/** The loader's unet_name behind a model input, following pass-through nodes (LoRA, reroute). */
export function upstreamModelName(node, inputName) {
  const seen = new Set();
  let current = node;
  let slot = inputIndex(node, inputName);
  for (let hop = 0; hop < MAX_HOPS && slot >= 0; hop++) {
    if (current.inputs?.[slot]?.link == null) return null;
    const origin = current.getInputNode?.(slot);
    if (!origin || seen.has(origin.id)) return null;
    seen.add(origin.id);
    const unet = origin.widgets?.find((w) => w.name === "unet_name");
    if (unet) return typeof unet.value === "string" ? unet.value : null;
    const inputs = origin.inputs ?? [];
    let next = inputs.findIndex((input) => input?.type === MODEL_SOCKET && input.link != null);
    if (next < 0 && inputs.length === 1) next = 0; // a plain reroute
    current = origin;
    slot = next;
  }
  return null;
}

function currentView(node, lowQuality) {
  const modelName = upstreamModelName(node, "high_noise_model");
  const info = modelInfo.get(modelName);
  const lowSlot = inputIndex(node, "low_noise_model");
  const inputs = {
    scheduler: widgetValue(node, "scheduler"),
    steps: widgetValue(node, "steps"),
    shift: widgetValue(node, "shift"),
    boundary: widgetValue(node, "boundary"),
    switchStep: widgetValue(node, "switch_step"),
    variant: info?.variant ?? null,
    hasLow: lowSlot >= 0 ? node.inputs[lowSlot].link != null : null,
  };
  const key = JSON.stringify(inputs);
  const cache = node.__wan22duoPlan;
  const plan = cache?.key === key ? cache.plan : planSwitch(inputs);
  node.__wan22duoPlan = { key, plan };
  return { plan, reported: node.__wan22duoRun ?? null, lowQuality };
}

function theme() {
  const lg = globalThis.LiteGraph ?? {};
  return {
    background: lg.WIDGET_BGCOLOR ?? "#222",
    outline: lg.WIDGET_OUTLINE_COLOR ?? "#666",
    text: lg.WIDGET_TEXT_COLOR ?? "#ddd",
    dim: lg.WIDGET_SECONDARY_TEXT_COLOR ?? "#999",
  };
}

function makePlotWidget(node) {
  let warned = false;
  return {
    name: WIDGET_NAME,
    type: "wan22duo.switch_plot",
    value: null,
    serialize: false, // not part of widgets_values in saved workflows
    options: { serialize: false }, // not sent with the prompt
    computeSize(width) {
      return [width ?? node.size?.[0] ?? 0, PLOT_HEIGHT];
    },
    draw(ctx, _node, width, y, _height, lowQuality) {
      try {
        drawSwitchPlot(ctx, { x: 0, y, width, height: PLOT_HEIGHT }, currentView(node, !!lowQuality), theme());
      } catch (err) {
        if (!warned) console.warn("[wan22duo] switch plot could not draw:", err);
        warned = true;
      }
    },
    onRemove() {
      plots.delete(this);
    },
  };
}

function fitSize(node) {
  try {
    const min = node.computeSize?.();
    if (!min || !node.size) return;
    if (node.size[0] < min[0] || node.size[1] < min[1]) {
      node.setSize?.([Math.max(node.size[0], min[0]), Math.max(node.size[1], min[1])]);
    }
  } catch {
    // sizing is cosmetic
  }
}

function chain(object, method, extra) {
  const original = object[method];
  object[method] = function (...args) {
    const result = original?.apply(this, args);
    try {
      extra.apply(this, args);
    } catch (err) {
      console.warn(`[wan22duo] ${method} hook failed:`, err);
    }
    return result;
  };
}

function addPlot(node) {
  if (node.widgets?.some((w) => w.name === WIDGET_NAME)) return;
  const widget = node.addCustomWidget(makePlotWidget(node)) ?? makePlotWidget(node);
  plots.add(widget);
  // In Vue-node mode the widget draws on request: ask again when a watched value changes.
  for (const name of WATCHED) {
    const watched = node.widgets?.find((w) => w.name === name);
    if (watched) chain(watched, "callback", () => widget.triggerDraw?.());
  }
  fitSize(node);
}

/** Keep the run's report: ui {"wan22duo_switch": [{switch_step, steps, boundary, sigmas, timesteps}]}. */
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

app.registerExtension({
  name: "wan22duo.SwitchPlot",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_CLASS) return;
    chain(nodeType.prototype, "onNodeCreated", function () {
      addPlot(this);
    });
    chain(nodeType.prototype, "onConfigure", function () {
      fitSize(this); // workflows saved before this extension have a shorter node
    });
    chain(nodeType.prototype, "onExecuted", function (message) {
      this.__wan22duoRun = parseReport(message);
      redrawAll();
    });
    chain(nodeType.prototype, "onConnectionsChange", function () {
      redrawAll();
    });
    chain(nodeType.prototype, "onRemoved", function () {
      for (const widget of this.widgets ?? []) if (widget.name === WIDGET_NAME) plots.delete(widget);
    });
  },
});
