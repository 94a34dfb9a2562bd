// Wan 2.2 Duo: on every Wan22DuoSampler and Wan22DuoModelSampler node, a plot of where the experts switch.
//
// A canvas widget under the node's inputs draws the sigma curve over the steps, colored by expert,
// the boundary, the switch step and a caption ("high-noise steps 1–26, low-noise 27–40"). It is
// recomputed from the widget values whenever the canvas redraws (so it follows steps, shift,
// boundary, switch_step and scheduler live) and from the model file behind high_noise_model
// (asked of GET /wan22duo/model_info, with a file-name fallback). After a run it also shows the
// switch step the Python side reported (ui "wan22duo_switch").
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import {
  MODEL_SOCKETS, WATCHED, parseReport, resolveShift, samplerInputs, upstreamModelName, upstreamShift,
} from "./wan22duo_graph.js";
import { LABELS, createModelInfoClient } from "./wan22duo_model_info.js";
import { PLOT_HEIGHT, drawSwitchPlot, plotBox } from "./wan22duo_plot_draw.js";
import { FALLBACK_VARIANT, planSwitch } from "./wan22duo_switch_plan.js";

const NODE_CLASSES = new Set(["Wan22DuoSampler", "Wan22DuoModelSampler"]);
const MODEL_SAMPLER = "Wan22DuoModelSampler"; // ComfyUI MODEL inputs: shift -1 = from the MODEL
const WIDGET_NAME = "wan22duo_switch_plot";

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

function currentView(node, lowQuality) {
  const info = modelInfo.get(upstreamModelName(node, "high_noise_model"));
  const inputs = samplerInputs(node, info?.variant);
  let shiftError = null;
  let shift = { value: inputs.shift, source: "sampler" };
  if ((node.comfyClass ?? node.type) === MODEL_SAMPLER) {
    const resolved = resolveShift(inputs.shift, inputs.variant, upstreamShift(node, "high_noise_model"),
      upstreamShift(node, "low_noise_model"));
    if (resolved.error) shiftError = resolved.error;
    else {
      inputs.shift = resolved.shift;
      shift = { value: resolved.shift, source: resolved.source, label: LABELS[inputs.variant ?? FALLBACK_VARIANT] };
    }
  }
  const key = JSON.stringify([inputs, shiftError]);
  const cache = node.__wan22duoPlan;
  const plan = cache?.key === key ? cache.plan : shiftError ? { error: shiftError } : planSwitch(inputs);
  node.__wan22duoPlan = { key, plan };
  return { plan, reported: node.__wan22duoRun ?? null, lowQuality, shift };
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
    draw(ctx, _node, width, y, given, lowQuality) {
      try {
        // Nodes 2.0 draws the widget on a canvas of its own and passes its height; the classic
        // canvas passes a row height, and there the plot fills the node down to its bottom edge.
        const ownCanvas = !!ctx?.canvas && ctx.canvas !== app.canvas?.canvas;
        const last = node.widgets?.[node.widgets.length - 1] === this;
        const box = plotBox({ ownCanvas, given, nodeHeight: node.size?.[1], top: y, isLastWidget: last, width });
        drawSwitchPlot(ctx, box, currentView(node, !!lowQuality), theme());
      } catch (err) {
        if (!warned) console.warn("[wan22duo] switch plot could not draw:", err);
        warned = true;
      }
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
  const made = makePlotWidget(node);
  const widget = node.addCustomWidget(made) ?? made;
  plots.add(widget);
  // In Vue-node mode the widget draws on request: ask again when a watched value changes.
  for (const name of WATCHED) {
    const watched = node.widgets?.find((w) => w.name === name);
    if (watched) chain(watched, "callback", () => widget.triggerDraw?.());
  }
  fitSize(node);
}

function isModelLoader(nodeData) {
  const outputs = Array.isArray(nodeData?.output) ? nodeData.output : [];
  return outputs.some((o) => MODEL_SOCKETS.includes(o)) && nodeData?.input?.required?.unet_name !== undefined;
}

app.registerExtension({
  name: "wan22duo.SwitchPlot",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (String(nodeData?.name ?? "").startsWith("ModelSampling")) {
      // Its shift feeds Wan22DuoModelSampler's plot when the sampler's shift is -1.
      chain(nodeType.prototype, "onNodeCreated", function () {
        const shift = this.widgets?.find((w) => w.name === "shift");
        if (shift) chain(shift, "callback", redrawAll);
      });
      return;
    }
    if (isModelLoader(nodeData)) {
      // Vue-node mode redraws only on request: a new file on a loader must ask for it.
      chain(nodeType.prototype, "onNodeCreated", function () {
        const unet = this.widgets?.find((w) => w.name === "unet_name");
        if (unet) chain(unet, "callback", redrawAll);
      });
      return;
    }
    if (!NODE_CLASSES.has(nodeData?.name)) return;
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
